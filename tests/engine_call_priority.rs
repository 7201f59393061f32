//! A call does not wait behind performs already queued for the worker
//! pool: workers take call batches first, and a worker yields after each
//! batch, so a shard it woke is not stuck behind callbacks that never
//! wait. Real time, multi-thread runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keywheel::{EntryOptions, FirstRun, Handler, Manager, Outcome};

/// Performs block their worker for 2 ms; calls return at once with the
/// number of performs finished so far.
struct Busy {
    performs: Arc<AtomicU64>,
}

impl Handler for Busy {
    type Id = u64;
    type Payload = ();
    type Request = ();
    type Reply = u64;
    type Message = ();

    async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
        std::thread::sleep(Duration::from_millis(2));
        self.performs.fetch_add(1, Ordering::Relaxed);
        Outcome::Continue
    }

    async fn call(&self, _id: &u64, _payload: &mut (), _request: ()) -> (u64, Outcome<u64>) {
        (self.performs.load(Ordering::Relaxed), Outcome::Continue)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_skips_queued_performs() {
    let performs = Arc::new(AtomicU64::new(0));
    let manager = Manager::builder(Busy {
        performs: performs.clone(),
    })
    .shards(1)
    .workers(1)
    .batch_size(8)
    .build()
    .unwrap();

    // 400 performs due at once: 800 ms of work for the single worker.
    let due_now = EntryOptions::every(Duration::from_secs(3600)).first_run(FirstRun::Immediately);
    manager
        .put_many((1..=400).map(|id| (id, (), due_now)))
        .await
        .unwrap();
    manager.put(0, (), EntryOptions::never()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let finished_before_reply = manager.call(&0, ()).await.unwrap();
    assert!(
        finished_before_reply < 200,
        "the call was answered after {finished_before_reply} of 400 queued performs; it should not wait for them"
    );
    manager.shutdown(Duration::from_secs(5)).await;
}
