//! How entries end and are replaced: Halt, del, re-put, replace, Move and
//! shutdown, with `terminate` exactly once per ended entry. Tests run on a
//! paused clock, except the multi-thread ones, which use real time.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ids_on_shard, Event, Log, Recorder, Step};
use keywheel::{
    EntryOptions, Error, FirstRun, Id as _, Manager, Outcome, PutResult, State, TerminateReason,
};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

#[tokio::test(start_paused = true)]
async fn halt_removes_and_terminates_once() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, payload| {
        payload.push('.');
        if payload.len() == 2 {
            Step::then(Outcome::Halt)
        } else {
            Step::done()
        }
    });
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, String::new(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(1_000).await;
    let starts = log.perform_ms(1);
    assert_eq!(starts, vec![100, 200], "the second perform halts the entry");
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Halted, "..".to_string())],
        "terminate after Halt, with the last payload"
    );
    let snapshot = manager.get(&1).await.unwrap();
    assert!(snapshot.is_none(), "a halted entry is gone: {snapshot:?}");
    assert_eq!(manager.len(), 0, "len after Halt");
}

/// 1000 entries fall due together on a pool of 4 workers whose performs take
/// 5 ms, so most of them wait in the pool's queue. Deleting half of them
/// must stop those queued performs: only a callback that had started before
/// its `del` returned may still run.
#[tokio::test(start_paused = true)]
async fn del_of_due_entries_stops_queued_performs() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(5)));
    let manager = Manager::builder(recorder).workers(4).build().unwrap();
    manager
        .put_many((0..1000).map(|id| (id, "p".to_string(), every_ms(100))))
        .await
        .unwrap();

    log.sleep_until_ms(100).await;
    for id in 500..1000 {
        let existed = manager.del(&id).await.unwrap();
        assert!(existed, "first del of entry {id}");
        log.mark(id, "deleted");
    }
    assert_eq!(manager.len(), 500, "len after deleting half");

    let again = manager.del(&700).await.unwrap();
    assert!(!again, "a second del of entry 700 returns false");
    let unknown = manager.del(&5_000).await.unwrap();
    assert!(!unknown, "del of an id that never existed returns false");

    log.sleep_until_ms(2_100).await;
    let mut started_before_del = 0;
    for id in 500..1000 {
        let events: Vec<Event> = log.of(id).into_iter().map(|r| r.event).collect();
        let mark = events
            .iter()
            .position(|e| *e == Event::Mark("deleted"))
            .expect("every deleted id has a mark");
        let after: Vec<&Event> = events[mark..]
            .iter()
            .filter(|e| **e == Event::Perform)
            .collect();
        assert!(
            after.is_empty(),
            "entry {id} performed after its del returned: {events:?}"
        );
        started_before_del += events[..mark]
            .iter()
            .filter(|e| **e == Event::Perform)
            .count();
        let terminates = log.terminates(id);
        assert_eq!(
            terminates,
            vec![(TerminateReason::Deleted, "p".to_string())],
            "terminate of deleted entry {id}"
        );
    }
    assert!(
        started_before_del <= 4,
        "{started_before_del} deleted entries started a perform before their del; the pool has 4 workers"
    );

    // 500 survivors × 5 ms on 4 workers: the first round ends by 725 ms.
    // The pool runs due performs in the order they fell due, so no survivor
    // performs a second time before every survivor has performed once.
    let last_first = (0..500)
        .filter_map(|id| log.perform_times(id).first().copied())
        .max();
    let earliest_second = (0..500)
        .filter_map(|id| log.perform_times(id).get(1).copied())
        .min();
    assert!(
        last_first < earliest_second,
        "a survivor performed twice ({earliest_second:?}) before all had performed once ({last_first:?})"
    );
    for id in 0..500 {
        let spans = log.perform_spans(id);
        assert!(
            spans.len() >= 2,
            "survivor {id} performed {} times by 2.1 s",
            spans.len()
        );
        let first = spans[0].0;
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(730),
            "survivor {id} first performed at {first:?}"
        );
        for pair in spans.windows(2) {
            let (_, end) = pair[0];
            let (next, _) = pair[1];
            assert!(
                next >= end + Duration::from_millis(100),
                "survivor {id} performed again at {next:?}, before its previous end {end:?} + 100 ms"
            );
        }
        let terminates = log.terminates(id);
        assert!(
            terminates.is_empty(),
            "survivor {id} terminated: {terminates:?}"
        );
    }
}

/// A deleted entry's freed slab slot is taken by the next put. The deleted
/// entry's timer must never fire for the new one.
#[tokio::test(start_paused = true)]
async fn del_then_put_other_id_on_reused_slot() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .shards(1)
        .build()
        .unwrap();
    manager.put(1, "p1".into(), every_ms(50)).await.unwrap();

    log.sleep_until_ms(40).await;
    let existed = manager.del(&1).await.unwrap();
    assert!(existed, "del of entry 1");
    log.sleep_until_ms(41).await;
    manager.put(2, "q".into(), every_ms(50)).await.unwrap();

    log.sleep_until_ms(200).await;
    let deleted = log.performs(1);
    assert!(deleted.is_empty(), "deleted entry performed: {deleted:?}");
    let performs = log.performs(2);
    let expected: Vec<(u64, String)> = [91, 141, 191]
        .into_iter()
        .map(|at| (at, "q".to_string()))
        .collect();
    assert_eq!(
        performs, expected,
        "performs (ms, payload) of the new entry"
    );
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Deleted, "p1".to_string())],
        "terminate of the deleted entry"
    );
}

/// The same id deleted and put again: one timer, the new payload only.
#[tokio::test(start_paused = true)]
async fn del_then_put_same_id_on_reused_slot() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .shards(1)
        .build()
        .unwrap();
    manager.put(1, "p1".into(), every_ms(50)).await.unwrap();

    log.sleep_until_ms(40).await;
    let existed = manager.del(&1).await.unwrap();
    assert!(existed, "del of entry 1");
    log.sleep_until_ms(45).await;
    let result = manager.put(1, "p2".into(), every_ms(50)).await.unwrap();
    assert_eq!(result, PutResult::Inserted, "re-put after del inserts");

    log.sleep_until_ms(270).await;
    let performs = log.performs(1);
    let expected: Vec<(u64, String)> = [95, 145, 195, 245]
        .into_iter()
        .map(|at| (at, "p2".to_string()))
        .collect();
    assert_eq!(
        performs, expected,
        "one timer, one perform per interval, only the new payload"
    );
}

/// A put over an existing id ends the old entry with `terminate(Replaced)`.
/// If the old entry's perform is running, the new entry takes over at once
/// and the old one terminates when its perform hands the payload back.
#[tokio::test(start_paused = true)]
async fn put_replacing_terminates_old_once() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|id, payload| {
        payload.push('!');
        if id == 2 {
            Step::sleep(Duration::from_millis(50))
        } else {
            Step::done()
        }
    });
    let manager = Manager::builder(recorder).build().unwrap();

    manager.put(1, "a".into(), every_ms(100)).await.unwrap();
    manager.put(2, "x".into(), every_ms(100)).await.unwrap();

    // Replacing an idle entry.
    log.sleep_until_ms(50).await;
    let result = manager.put(1, "b".into(), every_ms(100)).await.unwrap();
    assert_eq!(result, PutResult::Replaced, "put over an existing id");

    // Replacing an entry whose perform runs from 100 to 150 ms.
    log.sleep_until_ms(120).await;
    let result = manager.put(2, "y".into(), every_ms(100)).await.unwrap();
    assert_eq!(result, PutResult::Replaced, "put over a busy entry");
    let snapshot = manager.get(&2).await.unwrap().expect("entry 2 exists");
    assert_eq!(
        snapshot.payload, "y",
        "get right after the put sees the new entry"
    );
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(120),
        "get does not wait for the replaced entry's perform"
    );

    log.sleep_until_ms(300).await;
    let idle = log.performs(1);
    assert_eq!(
        idle,
        vec![(150, "b".to_string()), (250, "b!".to_string())],
        "replaced idle entry: fresh schedule from the put at 50 ms"
    );
    let idle_terminates = log.terminates(1);
    assert_eq!(
        idle_terminates,
        vec![(TerminateReason::Replaced, "a".to_string())],
        "terminate of the replaced idle entry"
    );

    let busy = log.performs(2);
    assert_eq!(
        busy,
        vec![(100, "x".to_string()), (220, "y".to_string())],
        "replaced busy entry: old perform at 100 ms, new one 100 ms after the put"
    );
    let busy_terminates = log.times_ms(2, |e| matches!(e, Event::Terminate(_)));
    assert_eq!(
        busy_terminates,
        vec![150],
        "the replaced entry terminates when its perform hands the payload back"
    );
    let busy_terminates = log.terminates(2);
    assert_eq!(
        busy_terminates,
        vec![(TerminateReason::Replaced, "x!".to_string())],
        "terminate of the replaced busy entry, with the payload its perform left"
    );
}

#[tokio::test(start_paused = true)]
async fn put_new_keeps_existing_entry() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    manager.put(1, "a".into(), every_ms(100)).await.unwrap();
    log.sleep_until_ms(50).await;

    let result = manager.put_new(1, "b".into(), every_ms(30)).await.unwrap();
    assert_eq!(result, PutResult::Exists, "put_new over an existing id");
    let result = manager.put_new(2, "c".into(), every_ms(100)).await.unwrap();
    assert_eq!(result, PutResult::Inserted, "put_new of a new id");

    log.sleep_until_ms(250).await;
    let performs = log.performs(1);
    assert_eq!(
        performs,
        vec![(100, "a".to_string()), (200, "a".to_string())],
        "the existing entry keeps its payload and schedule"
    );
    let terminates = log.terminates(1);
    assert!(
        terminates.is_empty(),
        "put_new ran terminate: {terminates:?}"
    );
}

/// `Move` inserts the new id with the payload and options. The engine starts
/// its schedule afresh, so its first perform is one interval after the move.
/// The target is on the same shard, on another shard, or an existing entry
/// that the move replaces.
#[tokio::test(start_paused = true)]
async fn move_transfers_payload_to_new_id() {
    const SHARDS: u64 = 4;
    let home = 1u64.stable_hash() % SHARDS;
    let same_shard = ids_on_shard(home, SHARDS, 3)[2];
    let other_shard = ids_on_shard((home + 1) % SHARDS, SHARDS, 1)[0];

    for (target, occupied) in [
        (same_shard, false),
        (other_shard, false),
        (other_shard, true),
    ] {
        let log = Log::new();
        let recorder = Recorder::new(&log).perform(move |id, payload| {
            if id == 1 {
                payload.push_str("+moved");
                Step::then(Outcome::Move(target))
            } else {
                Step::done()
            }
        });
        let manager = Manager::builder(recorder)
            .shards(SHARDS as usize)
            .build()
            .unwrap();
        manager.put(1, "p".into(), every_ms(100)).await.unwrap();
        if occupied {
            let options = every_ms(1_000);
            manager.put(target, "old".into(), options).await.unwrap();
        }

        log.sleep_until_ms(150).await;
        let source = manager.get(&1).await.unwrap();
        assert!(
            source.is_none(),
            "target {target}: the old id is gone: {source:?}"
        );
        let moved = manager
            .get(&target)
            .await
            .unwrap()
            .expect("the new id exists");
        assert_eq!(moved.payload, "p+moved", "target {target}: moved payload");
        assert_eq!(
            moved.next_due,
            Some(log.at_ms(200)),
            "target {target}: the new id starts a fresh schedule at the move"
        );
        assert_eq!(manager.len(), 1, "target {target}: len after the move");

        log.sleep_until_ms(250).await;
        let terminates = log.terminates(1);
        assert_eq!(
            terminates,
            vec![(TerminateReason::Moved, "p+moved".to_string())],
            "target {target}: terminate of the moved id"
        );
        let performs = log.performs(target);
        assert_eq!(
            performs,
            vec![(200, "p+moved".to_string())],
            "target {target}: performs of the new id"
        );
        let replaced = log.terminates(target);
        let expected = if occupied {
            vec![(TerminateReason::Replaced, "old".to_string())]
        } else {
            Vec::new()
        };
        assert_eq!(
            replaced, expected,
            "target {target}: terminate of the entry it replaced"
        );
    }
}

/// Several re-puts before the first due time: only the last schedule counts.
#[tokio::test(start_paused = true)]
async fn interval_changes_before_first_fire() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    manager.put(1, "a".into(), every_ms(200)).await.unwrap();
    manager.put(2, "b".into(), every_ms(250)).await.unwrap();
    manager.put(3, "c".into(), every_ms(200)).await.unwrap();

    log.sleep_until_ms(3).await;
    let sooner = every_ms(200).first_run(FirstRun::After(Duration::from_millis(2)));
    manager.put(3, "c".into(), sooner).await.unwrap();

    log.sleep_until_ms(10).await;
    manager.put(1, "a".into(), every_ms(300)).await.unwrap();
    manager.put(2, "b".into(), every_ms(350)).await.unwrap();
    manager.put(1, "a".into(), every_ms(400)).await.unwrap();

    log.sleep_until_ms(700).await;
    let first = log.perform_ms(1);
    assert_eq!(first, vec![410], "entry 1 after changes to 300 then 400 ms");
    let second = log.perform_ms(2);
    assert_eq!(second, vec![360], "entry 2 after a change to 350 ms");
    let third = log.perform_ms(3);
    assert_eq!(
        third,
        vec![5, 205, 405, 605],
        "entry 3 re-armed at 3 ms to be due at 5 ms"
    );

    let replaced = |id| {
        log.terminates(id)
            .into_iter()
            .filter(|(reason, _)| *reason == TerminateReason::Replaced)
            .count()
    };
    assert_eq!(replaced(1), 2, "terminates of entry 1");
    assert_eq!(replaced(2), 1, "terminates of entry 2");
    assert_eq!(replaced(3), 1, "terminates of entry 3");
}

/// `del` of a busy entry: its perform finishes but the outcome (here a
/// reschedule) is discarded, a call queued behind it gets `NotFound`, and
/// `terminate` runs when the perform ends.
#[tokio::test(start_paused = true)]
async fn del_during_perform_discards_its_outcome() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, payload| {
        payload.push('!');
        Step::sleep(Duration::from_millis(50))
            .with_outcome(Outcome::Reschedule(Duration::from_millis(10)))
    });
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(120).await;
    let queued = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.call(&1, ()).await })
    };
    common::settle().await;
    let existed = manager.del(&1).await.unwrap();
    assert!(existed, "del of a busy entry");
    assert_eq!(manager.len(), 0, "len right after del");
    let snapshot = manager.get(&1).await.unwrap();
    assert!(snapshot.is_none(), "get after del: {snapshot:?}");

    let call = queued.await.unwrap();
    assert_eq!(
        call,
        Err(Error::NotFound { id: "1".into() }),
        "a call queued behind the perform when the entry was deleted"
    );

    log.sleep_until_ms(1_000).await;
    let starts = log.perform_ms(1);
    assert_eq!(starts, vec![100], "no perform after del");
    let terminate_at = log.times_ms(1, |e| matches!(e, Event::Terminate(_)));
    assert_eq!(
        terminate_at,
        vec![150],
        "terminate runs when the perform ends"
    );
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Deleted, "p!".to_string())],
        "terminate gets the payload the perform left"
    );
    let calls = log.count(1, |e| *e == Event::Call);
    assert_eq!(calls, 0, "the queued call never ran");
}

/// A shard parked on a far timer wakes for a del followed by a put.
#[tokio::test(start_paused = true)]
async fn del_only_entry_then_put_wakes_shard() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .shards(1)
        .build()
        .unwrap();
    manager
        .put(1, "a".into(), EntryOptions::every(Duration::from_secs(100)))
        .await
        .unwrap();

    log.sleep_until_ms(1_000).await;
    let deleter = manager.clone();
    let existed = tokio::spawn(async move { deleter.del(&1).await })
        .await
        .unwrap()
        .unwrap();
    assert!(existed, "del of the only entry");

    log.sleep_until_ms(1_010).await;
    manager.put(2, "b".into(), every_ms(50)).await.unwrap();

    log.sleep_until_ms(1_070).await;
    let starts = log.perform_ms(2);
    assert_eq!(
        starts,
        vec![1_060],
        "new entry performs 50 ms after its put"
    );
    let deleted = log.perform_ms(1);
    assert!(deleted.is_empty(), "deleted entry performed: {deleted:?}");
}

/// A cast that reschedules moves a far due time to now.
#[tokio::test(start_paused = true)]
async fn cast_reschedule_wakes_parked_shard() {
    let log = Log::new();
    let recorder = Recorder::new(&log)
        .cast(|_, _| Step::then(Outcome::Reschedule(Duration::from_millis(1))))
        .perform(|_, _| Step::then(Outcome::Reschedule(Duration::from_secs(100))));
    let manager = Manager::builder(recorder).shards(1).build().unwrap();
    manager
        .put(1, "a".into(), EntryOptions::every(Duration::from_secs(100)))
        .await
        .unwrap();

    log.sleep_until_ms(2_000).await;
    manager.cast(&1, "now".into()).await.unwrap();

    log.sleep_until_ms(3_000).await;
    let starts = log.perform_ms(1);
    assert_eq!(
        starts,
        vec![2_001],
        "perform 1 ms after the rescheduling cast"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_of_parked_shard_is_immediate() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    manager
        .put(1, "a".into(), EntryOptions::every(Duration::from_secs(100)))
        .await
        .unwrap();
    log.sleep_until_ms(1_000).await;

    let report = manager.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(1_000),
        "shutdown waited on the clock"
    );
    assert_eq!(report.in_flight, 0, "in flight: {report:?}");
    assert_eq!(report.terminated, 1, "terminated: {report:?}");
    assert_eq!(manager.state(), State::Stopped, "state after shutdown");
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Shutdown, "a".to_string())],
        "terminate at shutdown"
    );

    let put = manager.put(2, "b".into(), every_ms(100)).await;
    let error = put.expect_err("put after shutdown");
    assert_eq!(error.error, Error::ShuttingDown, "put after shutdown");
    assert_eq!(
        error.payload.as_deref(),
        Some("b"),
        "the payload of a put after shutdown comes back"
    );
}

/// The two tests above on a real multi-thread runtime, where the shard task
/// is parked in the timer driver while other threads send it commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_then_put_and_shutdown_real_time() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .shards(1)
        .build()
        .unwrap();
    manager
        .put(1, "a".into(), EntryOptions::every(Duration::from_secs(100)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert!(manager.del(&1).await.unwrap(), "del of the only entry");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let put_at = log.elapsed();
    manager.put(2, "b".into(), every_ms(50)).await.unwrap();
    manager
        .put(3, "c".into(), EntryOptions::every(Duration::from_secs(100)))
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while log.perform_times(2).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = log.perform_times(2).first().copied();
    let first = first.expect("entry 2 performed within 2 s");
    // The bounds leave room for a busy test machine. A shard that slept on
    // the deleted entry's 100 s timer would miss them by far.
    let waited = first - put_at;
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_millis(150),
        "entry 2 first performed {waited:?} after its put"
    );

    let before = std::time::Instant::now();
    let report = manager.shutdown(Duration::from_secs(1)).await;
    let took = before.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "shutdown with an entry parked 100 s ahead took {took:?}"
    );
    assert_eq!(report.terminated, 2, "terminated: {report:?}");
}

/// 1000 entries all due at once, 100 workers, performs of 500 ms: 100 run
/// when shutdown begins and 900 wait in the pool's queue. None of those 900
/// may start, the 100 finish within the grace period, and every entry gets
/// one `terminate(Shutdown)` with its last payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_terminates_each_entry_once() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, payload| {
        *payload = "performed".to_string();
        Step::sleep(Duration::from_millis(500))
    });
    let manager = Manager::builder(recorder).workers(100).build().unwrap();
    let options = EntryOptions::every(Duration::from_secs(10)).first_run(FirstRun::Immediately);
    manager
        .put_many((0..1000).map(|id| (id, "initial".to_string(), options)))
        .await
        .unwrap();

    let count_starts = || {
        log.records()
            .iter()
            .filter(|r| r.event == Event::Perform)
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while count_starts() < 100 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = count_starts();
    assert_eq!(started, 100, "performs running on 100 workers");

    log.mark(u64::MAX, "shutdown");
    let before = std::time::Instant::now();
    let report = manager.shutdown(Duration::from_secs(1)).await;
    let took = before.elapsed();

    assert!(
        took < Duration::from_millis(1_100),
        "shutdown took {took:?}, more than the 1 s grace + 100 ms"
    );
    let records = log.records();
    let mark = records
        .iter()
        .position(|r| r.event == Event::Mark("shutdown"))
        .expect("the shutdown mark is logged");
    let late: Vec<u64> = records[mark..]
        .iter()
        .filter(|r| r.event == Event::Perform)
        .map(|r| r.id)
        .collect();
    assert!(
        late.is_empty(),
        "performs started after shutdown began: {late:?}"
    );

    assert_eq!(report.in_flight, 100, "in flight: {report:?}");
    assert_eq!(report.completed, 100, "completed: {report:?}");
    assert_eq!(report.cancelled, 0, "cancelled: {report:?}");
    assert_eq!(report.terminated, 1000, "terminated: {report:?}");
    assert_eq!(manager.state(), State::Stopped, "state after shutdown");

    let ran: Vec<u64> = records
        .iter()
        .filter(|r| r.event == Event::Perform)
        .map(|r| r.id)
        .collect();
    for id in 0..1000 {
        let terminates = log.terminates(id);
        let payload = if ran.contains(&id) {
            "performed"
        } else {
            "initial"
        };
        assert_eq!(
            terminates,
            vec![(TerminateReason::Shutdown, payload.to_string())],
            "terminates of entry {id}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_callbacks_past_grace() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, payload| {
        *payload = "started".to_string();
        Step::sleep(Duration::from_secs(5))
    });
    let manager = Manager::builder(recorder).build().unwrap();
    let options = EntryOptions::every(Duration::from_secs(10)).first_run(FirstRun::Immediately);
    manager
        .put_many((0..10).map(|id| (id, "initial".to_string(), options)))
        .await
        .unwrap();

    log.sleep_until_ms(100).await;
    let report = manager.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(1_100),
        "shutdown returns when the 1 s grace ends"
    );
    assert_eq!(report.in_flight, 10, "in flight: {report:?}");
    assert_eq!(report.completed, 0, "completed: {report:?}");
    assert_eq!(report.cancelled, 10, "cancelled: {report:?}");
    assert_eq!(report.terminated, 10, "terminated: {report:?}");

    for id in 0..10 {
        let ends = log.count(id, |e| *e == Event::PerformEnd);
        assert_eq!(ends, 0, "entry {id}: a cancelled perform never ends");
        let terminates = log.terminates(id);
        assert_eq!(
            terminates,
            vec![(TerminateReason::Shutdown, "started".to_string())],
            "entry {id}: terminate gets the payload the cancelled perform left"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_idempotent() {
    let log = Log::new();
    let performs = Arc::new(AtomicU32::new(0));
    let counter = performs.clone();
    let recorder = Recorder::new(&log).perform(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        Step::done()
    });
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "a".into(), every_ms(100)).await.unwrap();
    log.sleep_until_ms(150).await;

    let first = manager.shutdown(Duration::from_secs(1)).await;
    let second = manager.shutdown(Duration::from_secs(1)).await;
    assert_eq!(first, second, "a second shutdown returns the first report");
    let terminates = log.terminates(1);
    assert_eq!(
        terminates.len(),
        1,
        "terminates after two shutdowns: {terminates:?}"
    );

    log.sleep_until_ms(1_000).await;
    let count = performs.load(Ordering::SeqCst);
    assert_eq!(count, 1, "performs after shutdown");
}
