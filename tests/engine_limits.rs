//! Durations at the edge of what the engine accepts: a first due time that
//! adds up past the maximum, and deadlines of `Duration::MAX` for calls.
//! None of them may panic. Paused clock.

mod common;

use std::time::Duration;

use common::{Log, Recorder};
use keywheel::{ConfigError, EntryOptions, FirstRun, Manager, MAX_INTERVAL};

/// A first run of `MAX_INTERVAL` plus a jitter of `MAX_INTERVAL` is two
/// valid values whose sum is not: the first due time is capped at
/// `MAX_INTERVAL`, and the entry performs then.
#[tokio::test(start_paused = true)]
async fn first_run_plus_jitter_capped() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    let far = EntryOptions::every(Duration::from_secs(3600))
        .first_run(FirstRun::After(MAX_INTERVAL))
        .jitter(MAX_INTERVAL);
    let put = manager.put(1, "far".into(), far).await;
    assert!(
        put.is_ok(),
        "put with first run and jitter at the maximum: {put:?}"
    );
    let spread = EntryOptions::every(Duration::from_secs(3600))
        .first_run(FirstRun::Immediately)
        .jitter(MAX_INTERVAL);
    let put = manager.put(2, "spread".into(), spread).await;
    assert!(put.is_ok(), "put with a jitter at the maximum: {put:?}");

    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(
        snapshot.next_due,
        Some(log.start() + MAX_INTERVAL),
        "first due time of entry 1 is capped at MAX_INTERVAL"
    );
    let snapshot = manager.get(&2).await.unwrap().expect("entry 2 exists");
    let due = snapshot.next_due.expect("entry 2 has a due time");
    assert!(
        due < log.start() + MAX_INTERVAL,
        "entry 2 is due {:?} after the put, not within the jitter",
        due - log.start()
    );

    tokio::time::advance(MAX_INTERVAL - Duration::from_secs(1)).await;
    common::settle().await;
    let early = log.perform_ms(1);
    assert!(early.is_empty(), "entry 1 performed early: {early:?}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let starts = log.perform_times(1);
    assert_eq!(
        starts,
        vec![MAX_INTERVAL],
        "entry 1 performs once, at MAX_INTERVAL"
    );
}

/// `Duration::MAX` as a call's timeout means "no deadline": the call
/// returns its reply instead of overflowing the deadline's instant.
#[tokio::test(start_paused = true)]
async fn call_timeout_of_duration_max_answers() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    manager
        .put(1, "p".into(), EntryOptions::never())
        .await
        .unwrap();

    let reply = manager.call_timeout(&1, (), Duration::MAX).await;
    assert_eq!(
        reply,
        Ok("p".to_string()),
        "call with Duration::MAX as timeout"
    );
}

/// A builder call timeout of `Duration::MAX` is either rejected by `build`
/// or accepted, and then calls and gets work.
#[tokio::test(start_paused = true)]
async fn builder_call_timeout_max_never_panics() {
    let log = Log::new();
    let built = Manager::builder(Recorder::new(&log))
        .call_timeout(Duration::MAX)
        .build();
    let manager = match built {
        Err(ConfigError::OutOfRange { setting, .. }) => {
            assert_eq!(setting, "call_timeout", "the rejected setting");
            return;
        }
        Err(other) => panic!("unexpected error for call_timeout(Duration::MAX): {other}"),
        Ok(manager) => manager,
    };
    manager
        .put(1, "p".into(), EntryOptions::never())
        .await
        .unwrap();
    let reply = manager.call(&1, ()).await;
    assert_eq!(
        reply,
        Ok("p".to_string()),
        "call with the maximum call timeout"
    );
    let snapshot = manager.get(&1).await;
    assert!(
        matches!(&snapshot, Ok(Some(s)) if s.payload == "p"),
        "get with the maximum call timeout: {snapshot:?}"
    );
}
