//! Callbacks that do their work without ever waiting: a CPU-bound perform
//! finishes on its first poll. The engine must still see when it really
//! started and ended, for the fixed-delay cadence, the overrun count and
//! the lateness figures. Real time, since busy work does not move a paused
//! clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keywheel::{EntryOptions, FirstRun, Handler, Manager, Outcome};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Start times of performs: (id, time since the handler was made).
type Starts = Arc<Mutex<Vec<(u64, Duration)>>>;

/// A handler whose perform busy-waits for `work` and logs its start.
struct Busy {
    origin: Instant,
    work: Duration,
    starts: Starts,
}

impl Busy {
    fn new(work: Duration) -> (Self, Starts) {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let handler = Busy {
            origin: Instant::now(),
            work,
            starts: starts.clone(),
        };
        (handler, starts)
    }
}

impl Handler for Busy {
    type Id = u64;
    type Payload = ();
    type Request = ();
    type Reply = ();
    type Message = ();

    async fn perform(&self, id: &u64, _payload: &mut ()) -> Outcome<u64> {
        let started = Instant::now();
        self.starts
            .lock()
            .unwrap()
            .push((*id, started - self.origin));
        while started.elapsed() < self.work {
            std::hint::spin_loop();
        }
        Outcome::Continue
    }
}

/// Under fixed delay the next perform is due one interval after the
/// previous one ended, also when the perform never waited: 30 ms of work
/// at a 100 ms interval gives 130 ms from start to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_delay_counts_busy_work() {
    let (handler, starts) = Busy::new(Duration::from_millis(30));
    let manager = Manager::builder(handler).build().unwrap();
    manager
        .put(1, (), EntryOptions::every(Duration::from_millis(100)))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(800)).await;
    manager.shutdown(Duration::from_secs(1)).await;

    let starts: Vec<Duration> = starts.lock().unwrap().iter().map(|(_, at)| *at).collect();
    assert!(starts.len() >= 4, "performs in 800 ms: {starts:?}");
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(130),
            "start-to-start gap {gap:?} is under the 30 ms of work plus the 100 ms interval: {starts:?}"
        );
        assert!(
            gap < Duration::from_millis(160),
            "start-to-start gap {gap:?} is far over 130 ms: {starts:?}"
        );
    }
}

/// A perform that works 150 ms at a 100 ms interval overruns the default
/// factor of 1.1 and is counted in `keywheel_overruns_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_overrun_is_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (handler, starts) = Busy::new(Duration::from_millis(150));
    let manager = metrics::with_local_recorder(&recorder, || {
        Manager::builder(handler).name("overrun").build()
    })
    .unwrap();
    let options = EntryOptions::every(Duration::from_millis(100)).first_run(FirstRun::Immediately);
    manager.put(1, (), options).await.unwrap();

    tokio::time::sleep(Duration::from_millis(600)).await;
    manager.shutdown(Duration::from_secs(1)).await;
    let performs = starts.lock().unwrap().len() as u64;
    assert!(performs >= 2, "performs in 600 ms: {performs}");

    let overruns: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == keywheel::metrics::OVERRUNS_TOTAL)
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(count) => count,
            other => panic!(
                "{} is not a counter: {other:?}",
                keywheel::metrics::OVERRUNS_TOTAL
            ),
        })
        .sum();
    assert_eq!(
        overruns, performs,
        "overruns counted for {performs} performs of 150 ms at a 100 ms interval"
    );
}

/// One worker runs 100 performs that fell due together, 1 ms of work each:
/// the last one starts about 100 ms late, and the lateness figures show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lateness_counts_wait_behind_busy_batch() {
    let (handler, starts) = Busy::new(Duration::from_millis(1));
    let manager = Manager::builder(handler)
        .shards(1)
        .workers(1)
        .build()
        .unwrap();
    let options = EntryOptions::every(Duration::from_secs(60))
        .first_run(FirstRun::After(Duration::from_millis(50)));
    manager
        .put_many((0..100).map(|id| (id, (), options)))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;
    manager.shutdown(Duration::from_secs(1)).await;

    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 100, "performs of the 100 entries");
    let first = starts.iter().map(|(_, at)| *at).min().unwrap_or_default();
    let last = starts.iter().map(|(_, at)| *at).max().unwrap_or_default();
    let spread = last - first;
    assert!(
        spread >= Duration::from_millis(90),
        "the 100 performs of 1 ms on one worker spread over only {spread:?}"
    );

    let lateness = manager.lateness();
    let max_ms = lateness.max() / 1_000;
    let spread_ms = spread.as_millis() as u64;
    assert!(
        max_ms + 5 >= spread_ms,
        "largest lateness recorded is {max_ms} ms, but the last perform started {spread_ms} ms after the first"
    );
}
