//! `Handler::init`: it gets the id and the payload, runs once before the
//! entry's first callback (a perform or a call), and runs again for an entry
//! that replaces another. Paused clock.

mod common;

use std::time::Duration;

use common::{Event, Log, Recorder};
use keywheel::{EntryOptions, Manager};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

/// Returns a recorder whose `init` appends `@id` to the payload.
fn tagging(log: &Log) -> Recorder {
    Recorder::new(log).init(|id, payload| format!("{payload}@{id}"))
}

/// Returns (ms, payload received) of every `init` of `id`.
fn inits(log: &Log, id: u64) -> Vec<(u64, String)> {
    log.of(id)
        .into_iter()
        .filter(|r| r.event == Event::Init)
        .map(|r| (common::whole_ms(r.at), r.payload))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn init_gets_id_before_first_perform() {
    let log = Log::new();
    let manager = Manager::builder(tagging(&log)).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();
    manager.put(2, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(350).await;
    for id in [1, 2] {
        let seen = inits(&log, id);
        assert_eq!(
            seen,
            vec![(100, "p".to_string())],
            "entry {id}: init runs once, just before the first perform"
        );
        let performs = log.performs(id);
        let tagged = format!("p@{id}");
        let expected: Vec<(u64, String)> = [100, 200, 300]
            .into_iter()
            .map(|at| (at, tagged.clone()))
            .collect();
        assert_eq!(
            performs, expected,
            "entry {id}: every perform gets the payload init made from the id"
        );
    }
}

/// An entry that never performs runs `init` before its first call.
#[tokio::test(start_paused = true)]
async fn init_runs_before_first_call() {
    let log = Log::new();
    let manager = Manager::builder(tagging(&log)).build().unwrap();
    manager
        .put(7, "p".into(), EntryOptions::never())
        .await
        .unwrap();

    let first = manager.call(&7, ()).await;
    assert_eq!(
        first,
        Ok("p@7".to_string()),
        "the first call sees init's payload"
    );
    manager.cast(&7, "x".into()).await.unwrap();
    let second = manager.call(&7, ()).await;
    assert_eq!(
        second,
        Ok("p@7+x".to_string()),
        "later callbacks keep the payload; init does not run again"
    );
    let seen = inits(&log, 7);
    assert_eq!(seen, vec![(0, "p".to_string())], "inits of entry 7");
}

/// A put that replaces an entry starts a new entry, so `init` runs again,
/// on the new payload.
#[tokio::test(start_paused = true)]
async fn replacing_put_runs_init_again() {
    let log = Log::new();
    let manager = Manager::builder(tagging(&log)).build().unwrap();
    manager.put(1, "a".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    manager.put(1, "b".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(300).await;
    let seen = inits(&log, 1);
    assert_eq!(
        seen,
        vec![(100, "a".to_string()), (250, "b".to_string())],
        "init of the first entry and of the replacing one"
    );
    let performs = log.performs(1);
    assert_eq!(
        performs,
        vec![(100, "a@1".to_string()), (250, "b@1".to_string())],
        "performs (ms, payload received)"
    );
}
