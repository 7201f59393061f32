//! Bulk operations: `put_many` counts what it inserted and replaced, and
//! `del_many` removes entries with the guarantees of `del`. Paused clock.

mod common;

use std::time::Duration;

use common::{Event, Log, Recorder, Step};
use keywheel::{BulkPut, EntryOptions, Manager, TerminateReason};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

#[tokio::test(start_paused = true)]
async fn put_many_counts_and_replaces() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    manager.put(1, "old".into(), every_ms(100)).await.unwrap();

    let report = manager
        .put_many((0..10).map(|id| (id, format!("new-{id}"), every_ms(100))))
        .await
        .unwrap();
    assert_eq!(
        report,
        BulkPut {
            inserted: 9,
            replaced: 1,
        },
        "put_many of 10 ids, one of them stored before"
    );
    assert_eq!(manager.len(), 10, "entries after put_many");

    log.sleep_until_ms(150).await;
    let replaced = log.terminates(1);
    assert_eq!(
        replaced,
        vec![(TerminateReason::Replaced, "old".to_string())],
        "terminate of the replaced entry"
    );
    for id in 0..10 {
        let performs = log.performs(id);
        assert_eq!(
            performs,
            vec![(100, format!("new-{id}"))],
            "performs (ms, payload) of entry {id}"
        );
    }
}

/// `del_many` at the moment 100 entries fall due on a pool of 2 workers:
/// it returns how many existed, no deleted entry starts a perform after it
/// returns, and each deleted entry terminates once.
#[tokio::test(start_paused = true)]
async fn del_many_removes_and_counts() {
    const DONE: u64 = u64::MAX;
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(5)));
    let manager = Manager::builder(recorder).workers(2).build().unwrap();
    manager
        .put_many((0..100).map(|id| (id, "p".to_string(), every_ms(100))))
        .await
        .unwrap();

    log.sleep_until_ms(100).await;
    let doomed = (50..100).chain([60, 500]);
    let deleted = manager.del_many(doomed).await.unwrap();
    log.mark(DONE, "del_many returned");
    assert_eq!(
        deleted, 50,
        "del_many of 50 stored ids, a repeat and a missing id"
    );
    assert_eq!(manager.len(), 50, "entries after del_many");

    log.sleep_until_ms(450).await;
    let records = log.records();
    let mark = records
        .iter()
        .position(|r| r.event == Event::Mark("del_many returned"))
        .expect("the mark is logged");
    let late: Vec<u64> = records[mark..]
        .iter()
        .filter(|r| r.event == Event::Perform && r.id >= 50)
        .map(|r| r.id)
        .collect();
    assert!(
        late.is_empty(),
        "deleted entries performed after del_many returned: {late:?}"
    );
    for id in 50..100 {
        let terminates: Vec<TerminateReason> = log
            .terminates(id)
            .into_iter()
            .map(|(reason, _)| reason)
            .collect();
        assert_eq!(
            terminates,
            vec![TerminateReason::Deleted],
            "terminates of deleted entry {id}"
        );
    }
    for id in 0..50 {
        let starts = log.perform_ms(id);
        assert!(
            starts.len() >= 2,
            "surviving entry {id} performed at {starts:?}"
        );
    }
}
