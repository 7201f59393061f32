use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keywheel::{EntryOptions, Handler, Manager, Outcome, PutResult};

struct Count(Arc<AtomicUsize>);

impl Handler for Count {
    type Id = u64;
    type Payload = u64;
    type Request = ();
    type Reply = u64;
    type Message = u64;

    async fn perform(&self, _id: &u64, n: &mut u64) -> Outcome<u64> {
        *n += 1;
        self.0.fetch_add(1, Ordering::SeqCst);
        Outcome::Continue
    }

    async fn call(&self, _id: &u64, n: &mut u64, _: ()) -> (u64, Outcome<u64>) {
        (*n, Outcome::Continue)
    }
}

#[tokio::test(start_paused = true)]
async fn smoke_perform_and_call() {
    let performs = Arc::new(AtomicUsize::new(0));
    let manager = Manager::builder(Count(performs.clone())).build().unwrap();
    manager.ready().await;
    let r = manager
        .put(1, 0, EntryOptions::every(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(r, PutResult::Inserted);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(manager.call(&1, ()).await.unwrap(), 3);
    assert_eq!(performs.load(Ordering::SeqCst), 3);
    let snap = manager.get(&1).await.unwrap().unwrap();
    assert_eq!(snap.performs, 3);
    assert!(manager.del(&1).await.unwrap());
    assert!(!manager.del(&1).await.unwrap());
    let report = manager.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.cancelled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_many_real_time() {
    let performs = Arc::new(AtomicUsize::new(0));
    let manager = Manager::builder(Count(performs.clone())).build().unwrap();
    let report = manager
        .put_many((0..20_000u64).map(|i| (i, 0, EntryOptions::every(Duration::from_millis(200)))))
        .await
        .unwrap();
    assert_eq!(report.inserted, 20_000);
    assert_eq!(manager.len(), 20_000);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let n = performs.load(Ordering::SeqCst);
    assert!(n >= 60_000, "performs {n}");
    let lateness = manager.lateness();
    eprintln!(
        "performs {n} p50 {} p99 {} max {}",
        lateness.value_at_quantile(0.5),
        lateness.value_at_quantile(0.99),
        lateness.max()
    );
    let report = manager.shutdown(Duration::from_secs(1)).await;
    eprintln!("{report:?}");
    assert_eq!(report.terminated, 20_000);
}
