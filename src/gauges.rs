//! A task that refreshes a manager's gauges on a timer.
//!
//! Gauges are read from counters the shards and workers keep anyway, so the
//! hot path never touches a shared gauge.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use metrics::{Gauge, Label};

use crate::handler::Handler;
use crate::manager::Inner;
use crate::metrics as names;

/// Starts the refresh task; it ends when the manager is dropped or stopped.
pub(crate) fn spawn<H: Handler>(inner: Weak<Inner<H>>) {
    let Some(strong) = inner.upgrade() else {
        return;
    };
    let interval = strong.config.gauge_interval;
    let gauges = Gauges::new(&strong.config.name, strong.config.shards);
    gauges.workers.set(strong.config.workers as f64);
    drop(strong);

    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if inner.is_stopped() {
                gauges.entries.set(0.0);
                return;
            }
            gauges.refresh(&inner);
            inner.stats.publish_lateness();
        }
    });
}

struct Gauges {
    entries: Gauge,
    shard_entries: Vec<Gauge>,
    busy: Gauge,
    queued: Gauge,
    workers: Gauge,
    due_not_started: Gauge,
    oldest_overdue: Gauge,
    store_queued: Gauge,
    turn_max: Gauge,
}

impl Gauges {
    fn new(manager: &str, shards: usize) -> Self {
        let labels = || vec![Label::new("manager", manager.to_string())];
        Gauges {
            entries: metrics::gauge!(names::ENTRIES, labels()),
            shard_entries: (0..shards)
                .map(|shard| {
                    metrics::gauge!(
                        names::SHARD_ENTRIES,
                        vec![
                            Label::new("manager", manager.to_string()),
                            Label::new("shard", shard.to_string())
                        ]
                    )
                })
                .collect(),
            busy: metrics::gauge!(names::POOL_BUSY, labels()),
            queued: metrics::gauge!(names::POOL_QUEUED, labels()),
            workers: metrics::gauge!(names::POOL_WORKERS, labels()),
            due_not_started: metrics::gauge!(names::DUE_NOT_STARTED, labels()),
            oldest_overdue: metrics::gauge!(names::OLDEST_OVERDUE_SECONDS, labels()),
            store_queued: metrics::gauge!(names::STORE_QUEUED_OPS, labels()),
            turn_max: metrics::gauge!(names::SHARD_TURN_MAX_SECONDS, labels()),
        }
    }

    fn refresh<H: Handler>(&self, inner: &Inner<H>) {
        let now = tokio::time::Instant::now();
        let mut total = 0;
        let mut due = 0;
        let mut oldest = std::time::Duration::ZERO;
        let mut turn_max = 0;
        for (shared, gauge) in inner.shared.iter().zip(&self.shard_entries) {
            turn_max = turn_max.max(shared.turn_max_gauge.swap(0, Ordering::Relaxed));
            let entries = shared.entries.load(Ordering::Relaxed);
            total += entries;
            due += shared.due_waiting.load(Ordering::Relaxed);
            if let Some(oldest_due) = shared.oldest_due() {
                oldest = oldest.max(now.saturating_duration_since(oldest_due));
            }
            gauge.set(entries as f64);
        }
        self.entries.set(total as f64);
        self.due_not_started.set(due as f64);
        self.oldest_overdue.set(oldest.as_secs_f64());
        self.turn_max.set(turn_max as f64 / 1e6);
        self.busy
            .set(inner.load.busy.load(Ordering::Relaxed) as f64);
        self.queued
            .set(inner.load.queued.load(Ordering::Relaxed) as f64);
        if let Some(store) = &inner.store {
            self.store_queued
                .set(store.writer.queued.load(Ordering::Relaxed) as f64);
        }
    }
}
