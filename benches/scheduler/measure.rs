//! Process-level measurements: a counting allocator, resident memory, CPU
//! time, per-thread lateness histograms and a description of the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Wraps the system allocator and counts live heap bytes while enabled.
///
/// Counting costs an atomic add per allocation, so only the footprint and
/// churn runs turn it on, before they allocate anything that they measure.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments and
// only adds bookkeeping on the side.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc_zeroed(layout);
        if !pointer.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout);
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(pointer, layout, new_size);
        if !moved.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        moved
    }
}

/// Starts counting heap bytes. Bytes allocated before this call and freed
/// later make the count slightly low, so call it first thing in a run.
pub fn count_allocations() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Returns the heap bytes allocated and not freed since counting started.
pub fn live_heap_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Returns the resident set size of this process (`VmRSS`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Returns the user plus system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: `getrusage` writes into the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let to_duration = |time: libc::timeval| {
        Duration::from_secs(time.tv_sec as u64) + Duration::from_micros(time.tv_usec as u64)
    };
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

/// Returns freed heap pages to the system (glibc `malloc_trim`), so a
/// resident-memory reading shows live data rather than the allocator's cache.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory held by glibc's allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Highest value the lateness and latency histograms track: one hour in µs.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;

/// Returns an empty histogram of microseconds with the bounds that
/// `keywheel::Manager::lateness` uses, so snapshots can be subtracted.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Converts a duration to whole microseconds for a histogram.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .min(HISTOGRAM_MAX_MICROS)
}

type Slot = Arc<Mutex<Histogram<u64>>>;

/// Every thread's lateness histogram, for the competitors that are not
/// keywheel. A thread locks only its own slot, so the lock is uncontended
/// except while a snapshot is taken.
static SLOTS: Mutex<Vec<Slot>> = Mutex::new(Vec::new());

thread_local! {
    static THREAD_SLOT: RefCell<Option<Slot>> = const { RefCell::new(None) };
}

fn with_thread_slot(record: impl FnOnce(&mut Histogram<u64>)) {
    THREAD_SLOT.with(|cell| {
        let mut cell = cell.borrow_mut();
        let slot = cell.get_or_insert_with(|| {
            let slot = Arc::new(Mutex::new(new_histogram()));
            SLOTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(slot.clone());
            slot
        });
        let mut histogram = slot.lock().unwrap_or_else(|e| e.into_inner());
        record(&mut histogram);
    });
}

/// Records the lateness of one perform, in microseconds.
pub fn record_lateness(late_micros: u64) {
    with_thread_slot(|histogram| histogram.saturating_record(late_micros));
}

/// Records the lateness of several performs under one lock.
pub fn record_lateness_batch(late_micros: &[u64]) {
    with_thread_slot(|histogram| {
        for &value in late_micros {
            histogram.saturating_record(value);
        }
    });
}

/// Returns the sum of every thread's lateness histogram so far.
pub fn lateness_snapshot() -> Histogram<u64> {
    let mut total = new_histogram();
    let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for slot in slots {
        let histogram = slot.lock().unwrap_or_else(|e| e.into_inner());
        total.add(&*histogram).expect("histograms share bounds");
    }
    total
}

/// Returns `later - earlier` for two snapshots of one growing histogram.
pub fn window(later: &Histogram<u64>, earlier: &Histogram<u64>) -> Histogram<u64> {
    let mut difference = later.clone();
    difference
        .subtract(earlier)
        .expect("an earlier snapshot is contained in a later one");
    difference
}

/// Summarizes a histogram of microseconds as milliseconds.
pub fn summary_ms(histogram: &Histogram<u64>) -> Value {
    let ms = |micros: u64| micros as f64 / 1000.0;
    if histogram.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": histogram.len(),
        "p50": ms(histogram.value_at_quantile(0.5)),
        "p99": ms(histogram.value_at_quantile(0.99)),
        "p999": ms(histogram.value_at_quantile(0.999)),
        "max": ms(histogram.max()),
    })
}

/// Returns (quantile, milliseconds) points from 0 to 0.99999 and the
/// maximum, spaced evenly in log(1 / (1 - q)), for percentile plots.
pub fn quantile_curve(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return json!([]);
    }
    let mut points = Vec::new();
    for step in 0..=50 {
        let quantile = 1.0 - 10f64.powf(-f64::from(step) / 10.0);
        let value = histogram.value_at_quantile(quantile) as f64 / 1000.0;
        points.push(json!([quantile, value]));
    }
    points.push(json!([1.0, histogram.max() as f64 / 1000.0]));
    Value::Array(points)
}

/// Describes the machine, the toolchain and the library versions.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os = os_release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_string())
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": (memory_gib * 10.0).round() / 10.0,
        "os": os,
        "kernel": kernel,
        "rustc": rustc,
        "tokio": locked_version("tokio"),
        "tokio_util": locked_version("tokio-util"),
        "revision": revision(),
        "loadavg": load_average(),
    })
}

/// Returns the CPU time the whole machine has been busy, from `/proc/stat`
/// (user, nice, system, irq, softirq and steal, at 100 ticks per second).
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&index| ticks.get(index))
        .sum();
    Duration::from_millis(busy * 10)
}

/// Returns the CPU time of the child processes waited for so far.
pub fn children_cpu_time() -> Duration {
    // SAFETY: as in `cpu_time`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let to_duration = |time: libc::timeval| {
        Duration::from_secs(time.tv_sec as u64) + Duration::from_micros(time.tv_usec as u64)
    };
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

/// Returns the short commit of the measured tree, with "+changes" when
/// files under `src/` differ from it.
pub fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let changed =
        git(&["status", "--porcelain", "--", "src"]).is_some_and(|text| !text.trim().is_empty());
    format!("{}{}", commit.trim(), if changed { "+changes" } else { "" })
}

/// Returns the 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Returns the version of a package in the project's `Cargo.lock`.
fn locked_version(package: &str) -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .unwrap_or_default();
    let wanted = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == wanted {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = ")) {
                return version.trim_matches('"').to_string();
            }
        }
    }
    "unknown".into()
}
