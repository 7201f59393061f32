//! Calls and their outcomes: the reply reaches the caller whatever the
//! outcome, an immediate first perform runs before a call, and the
//! manager's call timeout bounds a call. Paused clock, except for the test
//! whose doc names a real runtime.

mod common;

use std::time::Duration;

use common::{Event, Log, Recorder, Step};
use keywheel::{EntryOptions, Error, FirstRun, Interval, Manager, Outcome, TerminateReason};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

/// A put with `FirstRun::Immediately` followed at once by a call: the
/// perform runs first, and the call replies the payload it left. This runs
/// on a real multi-thread runtime, where the timer wheel's 1 ms tick is real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_first_perform_precedes_call() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, payload| {
        payload.push_str("+performed");
        Step::done()
    });
    let manager = Manager::builder(recorder).build().unwrap();
    let options = EntryOptions::every(Duration::from_secs(5)).first_run(FirstRun::Immediately);

    for id in 0..50 {
        manager.put(id, "p".into(), options).await.unwrap();
        let reply = manager.call(&id, ()).await;
        assert_eq!(
            reply,
            Ok("p+performed".to_string()),
            "entry {id}: the call is served after the immediate perform"
        );
        let order: Vec<Event> = log
            .of(id)
            .into_iter()
            .map(|r| r.event)
            .filter(|e| matches!(e, Event::Perform | Event::Call))
            .collect();
        assert_eq!(
            order,
            vec![Event::Perform, Event::Call],
            "callbacks of entry {id} in order"
        );
    }
    manager.shutdown(Duration::from_secs(1)).await;
}

/// The reply of a call reaches the caller whatever outcome the call
/// returns, and then the outcome applies. Continue keeps the schedule,
/// Reschedule re-arms from the call, Halt removes the entry with one
/// terminate, and Move hands the payload to the new id.
#[tokio::test(start_paused = true)]
async fn call_reply_survives_every_outcome() {
    let log = Log::new();
    let recorder = Recorder::new(&log).call(|id, payload| {
        *payload = format!("reply-{id}");
        let outcome = match id {
            2 => Outcome::Reschedule(Duration::from_millis(30)),
            3 => Outcome::Halt,
            4 => Outcome::Move(40),
            _ => Outcome::Continue,
        };
        Step::then(outcome)
    });
    let manager = Manager::builder(recorder).build().unwrap();
    for id in 1..=4 {
        manager.put(id, "p".into(), every_ms(100)).await.unwrap();
    }

    log.sleep_until_ms(50).await;
    for id in 1..=4 {
        let reply = manager.call(&id, ()).await;
        assert_eq!(
            reply,
            Ok(format!("reply-{id}")),
            "reply of the call to {id}"
        );
    }

    log.sleep_until_ms(250).await;
    let continued = log.perform_ms(1);
    assert_eq!(continued, vec![100, 200], "Continue keeps the schedule");
    let rescheduled = log.perform_ms(2);
    assert_eq!(
        rescheduled,
        vec![80, 110, 140, 170, 200, 230],
        "Reschedule(30 ms) from the call at 50 ms"
    );
    let snapshot = manager.get(&2).await.unwrap().expect("entry 2 exists");
    assert_eq!(
        snapshot.interval,
        Interval::Every(Duration::from_millis(30)),
        "interval after the rescheduling call"
    );

    let halted = manager.get(&3).await.unwrap();
    assert!(halted.is_none(), "a call that halts removes the entry");
    let halted_performs = log.perform_ms(3);
    assert!(
        halted_performs.is_empty(),
        "the halted entry performed: {halted_performs:?}"
    );
    let terminates = log.terminates(3);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Halted, "reply-3".to_string())],
        "one terminate after the halting call, with the payload it left"
    );

    let source = manager.get(&4).await.unwrap();
    assert!(source.is_none(), "the moved id is gone");
    let moved = manager.get(&40).await.unwrap().expect("entry 40 exists");
    assert_eq!(moved.payload, "reply-4", "payload under the new id");
    let terminates = log.terminates(4);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Moved, "reply-4".to_string())],
        "one terminate of the moved id"
    );
    assert_eq!(manager.len(), 3, "entries 1, 2 and 40 remain");
}

/// The manager's call timeout bounds a plain `call` that waits behind a
/// long perform: the caller gets `Timeout` at the deadline, and the call
/// never runs later.
#[tokio::test(start_paused = true)]
async fn builder_call_timeout_bounds_call() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_secs(10)));
    let manager = Manager::builder(recorder)
        .call_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let call = manager.call(&1, ()).await;
    assert_eq!(
        call,
        Err(Error::Timeout {
            id: "1".into(),
            waited: Duration::from_millis(100),
        }),
        "call behind a 10 s perform with a 100 ms call timeout"
    );
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(250),
        "the caller gets Timeout at its deadline"
    );

    log.sleep_until_ms(10_200).await;
    let calls = log.count(1, |e| *e == Event::Call);
    assert_eq!(calls, 0, "the timed-out call ran after the perform");
}
