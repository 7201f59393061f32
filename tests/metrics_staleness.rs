//! Staleness shows in the library's metrics three ways: the lateness
//! histogram, the count of due performs not started, and the age of the
//! oldest of them.

use std::time::Duration;

use keywheel::metrics::{
    DUE_NOT_STARTED, OLDEST_OVERDUE_SECONDS, PERFORMS_TOTAL, PERFORM_LATENESS_SECONDS,
};
use keywheel::{EntryOptions, FirstRun, Handler, Manager, Outcome};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;

/// Entry 0 blocks the only worker for 2 s; every other entry is a no-op.
struct Blocker;

impl Handler for Blocker {
    type Id = u64;
    type Payload = ();
    type Request = ();
    type Reply = ();
    type Message = ();

    async fn perform(&self, id: &u64, _payload: &mut ()) -> Outcome<u64> {
        if *id == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Outcome::Continue
    }
}

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

fn gauge(snapshot: &Snapshot, name: &str) -> f64 {
    snapshot
        .iter()
        .find(|(key, ..)| key.kind() == MetricKind::Gauge && key.key().name() == name)
        .map(|(.., value)| match value {
            DebugValue::Gauge(value) => value.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        })
        .unwrap_or_else(|| panic!("gauge {name} was never set"))
}

#[tokio::test(start_paused = true)]
async fn saturated_pool_shows_staleness() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let manager = Manager::builder(Blocker)
        .shards(2)
        .workers(1)
        .gauge_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let every = EntryOptions::every(Duration::from_secs(10));
    manager
        .put(0, (), every.first_run(FirstRun::Immediately))
        .await
        .unwrap();
    for id in 1..=5 {
        let options = every.first_run(FirstRun::After(Duration::from_millis(100)));
        manager.put(id, (), options).await.unwrap();
    }

    // At 1.05 s the five performs due at 100 ms still wait for the worker.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    // One snapshot for both gauges: the debugging recorder's snapshot
    // drains what it returns.
    let mut snapshots = vec![snapshotter.snapshot().into_vec()];
    let snapshot = &snapshots[0];
    let waiting = gauge(snapshot, DUE_NOT_STARTED);
    let oldest = gauge(snapshot, OLDEST_OVERDUE_SECONDS);
    assert_eq!(waiting, 5.0, "due performs not started");
    assert!(
        (0.85..=0.96).contains(&oldest),
        "oldest overdue age {oldest} s, expected about 0.9 s (due at 100 ms, read at 1.0 s)"
    );

    // Once the worker is free they run, 1.9 s late, and the gauges clear.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    snapshots.push(snapshotter.snapshot().into_vec());
    let snapshot = &snapshots[1];
    assert_eq!(
        gauge(snapshot, DUE_NOT_STARTED),
        0.0,
        "nothing waits any more"
    );
    assert_eq!(
        gauge(snapshot, OLDEST_OVERDUE_SECONDS),
        0.0,
        "no overdue age"
    );

    let lateness = manager.lateness();
    assert_eq!(lateness.len(), 6, "six performs measured");
    assert!(
        lateness.max() >= 1_900_000,
        "the longest lateness is the 1.9 s wait, got {} µs",
        lateness.max()
    );

    manager.shutdown(Duration::from_secs(1)).await;
    snapshots.push(snapshotter.snapshot().into_vec());
    let histogram_samples: usize = snapshots
        .iter()
        .flatten()
        .filter(|(key, ..)| key.key().name() == PERFORM_LATENESS_SECONDS)
        .map(|(.., value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            _ => 0,
        })
        .sum();
    assert!(
        histogram_samples >= 1,
        "lateness reached the metrics recorder"
    );
    let performs: u64 = snapshots
        .iter()
        .flatten()
        .filter(|(key, ..)| key.key().name() == PERFORMS_TOTAL)
        .map(|(.., value)| match value {
            DebugValue::Counter(count) => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(performs, 6, "performs counted by outcome");
}
