//! Start and stop of a manager: initial entries, `ready()`, and the states
//! `Starting`, `Ready`, `Draining` and `Stopped`. Paused clock.

mod common;

use std::time::Duration;

use common::{Log, Recorder, Step};
use keywheel::{
    ConfigError, EntryOptions, Error, FirstRun, Manager, OptionsError, PutResult, State,
    TerminateReason,
};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

/// Ten initial entries at 100 ms: the manager is `Starting` until they are
/// loaded, `ready()` resolves without moving the clock, and each entry
/// performs once at 100 ms with its own payload.
#[tokio::test(start_paused = true)]
async fn initial_entries_load_then_ready() {
    let log = Log::new();
    let initial = (0..10).map(|id| (id, format!("p{id}"), every_ms(100)));
    let manager = Manager::builder(Recorder::new(&log))
        .initial_entries(initial)
        .build()
        .unwrap();

    assert_eq!(
        manager.state(),
        State::Starting,
        "state before the initial entries are loaded"
    );
    manager.ready().await;
    assert_eq!(manager.state(), State::Ready, "state after ready()");
    assert_eq!(log.elapsed(), Duration::ZERO, "ready() waited on the clock");
    assert_eq!(manager.len(), 10, "entries loaded at ready()");
    for id in 0..10 {
        let contains = manager.contains(&id).await.unwrap();
        assert!(contains, "initial entry {id} is stored");
    }

    log.sleep_until_ms(150).await;
    for id in 0..10 {
        let performs = log.performs(id);
        assert_eq!(
            performs,
            vec![(100, format!("p{id}"))],
            "performs (ms, payload) of initial entry {id} by 150 ms"
        );
    }

    manager.ready().await;
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(150),
        "a later ready() returns at once"
    );
}

/// Initial entries are applied with `put_new` semantics: a put made while
/// the manager is still starting wins over the initial entry with the same
/// id, and of two initial entries with one id the first wins.
#[tokio::test(start_paused = true)]
async fn initial_entries_never_replace() {
    let log = Log::new();
    let initial = vec![
        (3, "initial".to_string(), every_ms(100)),
        (5, "first".to_string(), every_ms(100)),
        (5, "second".to_string(), every_ms(100)),
    ];
    let manager = Manager::builder(Recorder::new(&log))
        .initial_entries(initial)
        .build()
        .unwrap();

    let result = manager.put(3, "user".into(), every_ms(100)).await.unwrap();
    assert_eq!(
        result,
        PutResult::Inserted,
        "a put before the initial load reaches the shard"
    );
    manager.ready().await;

    let user = manager.get(&3).await.unwrap().expect("entry 3 exists");
    assert_eq!(
        user.payload, "user",
        "the initial entry did not replace the put"
    );
    let duplicate = manager.get(&5).await.unwrap().expect("entry 5 exists");
    assert_eq!(
        duplicate.payload, "first",
        "of two initial entries with one id, the first is kept"
    );
    assert_eq!(manager.len(), 2, "entries after the initial load");

    log.sleep_until_ms(150).await;
    for id in [3, 5] {
        let terminates = log.terminates(id);
        assert!(
            terminates.is_empty(),
            "loading initial entries ran terminate for entry {id}: {terminates:?}"
        );
    }
}

/// `ready()` waits for every initial entry, even when a shard receives them
/// in several bulk slices.
#[tokio::test(start_paused = true)]
async fn large_initial_load_complete_at_ready() {
    const ENTRIES: u64 = 40_000;
    let log = Log::new();
    let options = EntryOptions::every(Duration::from_secs(60));
    let initial = (0..ENTRIES).map(|id| (id, String::new(), options));
    let manager = Manager::builder(Recorder::new(&log))
        .shards(1)
        .initial_entries(initial)
        .build()
        .unwrap();

    manager.ready().await;
    assert_eq!(
        manager.len(),
        ENTRIES as usize,
        "entries stored when ready() resolves"
    );
    let last = manager.contains(&(ENTRIES - 1)).await.unwrap();
    assert!(last, "the last initial entry is stored");
}

#[tokio::test(start_paused = true)]
async fn invalid_initial_entry_fails_build() {
    let log = Log::new();
    let initial = vec![
        (1, "ok".to_string(), every_ms(100)),
        (7, "bad".to_string(), EntryOptions::every(Duration::ZERO)),
    ];
    let built = Manager::builder(Recorder::new(&log))
        .initial_entries(initial)
        .build();
    let error = built.err().expect("an initial entry with a zero interval");
    assert_eq!(
        error,
        ConfigError::InitialEntry {
            id: "7".into(),
            error: OptionsError::ZeroInterval,
        },
        "the error names the entry and the rule"
    );
    let message = error.to_string();
    assert!(
        message.contains("initial entry 7") && message.contains("at least 1 ms"),
        "message: {message}"
    );
}

/// `shutdown` moves the state to `Draining` while a perform finishes, and
/// to `Stopped` at the end; operations during the drain are rejected.
#[tokio::test(start_paused = true)]
async fn state_drains_then_stops() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(500)));
    let manager = Manager::builder(recorder).build().unwrap();
    manager.ready().await;
    assert_eq!(
        manager.state(),
        State::Ready,
        "state with no initial entries"
    );

    let options = EntryOptions::every(Duration::from_secs(10)).first_run(FirstRun::Immediately);
    manager.put(1, "p".into(), options).await.unwrap();
    log.sleep_until_ms(100).await;

    let stopping = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.shutdown(Duration::from_secs(1)).await })
    };
    common::settle().await;
    assert_eq!(
        manager.state(),
        State::Draining,
        "state while a perform finishes"
    );
    let put = manager.put(2, "q".into(), every_ms(100)).await;
    let error = put.expect_err("put while draining");
    assert_eq!(error.error, Error::ShuttingDown, "put while draining");
    let call = manager.call(&1, ()).await;
    assert_eq!(call, Err(Error::ShuttingDown), "call while draining");

    let report = stopping.await.unwrap();
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(500),
        "shutdown returns when the perform ends"
    );
    assert_eq!(manager.state(), State::Stopped, "state after shutdown");
    assert_eq!(report.completed, 1, "completed: {report:?}");
    manager.ready().await;
    assert_eq!(
        manager.state(),
        State::Stopped,
        "ready() after shutdown returns at once"
    );
}

/// With `terminate_on_shutdown(false)` a shutdown runs no `terminate`, while
/// a `del` before it still does.
#[tokio::test(start_paused = true)]
async fn shutdown_without_terminate_skips_it() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .terminate_on_shutdown(false)
        .build()
        .unwrap();
    manager
        .put_many((0..100).map(|id| (id, "p".to_string(), every_ms(100))))
        .await
        .unwrap();
    log.sleep_until_ms(150).await;
    let existed = manager.del(&0).await.unwrap();
    assert!(existed, "del of entry 0");

    let report = manager.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        report.terminated, 0,
        "terminates run by the shutdown: {report:?}"
    );
    assert_eq!(manager.state(), State::Stopped, "state after shutdown");
    assert_eq!(manager.len(), 0, "len after shutdown");

    let deleted = log.terminates(0);
    assert_eq!(
        deleted,
        vec![(TerminateReason::Deleted, "p".to_string())],
        "terminate of the deleted entry"
    );
    let farewells: Vec<u64> = (1..100)
        .filter(|&id| !log.terminates(id).is_empty())
        .collect();
    assert!(
        farewells.is_empty(),
        "entries terminated at shutdown: {farewells:?}"
    );
}
