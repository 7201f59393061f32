//! A shard parked on a far timer, on a real multi-thread runtime: a cast
//! that makes its entry due now and a shutdown both take effect at once,
//! never at the stale far deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keywheel::{EntryOptions, Handler, Manager, Outcome};

/// Performs log their start; a perform reschedules far ahead, a cast
/// reschedules to 1 ms.
struct Far {
    performs: Arc<Mutex<Vec<Instant>>>,
}

impl Handler for Far {
    type Id = u64;
    type Payload = ();
    type Request = ();
    type Reply = ();
    type Message = ();

    async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
        self.performs.lock().unwrap().push(Instant::now());
        Outcome::Reschedule(Duration::from_secs(100))
    }

    async fn cast(&self, _id: &u64, _payload: &mut (), _message: ()) -> Outcome<u64> {
        Outcome::Reschedule(Duration::from_millis(1))
    }
}

fn far_manager(shards: usize) -> (Manager<Far>, Arc<Mutex<Vec<Instant>>>) {
    let performs = Arc::new(Mutex::new(Vec::new()));
    let manager = Manager::builder(Far {
        performs: performs.clone(),
    })
    .shards(shards)
    .build()
    .unwrap();
    (manager, performs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cast_due_now_wakes_parked_shard() {
    let (manager, performs) = far_manager(1);
    manager
        .put(1, (), EntryOptions::every(Duration::from_secs(100)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let cast_at = Instant::now();
    manager.cast(&1, ()).await.unwrap();
    let deadline = cast_at + Duration::from_secs(2);
    while performs.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = performs.lock().unwrap().first().copied();
    let first = first.expect("the entry performed within 2 s of the cast");
    // 1 ms is the new interval; the rest leaves room for a busy machine.
    let waited = first - cast_at;
    assert!(
        waited < Duration::from_millis(50),
        "perform started {waited:?} after the cast made it due in 1 ms"
    );
    manager.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_parked_on_far_entry_is_prompt() {
    let (manager, performs) = far_manager(keywheel::DEFAULT_SHARDS);
    manager
        .put(1, (), EntryOptions::every(Duration::from_secs(100)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let before = Instant::now();
    let report = manager.shutdown(Duration::from_secs(1)).await;
    let took = before.elapsed();
    assert!(
        took < Duration::from_millis(50),
        "shutdown of a manager parked on a 100 s timer took {took:?}"
    );
    assert_eq!(report.terminated, 1, "terminated: {report:?}");
    assert_eq!(report.in_flight, 0, "in flight: {report:?}");
    let ran = performs.lock().unwrap().len();
    assert_eq!(ran, 0, "performs of the far entry");
}
