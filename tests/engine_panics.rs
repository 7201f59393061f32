//! Panicking callbacks: each panic is caught, the panic policy decides the
//! entry's fate, and the store never keeps an entry that is not scheduled or
//! schedules one that cannot be found. Paused clock.

mod common;

use std::time::Duration;

use common::{Event, Log, Recorder, Step};
use keywheel::{EntryOptions, Error, Manager, PanicPolicy, TerminateReason};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

/// Returns a recorder whose perform of entry 1 marks its payload and panics.
fn panicking_perform(log: &Log) -> Recorder {
    Recorder::new(log).perform(|id, payload| {
        if id == 1 {
            payload.push('!');
            Step::panic("perform exploded")
        } else {
            Step::done()
        }
    })
}

#[tokio::test(start_paused = true)]
async fn panicking_perform_removes_entry_by_default() {
    let log = Log::new();
    let manager = Manager::builder(panicking_perform(&log)).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();
    manager.put(2, "q".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let snapshot = manager.get(&1).await.unwrap();
    assert!(
        snapshot.is_none(),
        "get of the panicked entry: {snapshot:?}"
    );
    let contains = manager.contains(&1).await.unwrap();
    assert!(!contains, "contains of the panicked entry");
    assert_eq!(manager.len(), 1, "len counts only the healthy entry");
    let call = manager.call(&1, ()).await;
    assert_eq!(
        call,
        Err(Error::NotFound { id: "1".into() }),
        "call to the panicked entry"
    );
    let del = manager.del(&1).await.unwrap();
    assert!(!del, "del of the panicked entry finds nothing");

    log.sleep_until_ms(550).await;
    let starts = log.perform_ms(1);
    assert_eq!(starts, vec![100], "the panicked entry never performs again");
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(
            TerminateReason::Panicked("perform exploded".into()),
            "p!".to_string()
        )],
        "terminate once, with the panic message and the payload the perform left"
    );
    let healthy = log.perform_ms(2);
    assert_eq!(
        healthy,
        vec![100, 200, 300, 400, 500],
        "the other entry keeps its cadence"
    );
}

#[tokio::test(start_paused = true)]
async fn panicking_call_returns_panicked() {
    let log = Log::new();
    let recorder = Recorder::new(&log).call(|_, _| Step::panic("call exploded"));
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();
    manager.put(2, "q".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(50).await;
    let call = manager.call(&1, ()).await;
    assert_eq!(
        call,
        Err(Error::Panicked {
            id: "1".into(),
            message: "call exploded".into(),
        }),
        "the caller gets the panic"
    );

    log.sleep_until_ms(350).await;
    let snapshot = manager.get(&1).await.unwrap();
    assert!(
        snapshot.is_none(),
        "under Remove the entry is gone: {snapshot:?}"
    );
    let starts = log.perform_ms(1);
    assert!(starts.is_empty(), "the removed entry performed: {starts:?}");
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(
            TerminateReason::Panicked("call exploded".into()),
            "p".to_string()
        )],
        "terminate after the panicking call"
    );
    let other = log.perform_ms(2);
    assert_eq!(other, vec![100, 200, 300], "other entries keep running");
}

#[tokio::test(start_paused = true)]
async fn resume_policy_keeps_entry() {
    let log = Log::new();
    let recorder = Recorder::new(&log)
        .perform(|_, payload| {
            payload.push('!');
            if payload.len() == 2 {
                Step::panic("first perform exploded")
            } else {
                Step::done()
            }
        })
        .call(|_, _| Step::panic("call exploded"));
    let manager = Manager::builder(recorder)
        .panic_policy(PanicPolicy::Resume)
        .build()
        .unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let call = manager.call(&1, ()).await;
    assert!(
        matches!(call, Err(Error::Panicked { .. })),
        "a panicking call under Resume still reports the panic: {call:?}"
    );

    log.sleep_until_ms(350).await;
    let performs = log.performs(1);
    let expected: Vec<(u64, String)> = [(100, "p"), (200, "p!"), (300, "p!!")]
        .into_iter()
        .map(|(at, payload)| (at, payload.to_string()))
        .collect();
    assert_eq!(
        performs, expected,
        "the entry continues with the payload as the panic left it"
    );
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(snapshot.payload, "p!!!", "payload after three performs");
    let terminates = log.terminates(1);
    assert!(
        terminates.is_empty(),
        "Resume ran terminate: {terminates:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn reinit_policy_runs_init_again() {
    let log = Log::new();
    let recorder = Recorder::new(&log)
        .init(|_, payload| format!("{payload}+init"))
        .perform(|_, payload| {
            payload.push('!');
            if payload.ends_with("init!") && !payload.contains('|') {
                payload.push('|');
                Step::panic("first perform exploded")
            } else {
                Step::done()
            }
        });
    let manager = Manager::builder(recorder)
        .panic_policy(PanicPolicy::Reinit)
        .build()
        .unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(350).await;
    let inits: Vec<(u64, String)> = log
        .of(1)
        .into_iter()
        .filter(|r| r.event == Event::Init)
        .map(|r| (common::whole_ms(r.at), r.payload))
        .collect();
    assert_eq!(
        inits,
        vec![(100, "p".to_string()), (200, "p+init!|".to_string())],
        "init before the first callback and again after the panic, on the payload the panic left"
    );
    let performs = log.performs(1);
    let expected: Vec<(u64, String)> = [
        (100, "p+init"),
        (200, "p+init!|+init"),
        (300, "p+init!|+init!"),
    ]
    .into_iter()
    .map(|(at, payload)| (at, payload.to_string()))
    .collect();
    assert_eq!(
        performs, expected,
        "performs see the re-initialized payload"
    );
    let terminates = log.terminates(1);
    assert!(
        terminates.is_empty(),
        "Reinit ran terminate: {terminates:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn restart_limit_removes_repeat_panicker() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::panic("always"));
    let manager = Manager::builder(recorder)
        .panic_policy(PanicPolicy::Resume)
        .restart_limit(2, Duration::from_secs(1))
        .build()
        .unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(1_000).await;
    let starts = log.perform_ms(1);
    assert_eq!(
        starts,
        vec![100, 200, 300],
        "the third panic within 1 s exceeds the limit of 2"
    );
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Panicked("always".into()), "p".to_string())],
        "terminate once when the limit removes the entry"
    );
    assert_eq!(manager.len(), 0, "len after the limit removed the entry");
}

/// Panics spaced wider than the window never add up to the limit.
#[tokio::test(start_paused = true)]
async fn restart_limit_counts_only_within_window() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::panic("always"));
    let manager = Manager::builder(recorder)
        .panic_policy(PanicPolicy::Resume)
        .restart_limit(2, Duration::from_millis(150))
        .build()
        .unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(1_050).await;
    let starts = log.perform_ms(1).len();
    assert_eq!(
        starts, 10,
        "at most 2 panics in any 150 ms: the entry stays"
    );
    let terminates = log.terminates(1);
    assert!(terminates.is_empty(), "terminates: {terminates:?}");
}

#[tokio::test(start_paused = true)]
async fn panicking_init_removes_entry_by_default() {
    let log = Log::new();
    let recorder = Recorder::new(&log).init(|_, _| panic!("init exploded"));
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(350).await;
    let starts = log.perform_ms(1);
    assert!(
        starts.is_empty(),
        "perform ran after init panicked: {starts:?}"
    );
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(
            TerminateReason::Panicked("init exploded".into()),
            "p".to_string()
        )],
        "terminate once, with the payload from before init"
    );
    assert_eq!(manager.len(), 0, "len after init panicked");
}

/// A panic in `terminate` is caught. The entry is removed anyway, and the
/// only worker of the pool keeps serving other entries.
#[tokio::test(start_paused = true)]
async fn panicking_terminate_still_removes() {
    let log = Log::new();
    let recorder = Recorder::new(&log).terminate_panics();
    let manager = Manager::builder(recorder).workers(1).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();
    manager.put(2, "q".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let existed = manager.del(&1).await.unwrap();
    assert!(existed, "del of entry 1");
    let replaced = manager.put(2, "r".into(), every_ms(100)).await;
    assert!(replaced.is_ok(), "put replacing entry 2: {replaced:?}");

    log.sleep_until_ms(400).await;
    let snapshot = manager.get(&1).await.unwrap();
    assert!(snapshot.is_none(), "entry 1 after del: {snapshot:?}");
    assert_eq!(manager.len(), 1, "len after del");
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Deleted, "p".to_string())],
        "terminate ran once before it panicked"
    );
    let starts = log.perform_ms(1);
    assert_eq!(starts, vec![100], "no perform after del");

    let survivor = log.performs(2);
    let expected: Vec<(u64, String)> = [(100, "q"), (250, "r"), (350, "r")]
        .into_iter()
        .map(|(at, payload)| (at, payload.to_string()))
        .collect();
    assert_eq!(
        survivor, expected,
        "the worker keeps running after the panic"
    );
    let reply = manager.call(&2, ()).await;
    assert_eq!(reply, Ok("r".to_string()), "calls still work");
}
