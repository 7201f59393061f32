//! A manager used as a pool: entries with `Interval::Never` that only serve
//! calls and casts. Paused clock.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Log, Recorder};
use keywheel::{EntryOptions, FirstRun, Handler, Interval, Manager, Outcome};

/// A pool member: `init` sets its total to 0, a call adds the request and
/// replies the new total, a cast adds the message. Performs are counted so
/// a test can check that none ran.
struct Adder {
    performs: Arc<AtomicU64>,
}

impl Handler for Adder {
    type Id = u64;
    type Payload = u64;
    type Request = u64;
    type Reply = u64;
    type Message = u64;

    async fn perform(&self, _id: &u64, _total: &mut u64) -> Outcome<u64> {
        self.performs.fetch_add(1, Ordering::SeqCst);
        Outcome::Continue
    }

    async fn call(&self, _id: &u64, total: &mut u64, add: u64) -> (u64, Outcome<u64>) {
        tokio::task::yield_now().await;
        *total += add;
        (*total, Outcome::Continue)
    }

    async fn cast(&self, _id: &u64, total: &mut u64, add: u64) -> Outcome<u64> {
        *total += add;
        Outcome::Continue
    }

    async fn init(&self, _id: &u64, _payload: u64) -> u64 {
        0
    }
}

/// Two members serve 40 concurrent calls and 10 casts: no update is lost,
/// so the members' totals add up to the sum of all increments, and no
/// perform ever runs.
#[tokio::test(start_paused = true)]
async fn pool_of_never_entries_serves_calls() {
    let performs = Arc::new(AtomicU64::new(0));
    let manager = Manager::builder(Adder {
        performs: performs.clone(),
    })
    .workers(2)
    .build()
    .unwrap();
    for id in [1, 2] {
        manager.put(id, 99, EntryOptions::never()).await.unwrap();
    }

    let first = manager.call(&1, 1).await;
    assert_eq!(first, Ok(1), "the first call on a member set to 0 by init");

    let mut callers = Vec::new();
    for add in 1..=40u64 {
        let manager = manager.clone();
        callers.push(tokio::spawn(async move {
            manager.call(&(add % 2 + 1), add).await
        }));
    }
    for add in 1..=10u64 {
        manager.cast(&(add % 2 + 1), 100).await.unwrap();
    }
    for (index, caller) in callers.into_iter().enumerate() {
        let reply = caller.await.unwrap();
        let add = index as u64 + 1;
        let total = reply.unwrap_or_else(|error| panic!("call adding {add} failed: {error}"));
        assert!(total >= add, "call adding {add} replied total {total}");
    }

    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut sum = 0;
    for id in [1, 2] {
        let snapshot = manager.get(&id).await.unwrap().expect("member exists");
        assert_eq!(snapshot.interval, Interval::Never, "member {id} interval");
        assert_eq!(snapshot.next_due, None, "member {id} has no due time");
        assert_eq!(snapshot.performs, 0, "member {id} performs");
        sum += snapshot.payload;
    }
    let expected = 1 + (1..=40).sum::<u64>() + 10 * 100;
    assert_eq!(sum, expected, "members' totals against the increments sent");
    let ran = performs.load(Ordering::SeqCst);
    assert_eq!(ran, 0, "performs of entries with Interval::Never");
}

/// `Interval::Never` with `FirstRun::Immediately` performs exactly once; the
/// calls and casts that follow never trigger another perform.
#[tokio::test(start_paused = true)]
async fn never_with_immediate_first_run_performs_once() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    let options = EntryOptions::never().first_run(FirstRun::Immediately);
    manager.put(1, "p".into(), options).await.unwrap();

    log.sleep_until_ms(100).await;
    manager.cast(&1, "x".into()).await.unwrap();
    let reply = manager.call(&1, ()).await;
    assert_eq!(reply, Ok("p+x".to_string()), "a call after the cast");

    log.sleep_until_ms(5_000).await;
    let starts = log.perform_ms(1);
    assert_eq!(starts, vec![0], "performs of the entry");
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(snapshot.next_due, None, "no perform is scheduled");
    assert_eq!(snapshot.performs, 1, "performs counted");
}
