//! The workloads, each run in a child process with a fresh runtime; every
//! function returns the run's figures as one JSON object.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::competitors::{Competitor, Design, KeySpec, EARLY_PERFORMS, LONG_ID_FLOOR};
use crate::measure::{self, micros, new_histogram, summary_ms};

/// Settings of one run, as the parent process sends them.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub workload: String,
    pub design: Design,
    pub keys: u64,
    /// Performs per second the key set asks for (sweep, churn and call runs).
    pub demand: f64,
    pub warmup: Duration,
    pub window: Duration,
    pub seed: u64,
    /// Calls per second (call runs) or del+put pairs per second (churn runs).
    pub rate: f64,
    /// Probes the timer loops for stalls.
    pub probe: bool,
}

/// Runs one workload on a fresh two-worker runtime and returns its figures.
pub fn run(spec: &RunSpec) -> Value {
    if matches!(spec.workload.as_str(), "w1" | "w3") {
        measure::count_allocations();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        match spec.workload.as_str() {
            "w1" => footprint(spec).await,
            "w2" => sweep(spec).await,
            "w3" => churn(spec).await,
            "w4" => calls(spec).await,
            "w5" => herd(spec).await,
            "w6" => horizon(spec).await,
            other => json!({ "error": format!("unknown workload {other:?}") }),
        }
    })
}

/// A pseudo-random number from a seed and a stream position (splitmix64).
pub fn mix(seed: u64, position: u64) -> u64 {
    let mut z = seed.wrapping_add(position.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Key `id` with an interval uniform in `[low_ms, high_ms]` and a first due
/// time uniform in `[0, interval)`, so due times are spread from the start.
fn spread_key(seed: u64, id: u64, low_ms: u64, high_ms: u64) -> KeySpec {
    let interval_ms = low_ms + mix(seed, id * 2) % (high_ms - low_ms + 1);
    let first_ms = mix(seed, id * 2 + 1) % interval_ms;
    KeySpec {
        id,
        interval: Duration::from_millis(interval_ms),
        first: Duration::from_millis(first_ms),
    }
}

/// The interval range `[a, 2a]` ms for which `keys` keys ask for `demand`
/// performs per second: the mean rate of 1/I over that range is ln 2 / a.
fn sweep_range(keys: u64, demand: f64) -> (u64, u64) {
    let low = (keys as f64 * std::f64::consts::LN_2 / demand * 1000.0).round() as u64;
    let low = low.max(1);
    (low, low * 2)
}

/// Loads the sweep key set; returns the competitor, the load time and the
/// exact demand of the generated intervals.
async fn load_sweep(spec: &RunSpec) -> (Arc<Competitor>, Duration, f64) {
    let (low, high) = sweep_range(spec.keys, spec.demand);
    let seed = spec.seed;
    let key = move |id| spread_key(seed, id, low, high);
    let exact: f64 = (0..spec.keys)
        .map(|id| 1.0 / key(id).interval.as_secs_f64())
        .sum();

    let competitor = Arc::new(Competitor::start(spec.design));
    let started = Instant::now();
    competitor.load(spec.keys, key, started).await;
    (competitor, started.elapsed(), exact)
}

/// What happened between two points of a run.
struct Window {
    lateness: Histogram<u64>,
    cpu: Duration,
    opened: Instant,
}

impl Window {
    fn open(competitor: &Competitor) -> Self {
        // Starts keywheel's own measurement of the longest loop turn.
        let _ = competitor.take_longest_turn();
        Window {
            lateness: competitor.lateness(),
            cpu: measure::cpu_time(),
            opened: Instant::now(),
        }
    }

    fn close(self, competitor: &Competitor) -> Value {
        let elapsed = self.opened.elapsed().as_secs_f64();
        let cpu = (measure::cpu_time() - self.cpu).as_secs_f64();
        let lateness = measure::window(&competitor.lateness(), &self.lateness);
        let performs = lateness.len();
        let cpu_per_million = if performs == 0 {
            Value::Null
        } else {
            json!(cpu / performs as f64 * 1e6)
        };
        json!({
            "window_s": elapsed,
            "performs": performs,
            "achieved": performs as f64 / elapsed,
            "cpu_s": cpu,
            "cores_used": cpu / elapsed,
            "cpu_s_per_million": cpu_per_million,
            "lateness_ms": summary_ms(&lateness),
            "lateness_curve": measure::quantile_curve(&lateness),
            "turn_max_ms": competitor
                .take_longest_turn()
                .map(|turn| turn.as_secs_f64() * 1000.0),
        })
    }
}

/// Round trips of `contains` to every timer loop, every few milliseconds.
/// A loop answers between turns, so the longest round trip bounds its
/// longest turn from above (plus scheduling delay).
struct Probe {
    stop: Arc<AtomicBool>,
    max_micros: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Often enough to catch most stalls of a few ms. At 32 shards this is
/// 3,200 round trips per second, an estimated 1% of one core.
const PROBE_PERIOD: Duration = Duration::from_millis(10);

impl Probe {
    fn start(competitor: &Arc<Competitor>, keys: u64, enabled: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max_micros = Arc::new(AtomicU64::new(0));
        let ids = if enabled {
            competitor.probe_ids(keys)
        } else {
            Vec::new()
        };
        let tasks = ids
            .into_iter()
            .map(|id| {
                let (competitor, stop, max_micros) =
                    (competitor.clone(), stop.clone(), max_micros.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        competitor.contains(id).await;
                        max_micros.fetch_max(micros(sent.elapsed()), Ordering::Relaxed);
                        tokio::time::sleep(PROBE_PERIOD).await;
                    }
                })
            })
            .collect();
        Probe {
            stop,
            max_micros,
            tasks,
        }
    }

    /// Stops probing; returns the longest round trip in ms, or null if nothing was probed.
    async fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let probed = !self.tasks.is_empty();
        for task in self.tasks {
            let _ = task.await;
        }
        if probed {
            json!(self.max_micros.load(Ordering::Relaxed) as f64 / 1000.0)
        } else {
            Value::Null
        }
    }
}

/// W1: memory per key after a bulk load and a settle.
async fn footprint(spec: &RunSpec) -> Value {
    let rss_before = measure::rss_bytes();
    let heap_before = measure::live_heap_bytes();

    let seed = spec.seed;
    let key = move |id| spread_key(seed, id, 1_000, 60_000);
    let competitor = Competitor::start(spec.design);
    let started = Instant::now();
    competitor.load(spec.keys, key, started).await;
    let load_s = started.elapsed().as_secs_f64();

    tokio::time::sleep(spec.window).await;
    let per_key = |bytes: i64| bytes as f64 / spec.keys as f64;
    let rss = measure::rss_bytes() as i64 - rss_before as i64;
    let heap = measure::live_heap_bytes() - heap_before;
    measure::trim_heap();
    let rss_trimmed = measure::rss_bytes() as i64 - rss_before as i64;
    json!({
        "load_s": load_s,
        "rss_bytes_per_key": per_key(rss),
        "rss_trimmed_bytes_per_key": per_key(rss_trimmed),
        "heap_bytes_per_key": per_key(heap),
    })
}

/// W2: performs at a demanded rate; lateness, achieved rate and CPU.
async fn sweep(spec: &RunSpec) -> Value {
    let (competitor, load, exact) = load_sweep(spec).await;
    tokio::time::sleep(spec.warmup).await;

    let probe = Probe::start(&competitor, spec.keys, spec.probe);
    let window = Window::open(&competitor);
    tokio::time::sleep(spec.window).await;
    let mut result = window.close(&competitor);
    result["probe_max_ms"] = probe.finish().await;
    result["load_s"] = json!(load.as_secs_f64());
    result["demand_exact"] = json!(exact);
    result
}

/// W3: del+put pairs on random keys on top of a sweep load; memory before,
/// during and after.
async fn churn(spec: &RunSpec) -> Value {
    let (competitor, _, exact) = load_sweep(spec).await;
    tokio::time::sleep(spec.warmup).await;
    // The harness's own state exists before the first reading, so the
    // readings differ only by what the design kept.
    let (low, high) = sweep_range(spec.keys, spec.demand);
    let ops = Arc::new(Mutex::new(new_histogram()));
    let mut live: Vec<u64> = (0..spec.keys).collect();
    let planned = (spec.window.as_secs_f64() * spec.rate) as usize + 1;
    let mut pending = Vec::with_capacity(planned);
    let rss_before = measure::rss_bytes();
    let heap_before = measure::live_heap_bytes();

    let rss_peak = Arc::new(AtomicU64::new(rss_before));
    let window = Window::open(&competitor);
    let mut next_id = spec.keys;
    let mut issued = 0u64;
    let mut ticks = 0u64;
    let started = Instant::now();
    while started.elapsed() < spec.window {
        let target = (started.elapsed().as_secs_f64() * spec.rate) as u64;
        while issued < target {
            let slot = (mix(spec.seed ^ 0xC4, issued) % live.len() as u64) as usize;
            let old = std::mem::replace(&mut live[slot], next_id);
            let new = spread_key(spec.seed, next_id, low, high);
            next_id += 1;
            issued += 1;
            let (competitor, ops) = (competitor.clone(), ops.clone());
            pending.push(tokio::spawn(async move {
                let sent = Instant::now();
                competitor.del(old).await;
                competitor.put(new).await;
                let took = micros(sent.elapsed());
                ops.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record(took);
            }));
        }
        ticks += 1;
        if ticks.is_multiple_of(50) {
            rss_peak.fetch_max(measure::rss_bytes(), Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for task in pending.drain(..) {
        let _ = task.await;
    }
    let mut result = window.close(&competitor);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = measure::rss_bytes();
    let heap_after = measure::live_heap_bytes();
    measure::trim_heap();
    let rss_after_trimmed = measure::rss_bytes();
    let ops = ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let per_key = |bytes: u64| bytes as f64 / spec.keys as f64;
    result["demand_exact"] = json!(exact);
    result["pairs"] = json!(issued);
    result["pair_ms"] = summary_ms(&ops);
    result["rss_before_per_key"] = json!(per_key(rss_before));
    result["rss_peak_per_key"] = json!(per_key(rss_peak.load(Ordering::Relaxed)));
    result["rss_after_per_key"] = json!(per_key(rss_after));
    result["rss_after_trimmed_per_key"] = json!(per_key(rss_after_trimmed));
    result["rss_growth"] = json!(rss_after as f64 / rss_before as f64 - 1.0);
    result["heap_growth"] = json!(heap_after as f64 / heap_before as f64 - 1.0);
    result
}

/// W4: open-loop calls to random keys on top of a sweep load. Each call's
/// latency runs from its scheduled send time, so a stalled sender or a
/// slow reply cannot hide the calls that should have gone out meanwhile.
async fn calls(spec: &RunSpec) -> Value {
    let (competitor, _, exact) = load_sweep(spec).await;
    tokio::time::sleep(spec.warmup).await;

    let probe = Probe::start(&competitor, spec.keys, spec.probe);
    let window = Window::open(&competitor);
    // Per call: from the scheduled send time, and from the moment the
    // calling task started (the design's own round trip).
    let latencies = Arc::new(Mutex::new((new_histogram(), new_histogram())));
    let failed = Arc::new(AtomicU64::new(0));
    let sender = if competitor.has_calls() {
        let handle = tokio::runtime::Handle::current();
        let (competitor, latencies, failed) =
            (competitor.clone(), latencies.clone(), failed.clone());
        let (rate, window, keys, seed) = (spec.rate, spec.window, spec.keys, spec.seed);
        // An OS thread sends, so its own timing does not depend on the
        // runtime under test.
        Some(std::thread::spawn(move || {
            let start = Instant::now();
            let mut pending = Vec::new();
            for k in 0u64.. {
                let scheduled = start + Duration::from_secs_f64(k as f64 / rate);
                if scheduled >= start + window {
                    break;
                }
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let id = mix(seed ^ 0xCA11, k) % keys;
                let (competitor, latencies, failed) =
                    (competitor.clone(), latencies.clone(), failed.clone());
                pending.push(handle.spawn(async move {
                    let started = Instant::now();
                    if !competitor.call(id).await {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut latencies = latencies.lock().unwrap_or_else(|e| e.into_inner());
                    latencies.0.saturating_record(micros(scheduled.elapsed()));
                    latencies.1.saturating_record(micros(started.elapsed()));
                }));
            }
            pending
        }))
    } else {
        tokio::time::sleep(spec.window).await;
        None
    };
    if let Some(sender) = sender {
        let pending = tokio::task::spawn_blocking(move || sender.join().unwrap_or_default())
            .await
            .unwrap_or_default();
        for call in pending {
            let _ = call.await;
        }
    }
    let mut result = window.close(&competitor);
    let latencies = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    result["probe_max_ms"] = probe.finish().await;
    result["demand_exact"] = json!(exact);
    result["calls_failed"] = json!(failed.load(Ordering::Relaxed));
    result["call_ms"] = summary_ms(&latencies.0);
    result["call_round_trip_ms"] = summary_ms(&latencies.1);
    result
}

/// W5: every key due at the same instant, once; how long until all ran.
async fn herd(spec: &RunSpec) -> Value {
    let herd_after = spec.warmup;
    let competitor = Competitor::start(spec.design);
    let base = Instant::now();
    let key = move |id| KeySpec {
        id,
        interval: Duration::from_secs(3600),
        first: herd_after,
    };
    let window = Window::open(&competitor);
    competitor.load(spec.keys, key, base).await;
    let load_s = base.elapsed().as_secs_f64();

    let give_up = base + herd_after + Duration::from_secs(60);
    let mut drained = None;
    loop {
        let performed = competitor.lateness().len() - window.lateness.len();
        if performed >= spec.keys {
            drained = Some((Instant::now() - (base + herd_after)).as_secs_f64());
            break;
        }
        if Instant::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut result = window.close(&competitor);
    result["load_s"] = json!(load_s);
    result["drained_s"] = json!(drained);
    result
}

/// W6: keys with 1 h, 1 day and 364 day intervals next to 1,000 keys at
/// 100 ms; the long ones must not perform, and keywheel must report their
/// next due time one interval after the put.
async fn horizon(spec: &RunSpec) -> Value {
    const DAY: u64 = 24 * 3600;
    const CONTROL_KEYS: u64 = 1000;
    let intervals = [3600, DAY, 364 * DAY].map(Duration::from_secs);
    let competitor = Competitor::start(spec.design);
    let base = Instant::now();
    let long = move |i: u64| {
        let interval = intervals[(i % 3) as usize];
        KeySpec {
            id: LONG_ID_FLOOR + i,
            interval,
            first: interval,
        }
    };
    competitor.load(spec.keys, long, base).await;
    let control = |id| KeySpec {
        id,
        interval: Duration::from_millis(100),
        first: Duration::from_millis(100),
    };
    competitor.load(CONTROL_KEYS, control, base).await;

    let window = Window::open(&competitor);
    tokio::time::sleep(spec.window).await;
    let mut result = window.close(&competitor);
    let (checked, misplaced) = competitor.check_next_due(spec.keys, long, base).await;
    result["early_performs"] = json!(EARLY_PERFORMS.load(Ordering::Relaxed));
    result["next_due_checked"] = json!(checked);
    result["next_due_misplaced"] = json!(misplaced);
    result
}
