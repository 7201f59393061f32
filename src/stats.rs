//! Per-worker tallies of the hot path, handed to metrics in bulk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use metrics::{Counter, Histogram as MetricHistogram, Label};

use crate::error::{Error, OptionsError};
use crate::handler::OutcomeKind;
use crate::metrics as names;
use crate::pool::Ran;

/// How often a worker publishes its tallies, busy or idle: the published
/// figures lag behind by at most this much.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Highest lateness the in-process histogram tracks: one hour, in microseconds.
const LATENESS_MAX_MICROS: u64 = 3_600_000_000;

/// Values of the `result` label of `keywheel_calls_total`.
const CALL_RESULTS: [&str; 7] = [
    "ok",
    "not_found",
    "timeout",
    "panicked",
    "shutting_down",
    "overloaded",
    "store_failed",
];
/// Values of the `result` label of `keywheel_casts_total`.
const CAST_RESULTS: [&str; 4] = ["ok", "not_found", "shutting_down", "overloaded"];

/// Returns the `result` label of a caller's result. Errors that a call or
/// cast never returns (routing off, invalid options) count as
/// `shutting_down`, the other case where nothing ran.
fn result_label<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::NotFound { .. } | Error::NoRoute) => "not_found",
        Err(Error::Timeout { .. }) => "timeout",
        Err(Error::Panicked { .. }) => "panicked",
        Err(Error::Overloaded { .. }) => "overloaded",
        Err(Error::Store { .. }) => "store_failed",
        Err(
            Error::ShuttingDown
            | Error::RoutingOff
            | Error::InvalidOptions(_)
            | Error::Codec { .. },
        ) => "shutting_down",
    }
}

/// Returns the position of `label` in `labels`, or 0 (`ok`) for a label
/// the list lacks.
fn label_index(labels: &[&str], label: &str) -> usize {
    labels.iter().position(|known| *known == label).unwrap_or(0)
}

const PANIC_CALLBACKS: [&str; 4] = ["perform", "call", "cast", "terminate"];
const TERMINATE_REASONS: [&str; 6] = [
    "deleted", "replaced", "halted", "moved", "panicked", "shutdown",
];

/// Handles for events counted outside the pool, one at a time.
pub(crate) struct Counters {
    pub(crate) puts_inserted: Counter,
    pub(crate) puts_replaced: Counter,
    pub(crate) puts_exists: Counter,
    pub(crate) deletes: Counter,
    /// Calls by their result as the caller saw it, indexed like [`CALL_RESULTS`].
    calls: [Counter; 7],
    /// Casts by their result as the caller saw it, indexed like [`CAST_RESULTS`].
    casts: [Counter; 4],
    pub(crate) clamped: Counter,
    pub(crate) overruns: Counter,
    rejected_interval: Counter,
    rejected_first_run: Counter,
    rejected_jitter: Counter,
}

impl Counters {
    fn new(manager: &str) -> Self {
        let labeled = |name: &'static str, key: &'static str, value: &'static str| {
            metrics::counter!(
                name,
                vec![
                    Label::new("manager", manager.to_string()),
                    Label::new(key, value)
                ]
            )
        };
        let plain = |name: &'static str| {
            metrics::counter!(name, vec![Label::new("manager", manager.to_string())])
        };
        Counters {
            puts_inserted: labeled(names::PUTS_TOTAL, "result", "inserted"),
            puts_replaced: labeled(names::PUTS_TOTAL, "result", "replaced"),
            puts_exists: labeled(names::PUTS_TOTAL, "result", "exists"),
            deletes: plain(names::DELETES_TOTAL),
            calls: CALL_RESULTS.map(|result| labeled(names::CALLS_TOTAL, "result", result)),
            casts: CAST_RESULTS.map(|result| labeled(names::CASTS_TOTAL, "result", result)),
            clamped: plain(names::CLAMPED_INTERVALS_TOTAL),
            overruns: plain(names::OVERRUNS_TOTAL),
            rejected_interval: labeled(names::REJECTED_TOTAL, "reason", "interval"),
            rejected_first_run: labeled(names::REJECTED_TOTAL, "reason", "first_run"),
            rejected_jitter: labeled(names::REJECTED_TOTAL, "reason", "jitter"),
        }
    }

    /// Counts a call by the result its caller gets.
    pub(crate) fn count_call<T>(&self, result: &Result<T, Error>) {
        self.calls[label_index(&CALL_RESULTS, result_label(result))].increment(1);
    }

    /// Counts a cast by the result its caller gets. A cast that panics
    /// later, on the pool, shows in `keywheel_panics_total` only.
    pub(crate) fn count_cast(&self, result: &Result<(), Error>) {
        // A cast has no timeout or panic result for its caller.
        self.casts[label_index(&CAST_RESULTS, result_label(result))].increment(1);
    }

    /// Counts an input rejected by options validation.
    pub(crate) fn count_rejected(&self, error: &OptionsError) {
        match error {
            OptionsError::ZeroInterval => self.rejected_interval.increment(1),
            OptionsError::TooLong { field, .. } => match *field {
                "first_run" => self.rejected_first_run.increment(1),
                "jitter" => self.rejected_jitter.increment(1),
                _ => self.rejected_interval.increment(1),
            },
        }
    }
}

/// Metric handles and in-process figures shared by a manager's workers.
pub(crate) struct ManagerStats {
    pub(crate) counters: Counters,
    lateness: Mutex<Histogram<u64>>,
    performs: AtomicU64,
    lateness_metric: MetricHistogram,
    /// Count and sum (nanoseconds) of lateness per bucket since the last
    /// [`publish_lateness`](ManagerStats::publish_lateness).
    lateness_buckets: Vec<(AtomicU64, AtomicU64)>,
    performs_by_outcome: [Counter; 5],
    panics_by_callback: [Counter; 4],
    terminates_by_reason: [Counter; 6],
}

impl ManagerStats {
    pub(crate) fn new(manager: &str) -> Self {
        let label = |key: &'static str, value: &'static str| {
            vec![
                Label::new("manager", manager.to_string()),
                Label::new(key, value),
            ]
        };
        ManagerStats {
            counters: Counters::new(manager),
            lateness: Mutex::new(new_lateness_histogram()),
            performs: AtomicU64::new(0),
            lateness_metric: metrics::histogram!(
                names::PERFORM_LATENESS_SECONDS,
                vec![Label::new("manager", manager.to_string())]
            ),
            lateness_buckets: (0..=names::LATENESS_BUCKETS.len())
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            performs_by_outcome: OutcomeKind::ALL.map(|kind| {
                metrics::counter!(names::PERFORMS_TOTAL, label("outcome", kind.as_str()))
            }),
            panics_by_callback: PANIC_CALLBACKS.map(|callback| {
                metrics::counter!(names::PANICS_TOTAL, label("callback", callback))
            }),
            terminates_by_reason: TERMINATE_REASONS
                .map(|reason| metrics::counter!(names::TERMINATES_TOTAL, label("reason", reason))),
        }
    }

    /// Records the lateness gathered since the last call into the metrics
    /// histogram: one sample per non-empty bucket, the bucket's mean with
    /// its count. The gauge task calls this once per gauge interval, so the
    /// recorder receives at most 16 samples per interval however many
    /// performs ran.
    pub(crate) fn publish_lateness(&self) {
        for (count, sum_nanos) in &self.lateness_buckets {
            let count = count.swap(0, Ordering::Relaxed);
            let sum_nanos = sum_nanos.swap(0, Ordering::Relaxed);
            if count > 0 {
                // The mean of samples in (low, high] lies in (low, high], so
                // the exporter files all of them in the same bucket.
                let mean = sum_nanos as f64 / count as f64 / 1e9;
                self.lateness_metric.record_many(mean, count as usize);
            }
        }
    }

    /// Returns a copy of the lateness histogram, in microseconds.
    pub(crate) fn lateness(&self) -> Histogram<u64> {
        self.lateness
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Returns how many performs have finished.
    pub(crate) fn performs(&self) -> u64 {
        self.performs.load(Ordering::Relaxed)
    }
}

fn new_lateness_histogram() -> Histogram<u64> {
    // Two significant digits over 1 µs to 1 h: about 1% error and 3,000
    // counters, so merging a worker's copy (every 100 ms) stays cheap.
    Histogram::new_with_bounds(1, LATENESS_MAX_MICROS, 2).expect("the bounds are valid constants")
}

/// A worker's tallies since its last flush.
pub(crate) struct WorkerStats {
    shared: Arc<ManagerStats>,
    /// 32-bit counts: a worker flushes every 100 ms, far below 4 billion
    /// samples, and the 65 copies of a default manager take half the memory.
    lateness: Histogram<u32>,
    /// Count and sum (nanoseconds) of lateness samples per bucket; the last
    /// element is the bucket above the highest bound.
    buckets: Vec<(u64, u64)>,
    performs: [u64; 5],
    panics: [u64; 4],
    terminates: [u64; 6],
    dirty: bool,
    last_flush: std::time::Instant,
}

impl WorkerStats {
    pub(crate) fn new(shared: Arc<ManagerStats>) -> Self {
        WorkerStats {
            shared,
            lateness: Histogram::new_with_bounds(1, LATENESS_MAX_MICROS, 2)
                .expect("the bounds are valid constants"),
            buckets: vec![(0, 0); names::LATENESS_BUCKETS.len() + 1],
            performs: [0; 5],
            panics: [0; 4],
            terminates: [0; 6],
            dirty: false,
            last_flush: std::time::Instant::now(),
        }
    }

    pub(crate) fn record_lateness(&mut self, lateness: Duration) {
        let micros = u64::try_from(lateness.as_micros()).unwrap_or(u64::MAX);
        self.lateness
            .saturating_record(micros.clamp(1, LATENESS_MAX_MICROS));

        let seconds = lateness.as_secs_f64();
        let bucket = names::LATENESS_BUCKETS.partition_point(|&bound| bound < seconds);
        let (count, sum_nanos) = &mut self.buckets[bucket];
        *count += 1;
        *sum_nanos += u64::try_from(lateness.as_nanos()).unwrap_or(u64::MAX);
        self.dirty = true;
    }

    pub(crate) fn record_perform<I>(&mut self, ran: &Ran<I>) {
        match ran {
            Ran::Outcome(outcome) => self.performs[outcome.kind() as usize] += 1,
            Ran::Panicked(_) => {
                self.performs[OutcomeKind::Panicked as usize] += 1;
                self.panics[0] += 1;
            }
            Ran::Skipped | Ran::Cancelled => {}
        }
        self.dirty = true;
    }

    /// Counts a panic of a call or cast; their results are counted where
    /// the caller receives them.
    pub(crate) fn record_call<I>(&mut self, ran: &Ran<I>) {
        if let Ran::Panicked(_) = ran {
            self.panics[1] += 1;
            self.dirty = true;
        }
    }

    pub(crate) fn record_cast<I>(&mut self, ran: &Ran<I>) {
        if let Ran::Panicked(_) = ran {
            self.panics[2] += 1;
            self.dirty = true;
        }
    }

    pub(crate) fn record_panic(&mut self, callback: &str) {
        if let Some(index) = PANIC_CALLBACKS.iter().position(|c| *c == callback) {
            self.panics[index] += 1;
            self.dirty = true;
        }
    }

    pub(crate) fn record_terminate(&mut self, reason: &str) {
        if let Some(index) = TERMINATE_REASONS.iter().position(|r| *r == reason) {
            self.terminates[index] += 1;
            self.dirty = true;
        }
    }

    /// Returns how long until unpublished tallies are due to be published,
    /// or `None` when there is nothing to publish.
    pub(crate) fn until_flush(&self) -> Option<Duration> {
        self.dirty
            .then(|| FLUSH_EVERY.saturating_sub(self.last_flush.elapsed()))
    }

    /// Publishes the tallies if the last flush is older than [`FLUSH_EVERY`].
    pub(crate) fn flush_if_stale(&mut self) {
        if self.dirty && self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Publishes the tallies to the shared histogram and the metric handles.
    pub(crate) fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.last_flush = std::time::Instant::now();

        {
            let mut shared = self
                .shared
                .lateness
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            // Both histograms have the same bounds, so every value fits.
            for bucket in self.lateness.iter_recorded() {
                shared.saturating_record_n(
                    bucket.value_iterated_to(),
                    u64::from(bucket.count_at_value()),
                );
            }
        }
        self.lateness.reset();

        for ((count, sum_nanos), (shared_count, shared_sum)) in
            self.buckets.iter_mut().zip(&self.shared.lateness_buckets)
        {
            if *count > 0 {
                shared_count.fetch_add(std::mem::take(count), Ordering::Relaxed);
                shared_sum.fetch_add(std::mem::take(sum_nanos), Ordering::Relaxed);
            }
        }

        let performed: u64 = self.performs.iter().sum();
        self.shared.performs.fetch_add(performed, Ordering::Relaxed);
        publish(&mut self.performs, &self.shared.performs_by_outcome);
        publish(&mut self.panics, &self.shared.panics_by_callback);
        publish(&mut self.terminates, &self.shared.terminates_by_reason);
    }
}

fn publish<const N: usize>(counts: &mut [u64; N], counters: &[Counter; N]) {
    for (count, counter) in counts.iter_mut().zip(counters) {
        if *count > 0 {
            counter.increment(*count);
            *count = 0;
        }
    }
}
