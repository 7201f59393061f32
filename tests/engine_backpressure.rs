//! Bounded queues. When a shard's command queue is full, `try_` operations
//! return `Overloaded` at once and the other operations wait. When the
//! pool's queue is full, shards wait too. No acknowledged operation or due
//! perform is dropped. The tests run on a paused clock on one thread, so
//! the order in which tasks run is fixed.

mod common;

use std::time::Duration;

use common::{Log, Recorder, Step};
use keywheel::{EntryOptions, Error, FirstRun, Manager};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

/// One shard with room for one command. A put fills the queue before the
/// shard runs, so every `try_` operation behind it is `Overloaded`, and a
/// failed `try_put` hands its payload back.
#[tokio::test(start_paused = true)]
async fn full_command_queue_overloads_try_ops() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .shards(1)
        .command_capacity(1)
        .build()
        .unwrap();
    manager.ready().await;

    let filler = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.put(1, "kept".into(), every_ms(100)).await })
    };
    let try_put = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.try_put(2, "back".into(), every_ms(100)).await })
    };
    let try_put_new = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.try_put_new(3, "new".into(), every_ms(100)).await })
    };
    let try_call = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.try_call(&1, ()).await })
    };
    let try_cast = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.try_cast(&1, "m".into()).await })
    };
    let try_del = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.try_del(&1).await })
    };

    let overloaded = Error::Overloaded { shard: 0 };
    let put = try_put.await.unwrap().expect_err("try_put on a full queue");
    assert_eq!(put.error, overloaded, "try_put on a full queue");
    assert_eq!(
        put.payload.as_deref(),
        Some("back"),
        "the payload of the rejected try_put comes back"
    );
    let put_new = try_put_new.await.unwrap().expect_err("try_put_new");
    assert_eq!(put_new.error, overloaded, "try_put_new on a full queue");
    let call = try_call.await.unwrap();
    assert_eq!(call, Err(overloaded.clone()), "try_call on a full queue");
    let cast = try_cast.await.unwrap();
    assert_eq!(cast, Err(overloaded.clone()), "try_cast on a full queue");
    let del = try_del.await.unwrap();
    assert_eq!(del, Err(overloaded), "try_del on a full queue");

    let filled = filler.await.unwrap();
    assert!(
        filled.is_ok(),
        "the waiting put that filled the queue: {filled:?}"
    );
    assert_eq!(manager.len(), 1, "only the acknowledged put is stored");
    let stored = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(stored.payload, "kept", "payload of the stored entry");
    for id in [2, 3] {
        let contains = manager.contains(&id).await.unwrap();
        assert!(!contains, "a rejected put stored entry {id}");
    }
}

/// Fifty puts through a queue with room for one command all wait their
/// turn, and every acknowledged put is stored.
#[tokio::test(start_paused = true)]
async fn full_command_queue_makes_puts_wait() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .shards(1)
        .command_capacity(1)
        .build()
        .unwrap();

    let mut puts = Vec::new();
    for id in 0..50 {
        let manager = manager.clone();
        puts.push(tokio::spawn(async move {
            manager.put(id, format!("p{id}"), every_ms(100)).await
        }));
    }
    for (id, put) in puts.into_iter().enumerate() {
        let result = put.await.unwrap();
        assert!(result.is_ok(), "put of entry {id}: {result:?}");
    }
    assert_eq!(manager.len(), 50, "entries after 50 acknowledged puts");
    for id in 0..50 {
        let snapshot = manager.get(&id).await.unwrap();
        let payload = snapshot.map(|s| s.payload);
        assert_eq!(payload, Some(format!("p{id}")), "entry {id}");
    }
}

/// A pool queue with room for one batch of one job, and two workers, gets
/// 200 performs that fall due together. The shard waits for room; every
/// entry performs once per round, none is dropped.
#[tokio::test(start_paused = true)]
async fn full_pool_queue_drops_no_perform() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(5)));
    let manager = Manager::builder(recorder)
        .shards(1)
        .workers(2)
        .pool_capacity(1)
        .batch_size(1)
        .build()
        .unwrap();
    let options = EntryOptions::every(Duration::from_secs(1)).first_run(FirstRun::Immediately);
    manager
        .put_many((0..200).map(|id| (id, "p".to_string(), options)))
        .await
        .unwrap();

    // 200 performs of 5 ms on 2 workers take 500 ms; the second round
    // starts 1 s after each first perform ended.
    log.sleep_until_ms(1_700).await;
    for id in 0..200 {
        let starts = log.perform_ms(id);
        assert_eq!(starts.len(), 2, "entry {id} performed at {starts:?}");
        assert!(
            starts[0] < 505,
            "entry {id} first performed at {} ms, after the first round",
            starts[0]
        );
    }
    let call = manager.call(&199, ()).await;
    assert_eq!(
        call,
        Ok("p".to_string()),
        "calls go through after the rounds"
    );
}
