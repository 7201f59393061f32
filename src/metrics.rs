//! Metric names, descriptions and bucket bounds.
//!
//! The library records through the `metrics` facade and never installs a
//! recorder. Hot paths use handles registered once per manager (a macro
//! lookup costs a registry search per event), and the per-perform figures
//! are added up in each worker and handed over in bulk (see `stats`).
//!
//! Names start with `keywheel_`, counters end in `_total`, and durations are
//! histograms in seconds. Labels come from small fixed sets (`manager`,
//! `outcome`, `result`, `reason`, `callback`, `shard`), and an id is never a
//! label. [`describe`] registers a description for every name here.
//!
//! # Histogram samples and upkeep
//!
//! An exporter such as metrics-exporter-prometheus (0.18) buffers every
//! recorded histogram sample until its upkeep folds the buffer into the
//! buckets. Upkeep runs on a render (a scrape) and whenever the program
//! asks for it, so with no scrapes and no upkeep the buffer only grows.
//!
//! The library never records one sample per perform. Workers count
//! lateness per bucket (with the sum of each bucket's samples), the counts
//! are added up per manager, and once per gauge interval (1 s by default)
//! the manager records each non-empty bucket's mean with its count
//! (`record_many`). With [`LATENESS_BUCKETS`] configured as the exporter's
//! bounds for [`PERFORM_LATENESS_SECONDS`], the exported bucket counts and
//! sum are exact, and a recorder that implements `record_many` natively
//! stores at most 16 values per manager and interval.
//!
//! NOTE: metrics-exporter-prometheus 0.18 implements `record_many` as one
//! stored sample per count, so its buffer still grows with the perform rate
//! until the next upkeep (about 24 bytes per perform: 48 MB at 2 million
//! performs per second with the binary's 1 s upkeep). Exporting the bucket counts
//! without that buffer needs a recorder that stores counts, not samples.
//!
//! The program that installs the recorder owns its upkeep:
//!
//! - `keywheel serve` installs the recorder once per process and runs
//!   upkeep every second on a thread of its own, scraped or not.
//! - A program that embeds the library and installs
//!   `PrometheusBuilder::install()` (the exporter's own HTTP listener) gets
//!   the exporter's upkeep task, every 5 s by default.
//! - A program that uses `install_recorder()` or `build_recorder()` and
//!   serves `render()` itself must call `PrometheusHandle::run_upkeep()` on
//!   a timer. Nothing else does it.
//! - With any other recorder, its own rules for buffering apply.
//!
//! Configure explicit buckets for [`PERFORM_LATENESS_SECONDS`] in the
//! exporter (`set_buckets_for_metric`); without them
//! metrics-exporter-prometheus renders a histogram as a summary, which
//! cannot be aggregated across instances or shown as a heatmap.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Performs by outcome (`outcome`: continue, reschedule, halt, move, panicked).
pub const PERFORMS_TOTAL: &str = "keywheel_performs_total";
/// Start of a perform minus its due time, in seconds.
pub const PERFORM_LATENESS_SECONDS: &str = "keywheel_perform_lateness_seconds";
/// Calls by the result their caller got (`result`: ok, not_found, timeout,
/// panicked, shutting_down, overloaded, store_failed).
pub const CALLS_TOTAL: &str = "keywheel_calls_total";
/// Casts by the result their caller got (`result`: ok, not_found,
/// shutting_down, overloaded). A cast that panics later on the pool counts
/// in [`PANICS_TOTAL`] with `callback="cast"`.
pub const CASTS_TOTAL: &str = "keywheel_casts_total";
/// Puts by result (`result`: inserted, replaced, exists).
pub const PUTS_TOTAL: &str = "keywheel_puts_total";
/// Deletes of existing entries.
pub const DELETES_TOTAL: &str = "keywheel_deletes_total";
/// Panics caught in callbacks (`callback`: perform, call, cast, terminate).
pub const PANICS_TOTAL: &str = "keywheel_panics_total";
/// `terminate` callbacks run, by `reason`.
pub const TERMINATES_TOTAL: &str = "keywheel_terminates_total";
/// Performs that ran longer than the overrun factor times their interval.
pub const OVERRUNS_TOTAL: &str = "keywheel_overruns_total";
/// Inputs rejected by validation (`reason`: interval, first_run, jitter).
pub const REJECTED_TOTAL: &str = "keywheel_rejected_total";
/// Rescheduled intervals clamped into range.
pub const CLAMPED_INTERVALS_TOTAL: &str = "keywheel_clamped_intervals_total";
/// Entries in the manager.
pub const ENTRIES: &str = "keywheel_entries";
/// Entries per shard (`shard`).
pub const SHARD_ENTRIES: &str = "keywheel_shard_entries";
/// Workers running a callback batch.
pub const POOL_BUSY: &str = "keywheel_pool_busy";
/// Jobs handed to the worker pool and not yet started.
pub const POOL_QUEUED: &str = "keywheel_pool_queued";
/// The size of the worker pool.
pub const POOL_WORKERS: &str = "keywheel_pool_workers";
/// Performs that are due and not started.
pub const DUE_NOT_STARTED: &str = "keywheel_due_not_started";
/// How long the oldest due, not started perform has been waiting, in seconds.
pub const OLDEST_OVERDUE_SECONDS: &str = "keywheel_oldest_overdue_seconds";
/// The longest turn of any shard loop during the last gauge interval, in
/// seconds: one turn applies finished callbacks, commands and due timers.
pub const SHARD_TURN_MAX_SECONDS: &str = "keywheel_shard_turn_max_seconds";
/// Store commits (group commits, each with one sync), with persistence on.
pub const STORE_COMMITS_TOTAL: &str = "keywheel_store_commits_total";
/// Records written to the store, by `op` (put, delete).
pub const STORE_WRITES_TOTAL: &str = "keywheel_store_writes_total";
/// Store commits that failed; after one, no further writes are committed.
pub const STORE_ERRORS_TOTAL: &str = "keywheel_store_errors_total";
/// Duration of one store commit, sync included, in seconds.
pub const STORE_COMMIT_SECONDS: &str = "keywheel_store_commit_seconds";
/// Records in one store commit.
pub const STORE_BATCH_OPS: &str = "keywheel_store_batch_ops";
/// Store writes sent and not yet committed.
pub const STORE_QUEUED_OPS: &str = "keywheel_store_queued_ops";
/// Entries read back from the store when the manager opened.
pub const RECOVERED_ENTRIES: &str = "keywheel_recovered_entries";
/// Recovered entries whose due time had passed while the process was down.
pub const RECOVERY_OVERDUE_ENTRIES: &str = "keywheel_recovery_overdue_entries";
/// How long reading the store back took when the manager opened, in seconds.
pub const RECOVERY_DURATION_SECONDS: &str = "keywheel_recovery_duration_seconds";

/// Upper bounds (seconds) of the store commit histogram: a sync takes
/// about 2–3 ms on a local SSD, and a large batch or a slow disk more.
pub const STORE_COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Upper bounds of the records-per-commit histogram.
pub const STORE_BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

/// Upper bounds (seconds) of the lateness histogram. The floor of lateness
/// is about 1–2 ms (the wheel's 1 ms tick, rounded up), so the buckets start
/// there and reach a minute for a saturated or stalled manager.
pub const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// Describes every library metric, so `# HELP` lines appear before the first sample.
///
/// A manager calls this when it starts; calling it again is harmless.
pub fn describe() {
    describe_counter!(PERFORMS_TOTAL, "Performs run, by outcome.");
    describe_histogram!(
        PERFORM_LATENESS_SECONDS,
        Unit::Seconds,
        "Start of a perform minus its due time."
    );
    describe_counter!(CALLS_TOTAL, "Calls, by result.");
    describe_counter!(CASTS_TOTAL, "Casts, by result.");
    describe_counter!(PUTS_TOTAL, "Puts, by result.");
    describe_counter!(DELETES_TOTAL, "Deletes of existing entries.");
    describe_counter!(PANICS_TOTAL, "Panics caught in callbacks, by callback.");
    describe_counter!(TERMINATES_TOTAL, "Terminate callbacks run, by reason.");
    describe_counter!(
        OVERRUNS_TOTAL,
        "Performs that ran longer than the overrun factor times their interval."
    );
    describe_counter!(REJECTED_TOTAL, "Inputs rejected by validation, by reason.");
    describe_counter!(
        CLAMPED_INTERVALS_TOTAL,
        "Rescheduled intervals clamped into range."
    );
    describe_gauge!(ENTRIES, "Entries in the manager.");
    describe_gauge!(SHARD_ENTRIES, "Entries per shard.");
    describe_gauge!(POOL_BUSY, "Workers running callbacks.");
    describe_gauge!(
        POOL_QUEUED,
        "Jobs handed to the worker pool and not yet started."
    );
    describe_gauge!(POOL_WORKERS, "Size of the worker pool.");
    describe_gauge!(DUE_NOT_STARTED, "Performs that are due and not started.");
    describe_gauge!(
        OLDEST_OVERDUE_SECONDS,
        Unit::Seconds,
        "How long the oldest due, not started perform has been waiting."
    );
    describe_gauge!(
        SHARD_TURN_MAX_SECONDS,
        Unit::Seconds,
        "Longest turn of any shard loop during the last gauge interval."
    );
    describe_counter!(
        STORE_COMMITS_TOTAL,
        "Store commits, each with one sync, with persistence on."
    );
    describe_counter!(STORE_WRITES_TOTAL, "Records written to the store, by op.");
    describe_counter!(
        STORE_ERRORS_TOTAL,
        "Failed store commits; after one, no further writes are committed."
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Duration of one store commit, sync included."
    );
    describe_histogram!(STORE_BATCH_OPS, Unit::Count, "Records in one store commit.");
    describe_gauge!(STORE_QUEUED_OPS, "Store writes sent and not yet committed.");
    describe_gauge!(
        RECOVERED_ENTRIES,
        "Entries read back from the store when the manager opened."
    );
    describe_gauge!(
        RECOVERY_OVERDUE_ENTRIES,
        "Recovered entries whose due time passed while the process was down."
    );
    describe_gauge!(
        RECOVERY_DURATION_SECONDS,
        Unit::Seconds,
        "Time taken to read the store back when the manager opened."
    );
}

/// Sets the recovery gauges of a manager that opened a store.
pub(crate) fn record_recovery(
    manager: &str,
    restored: u64,
    overdue: u64,
    took: std::time::Duration,
) {
    let labels = || vec![metrics::Label::new("manager", manager.to_string())];
    metrics::gauge!(RECOVERED_ENTRIES, labels()).set(restored as f64);
    metrics::gauge!(RECOVERY_OVERDUE_ENTRIES, labels()).set(overdue as f64);
    metrics::gauge!(RECOVERY_DURATION_SECONDS, labels()).set(took.as_secs_f64());
}
