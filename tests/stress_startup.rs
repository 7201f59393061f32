//! A herd at start-up, in real time: 20,000 initial entries, all with a 1 s
//! interval, on a pool of 8 workers.
//!
//! With jitter the first performs spread evenly over the first second and
//! stay spread in the next cycle. Without jitter they all fall due together.
//! The pool then drains them in the order they fell due, so no entry
//! performs twice before every entry has performed once.
//!
//! Each perform busy-waits 25 µs: 20,000 of them per second take half a
//! core, so a 2-core machine keeps up with the jittered herd and the test
//! measures the scheduler, not a saturated machine. The two tests take a
//! lock so they never run at the same time.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keywheel::{EntryOptions, FirstRun, Handler, Manager, Outcome};

const ENTRIES: u32 = 20_000;
const WORK: Duration = Duration::from_micros(25);
const INTERVAL: Duration = Duration::from_secs(1);
/// The maximum number of first performs in one 10 ms window: 3% of the entries.
const MAX_PER_WINDOW: usize = ENTRIES as usize * 3 / 100;

/// The shortest gap between two performs of one entry that still counts as
/// one perform per cycle.
///
/// NOTE: the engine stamps a callback that finishes on its first poll with
/// the time its batch started, so a start-to-start gap can be a few ms under
/// the interval. `engine_sync_work.rs` checks the exact fixed-delay gap.
const ONE_CYCLE: Duration = Duration::from_millis(900);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Start times of every perform, and how many entries have performed twice.
struct Trace {
    origin: Instant,
    starts: Mutex<Vec<(u32, Duration)>>,
    performs: Vec<AtomicU32>,
    performed_twice: AtomicUsize,
}

impl Trace {
    fn new() -> Arc<Self> {
        Arc::new(Trace {
            origin: Instant::now(),
            starts: Mutex::new(Vec::with_capacity(3 * ENTRIES as usize)),
            performs: (0..ENTRIES).map(|_| AtomicU32::new(0)).collect(),
            performed_twice: AtomicUsize::new(0),
        })
    }

    /// Returns the start times of each entry's performs, in order, by id.
    fn by_entry(&self) -> Vec<Vec<Duration>> {
        let mut by_entry = vec![Vec::new(); ENTRIES as usize];
        for (id, at) in self.starts.lock().unwrap().iter() {
            by_entry[*id as usize].push(*at);
        }
        by_entry
    }

    /// Waits until every entry has performed twice, or until `limit` after the origin.
    async fn wait_for_two_cycles(&self, limit: Duration) {
        while self.performed_twice.load(Ordering::Acquire) < ENTRIES as usize
            && self.origin.elapsed() < limit
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Herd {
    trace: Arc<Trace>,
}

impl Handler for Herd {
    type Id = u32;
    type Payload = ();
    type Request = ();
    type Reply = ();
    type Message = ();

    async fn perform(&self, id: &u32, _payload: &mut ()) -> Outcome<u32> {
        let started = Instant::now();
        let at = started - self.trace.origin;
        self.trace.starts.lock().unwrap().push((*id, at));
        if self.trace.performs[*id as usize].fetch_add(1, Ordering::AcqRel) == 1 {
            self.trace.performed_twice.fetch_add(1, Ordering::AcqRel);
        }
        while started.elapsed() < WORK {
            std::hint::spin_loop();
        }
        Outcome::Continue
    }
}

/// Returns the largest number of the given instants in one 10 ms window of
/// a fixed grid, and that window's start in ms.
fn busiest_window(instants: impl Iterator<Item = Duration>) -> (usize, u128) {
    let mut windows: std::collections::HashMap<u128, usize> = std::collections::HashMap::new();
    for at in instants {
        *windows.entry(at.as_millis() / 10).or_default() += 1;
    }
    windows
        .into_iter()
        .map(|(window, count)| (count, window * 10))
        .max()
        .unwrap_or((0, 0))
}

async fn start_herd(options: EntryOptions) -> (Arc<Trace>, Manager<Herd>, Duration) {
    let trace = Trace::new();
    let initial = (0..ENTRIES).map(|id| (id, (), options));
    let manager = Manager::builder(Herd {
        trace: trace.clone(),
    })
    .workers(8)
    .initial_entries(initial)
    .build()
    .unwrap();
    manager.ready().await;
    let loaded = trace.origin.elapsed();
    assert_eq!(manager.len(), ENTRIES as usize, "entries loaded at ready()");
    (trace, manager, loaded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_herd_spreads_first_performs() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let options = EntryOptions::every(INTERVAL)
        .first_run(FirstRun::Immediately)
        .jitter(INTERVAL);
    let (trace, manager, loaded) = start_herd(options).await;
    trace.wait_for_two_cycles(Duration::from_secs(4)).await;
    let report = manager.shutdown(Duration::from_secs(1)).await;
    let lateness = manager.lateness();
    eprintln!(
        "jittered herd: loaded in {loaded:?}, lateness p50 {} µs, p99 {} µs, max {} µs; {report:?}",
        lateness.value_at_quantile(0.5),
        lateness.value_at_quantile(0.99),
        lateness.max()
    );

    let by_entry = trace.by_entry();
    let missing: Vec<usize> = (0..by_entry.len())
        .filter(|&id| by_entry[id].len() < 2)
        .collect();
    assert!(
        missing.is_empty(),
        "{} entries performed fewer than twice, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // Due times are the put plus a jitter in [0, 1 s), and the load takes
    // `loaded`. The 100 ms more covers the lateness of a busy machine.
    let firsts: Vec<Duration> = by_entry.iter().map(|starts| starts[0]).collect();
    let last_first = firsts.iter().copied().max().unwrap_or_default();
    assert!(
        last_first < loaded + INTERVAL + Duration::from_millis(100),
        "a first perform started at {last_first:?}; the load ended at {loaded:?}"
    );
    // The load delays the puts by up to `loaded`, which thins the first
    // and the last tenth of the second. The eight tenths between must each
    // contain about a tenth of the entries.
    for tenth in 1..9u32 {
        let from = INTERVAL * tenth / 10;
        let to = INTERVAL * (tenth + 1) / 10;
        let count = firsts.iter().filter(|&&at| at >= from && at < to).count();
        assert!(
            (1_400..=2_600).contains(&count),
            "{count} of {ENTRIES} first performs in [{from:?}, {to:?}); about 2000 expected"
        );
    }
    let (most, window) = busiest_window(firsts.iter().copied());
    assert!(
        most <= MAX_PER_WINDOW,
        "{most} first performs in the 10 ms window at {window} ms; at most {MAX_PER_WINDOW} allowed"
    );

    let seconds: Vec<Duration> = by_entry.iter().map(|starts| starts[1]).collect();
    let (most, window) = busiest_window(seconds.iter().copied());
    assert!(
        most <= MAX_PER_WINDOW,
        "{most} second performs in the 10 ms window at {window} ms; the phases did not stay spread"
    );
    for (id, starts) in by_entry.iter().enumerate() {
        let gap = starts[1] - starts[0];
        assert!(
            gap >= ONE_CYCLE,
            "entry {id} performed again {gap:?} after its first perform"
        );
    }

    let recorded = trace.starts.lock().unwrap().len() as u64;
    assert_eq!(
        lateness.len(),
        recorded,
        "lateness samples against performs started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unjittered_herd_performs_each_once_per_cycle() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (trace, manager, loaded) = start_herd(EntryOptions::every(INTERVAL)).await;
    trace.wait_for_two_cycles(Duration::from_secs(5)).await;
    let report = manager.shutdown(Duration::from_secs(1)).await;

    let by_entry = trace.by_entry();
    let missing: Vec<usize> = (0..by_entry.len())
        .filter(|&id| by_entry[id].len() < 2)
        .collect();
    assert!(
        missing.is_empty(),
        "{} entries performed fewer than twice, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    let firsts: Vec<Duration> = by_entry.iter().map(|starts| starts[0]).collect();
    let first_first = firsts.iter().copied().min().unwrap_or_default();
    let last_first = firsts.iter().copied().max().unwrap_or_default();
    let earliest_second = by_entry
        .iter()
        .map(|starts| starts[1])
        .min()
        .unwrap_or_default();
    let lateness = manager.lateness();
    eprintln!(
        "herd without jitter: loaded in {loaded:?}, first round drained in {:?}, lateness p50 {} µs, p99 {} µs, max {} µs; {report:?}",
        last_first - first_first,
        lateness.value_at_quantile(0.5),
        lateness.value_at_quantile(0.99),
        lateness.max()
    );

    assert!(
        first_first >= INTERVAL,
        "a first perform started at {first_first:?}, before its 1 s interval"
    );
    assert!(
        last_first < earliest_second,
        "an entry performed twice ({earliest_second:?}) before every entry performed once ({last_first:?})"
    );
    for (id, starts) in by_entry.iter().enumerate() {
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= ONE_CYCLE,
                "entry {id} performed again {gap:?} after its previous perform"
            );
        }
    }

    let recorded = trace.starts.lock().unwrap().len() as u64;
    assert_eq!(
        lateness.len(),
        recorded,
        "lateness samples against performs started"
    );
    assert!(
        lateness.value_at_quantile(0.99) > 0,
        "lateness p99 of a herd that fell due at once"
    );
}
