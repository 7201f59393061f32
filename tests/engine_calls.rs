//! Calls, casts and gets: serialized with the entry's perform, FIFO per id,
//! and bounded by their deadline. Paused clock, so waits are exact.

mod common;

use std::time::Duration;

use common::{Event, Log, Recorder, Step};
use keywheel::{EntryOptions, Error, Interval, Manager, OutcomeKind};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

/// Returns a recorder whose perform takes 200 ms and leaves the payload "after".
fn slow_perform(log: &Log) -> Recorder {
    Recorder::new(log).perform(|_, payload| {
        *payload = "after".to_string();
        Step::sleep(Duration::from_millis(200))
    })
}

#[tokio::test(start_paused = true)]
async fn call_waits_behind_slow_perform() {
    let log = Log::new();
    let manager = Manager::builder(slow_perform(&log)).build().unwrap();
    manager
        .put(1, "before".into(), every_ms(100))
        .await
        .unwrap();

    log.sleep_until_ms(150).await;
    let reply = manager.call(&1, ()).await;
    assert_eq!(
        reply,
        Ok("after".to_string()),
        "the call sees the payload the perform left"
    );
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(300),
        "the call is answered when the perform ends at 300 ms"
    );

    let calls = log.times_ms(1, |e| *e == Event::Call);
    assert_eq!(calls, vec![300], "the call starts when the perform ends");
    assert_eq!(log.max_concurrent(1), 1, "callbacks of one id overlapped");
}

#[tokio::test(start_paused = true)]
async fn casts_and_call_run_in_order() {
    let log = Log::new();
    let manager = Manager::builder(slow_perform(&log)).build().unwrap();
    manager
        .put(1, "before".into(), every_ms(100))
        .await
        .unwrap();
    manager
        .put(2, "idle".into(), EntryOptions::never())
        .await
        .unwrap();

    // Entry 2 is idle: the casts run at once, in order, before the call.
    manager.cast(&2, "x".into()).await.unwrap();
    manager.cast(&2, "y".into()).await.unwrap();
    let reply = manager.call(&2, ()).await;
    assert_eq!(
        reply,
        Ok("idle+x+y".to_string()),
        "idle entry: both casts, in order"
    );

    // Entry 1 is busy from 100 to 300 ms: the casts and the call wait.
    log.sleep_until_ms(150).await;
    manager.cast(&1, "x".into()).await.unwrap();
    manager.cast(&1, "y".into()).await.unwrap();
    let reply = manager.call(&1, ()).await;
    assert_eq!(
        reply,
        Ok("after+x+y".to_string()),
        "busy entry: the perform, then both casts, then the call"
    );

    let order: Vec<Event> = log
        .of(1)
        .into_iter()
        .map(|r| r.event)
        .filter(|e| !matches!(e, Event::Init))
        .collect();
    assert_eq!(
        order,
        vec![
            Event::Perform,
            Event::PerformEnd,
            Event::Cast("x".into()),
            Event::CastEnd,
            Event::Cast("y".into()),
            Event::CastEnd,
            Event::Call,
            Event::CallEnd,
        ],
        "callbacks of entry 1 in order"
    );
}

#[tokio::test(start_paused = true)]
async fn call_to_missing_id_is_not_found() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();

    let call = manager.call(&42, ()).await;
    assert_eq!(
        call,
        Err(Error::NotFound { id: "42".into() }),
        "call to an id never put"
    );
    let cast = manager.cast(&42, "m".into()).await;
    assert_eq!(
        cast,
        Err(Error::NotFound { id: "42".into() }),
        "cast to an id never put"
    );
    let get = manager.get(&42).await;
    assert_eq!(get, Ok(None), "get of an id never put");
}

/// A call whose deadline passes while it waits behind a perform times out.
/// The handler never runs it, not even after the perform ends.
#[tokio::test(start_paused = true)]
async fn call_timeout_behind_long_perform_never_runs() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, payload| {
        payload.push('!');
        Step::sleep(Duration::from_millis(500))
    });
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let call = manager
        .call_timeout(&1, (), Duration::from_millis(50))
        .await;
    assert_eq!(
        call,
        Err(Error::Timeout {
            id: "1".into(),
            waited: Duration::from_millis(50),
        }),
        "call behind a 500 ms perform with a 50 ms deadline"
    );
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(200),
        "the caller gets Timeout at its deadline"
    );

    log.sleep_until_ms(700).await;
    let calls = log.count(1, |e| *e == Event::Call);
    assert_eq!(calls, 0, "the timed-out call ran after the perform");

    let reply = manager.call(&1, ()).await;
    assert_eq!(
        reply,
        Ok("p!".to_string()),
        "a later call runs and sees the payload"
    );
}

#[tokio::test(start_paused = true)]
async fn get_waits_for_in_flight_perform() {
    let log = Log::new();
    let manager = Manager::builder(slow_perform(&log)).build().unwrap();
    manager
        .put(1, "before".into(), every_ms(100))
        .await
        .unwrap();

    log.sleep_until_ms(150).await;
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(300),
        "get returns when the perform ends"
    );
    assert_eq!(snapshot.payload, "after", "payload after the perform");
    assert_eq!(snapshot.performs, 1, "performs counted");
    assert_eq!(
        snapshot.last_outcome,
        Some(OutcomeKind::Continue),
        "last outcome"
    );
    assert_eq!(
        snapshot.interval,
        Interval::Every(Duration::from_millis(100)),
        "interval"
    );
    assert_eq!(
        snapshot.next_due,
        Some(log.at_ms(400)),
        "fixed delay: next due is the perform's end plus the interval"
    );
}

#[tokio::test(start_paused = true)]
async fn get_times_out_behind_long_perform() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_secs(10)));
    let manager = Manager::builder(recorder)
        .call_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let get = manager.get(&1).await;
    assert!(
        matches!(get, Err(Error::Timeout { .. })),
        "get behind a 10 s perform with a 100 ms call timeout: {get:?}"
    );
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(250),
        "get gives up at the call timeout"
    );
}

/// A `Reschedule` returned by a call moves the next perform to now plus the
/// new interval.
#[tokio::test(start_paused = true)]
async fn call_reschedule_rearms_from_now() {
    let log = Log::new();
    let recorder = Recorder::new(&log)
        .call(|_, _| Step::then(keywheel::Outcome::Reschedule(Duration::from_millis(30))));
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(50).await;
    manager.call(&1, ()).await.unwrap();

    log.sleep_until_ms(150).await;
    let starts = log.perform_ms(1);
    assert_eq!(
        starts,
        vec![80, 110, 140],
        "performs every 30 ms from the call at 50 ms"
    );
}

/// A `Reschedule` returned by a call on an entry with no schedule
/// (`Interval::Never`) makes it periodic from the call on.
#[tokio::test(start_paused = true)]
async fn call_reschedule_schedules_never_entry() {
    let log = Log::new();
    let recorder = Recorder::new(&log)
        .call(|_, _| Step::then(keywheel::Outcome::Reschedule(Duration::from_millis(40))));
    let manager = Manager::builder(recorder).build().unwrap();
    manager
        .put(1, "p".into(), EntryOptions::never())
        .await
        .unwrap();

    log.sleep_until_ms(50).await;
    assert!(
        log.perform_ms(1).is_empty(),
        "a Never entry has not performed"
    );
    manager.call(&1, ()).await.unwrap();

    log.sleep_until_ms(175).await;
    assert_eq!(
        log.perform_ms(1),
        vec![90, 130, 170],
        "performs every 40 ms from the call at 50 ms"
    );
}

/// A call handed to the pool waits there while the only worker runs another
/// entry's long perform. Deleting its entry meanwhile means the call never
/// runs: the caller gets `NotFound` once a worker reaches the job.
#[tokio::test(start_paused = true)]
async fn queued_call_of_deleted_entry_never_runs() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(500)));
    let manager = Manager::builder(recorder).workers(1).build().unwrap();
    let busy = every_ms(10_000).first_run(keywheel::FirstRun::Immediately);
    manager.put(1, "busy".into(), busy).await.unwrap();
    manager
        .put(2, "idle".into(), EntryOptions::never())
        .await
        .unwrap();

    log.sleep_until_ms(10).await;
    let call = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.call(&2, ()).await })
    };
    common::settle().await;
    manager.cast(&2, "m".into()).await.unwrap();
    let existed = manager.del(&2).await.unwrap();
    assert!(existed, "del of entry 2");

    let reply = call.await.unwrap();
    assert_eq!(
        reply,
        Err(Error::NotFound { id: "2".into() }),
        "a call queued in the pool when its entry was deleted"
    );
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(500),
        "the reply comes when the worker reaches the job"
    );

    log.sleep_until_ms(600).await;
    let ran: Vec<Event> = log
        .of(2)
        .into_iter()
        .map(|r| r.event)
        .filter(|e| matches!(e, Event::Call | Event::Cast(_)))
        .collect();
    assert!(
        ran.is_empty(),
        "callbacks of the deleted entry ran: {ran:?}"
    );
    let terminates = log.terminates(2);
    assert_eq!(
        terminates,
        vec![(keywheel::TerminateReason::Deleted, "idle".to_string())],
        "terminate of the deleted entry"
    );
}
