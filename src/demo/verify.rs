//! The check phase: waiting until every pending key is past its first due
//! time, then reading every key back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;

use super::{key_id, DemoRun, KeyState};
use crate::server::ALERTS_TOTAL;

/// How often the wait bar is redrawn.
const WAIT_TICK: Duration = Duration::from_millis(100);

/// Waits until the first due time of the last registered pending key has
/// passed by `--margin`. Returns at once when no key was left pending.
pub(super) async fn wait_for_due_times(run: &DemoRun) {
    let Some(last_due) = run.last_pending_due() else {
        return;
    };
    let deadline = last_due + run.args.margin;
    let now = Instant::now();
    run.progress
        .start_waiting(deadline.saturating_duration_since(now));

    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        run.progress.update_waiting(left);
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(WAIT_TICK)).await;
    }
    run.progress.finish_waiting();
}

/// Reads every registered key back with `GET /v1/keys/{id}`: a pending key
/// must exist with at least one alert, a completed key must be gone.
pub(super) async fn read_back(run: &DemoRun) {
    let registered = run.counters.registered.load(Ordering::Relaxed);
    run.progress.start_verifying(registered);

    stream::iter(0..run.args.keys)
        .filter_map(|index| async move {
            match run.state(index) {
                KeyState::Pending | KeyState::Completing | KeyState::Completed => Some(index),
                // Registered, but its failed completion leaves nothing to
                // check (the failure is already a violation).
                KeyState::Failed => {
                    run.progress.verifying.inc(1);
                    None
                }
                KeyState::Unregistered => None,
            }
        })
        .map(|index| read_back_one(run, index))
        .buffer_unordered(run.args.concurrency)
        .for_each(|()| async {})
        .await;

    run.progress.finish_verifying();
}

async fn read_back_one(run: &DemoRun, index: u64) {
    let id = key_id(index);
    let state = run.state(index);
    let result = run.client.alerts(&id).await;

    match (state, result) {
        (_, Err(error)) => {
            run.violations
                .record(format!("read-back of {id} failed: {error:#}"));
        }
        (KeyState::Pending, Ok(Some(alerts))) if alerts >= 1 => {
            let counters = &run.counters;
            counters.overdue_alerted.fetch_add(1, Ordering::Relaxed);
            counters
                .overdue_alerts_seen
                .fetch_add(alerts, Ordering::Relaxed);
        }
        (KeyState::Pending, Ok(Some(_))) => {
            run.violations.record(format!(
                "{id} was never alerted, although its first due time passed more than {} ms ago",
                run.args.margin.as_millis()
            ));
        }
        (KeyState::Pending, Ok(None)) => {
            run.violations
                .record(format!("{id} was left pending but is not found (404)"));
        }
        (KeyState::Completed, Ok(None)) => {
            run.counters.completed_gone.fetch_add(1, Ordering::Relaxed);
        }
        (KeyState::Completed, Ok(Some(alerts))) => {
            run.violations.record(format!(
                "{id} still exists after its completion, with {alerts} alerts"
            ));
        }
        (KeyState::Completing | KeyState::Unregistered | KeyState::Failed, Ok(_)) => {
            run.violations
                .record(format!("{id} was registered but its completion never ran"));
        }
    }
    run.progress.verifying.inc(1);
}

/// Reads the alert counter from `GET /metrics` and checks that it covers
/// every alert the read-back saw. Returns the counter, summed over its
/// label sets, when the scrape succeeded and contained it.
///
/// The exported counter is cumulative over the process, so in a process
/// that ran other watchdogs before it can only be higher.
pub(super) async fn check_exported_alerts(run: &DemoRun) -> Option<u64> {
    let text = match run.client.metrics().await {
        Ok(text) => text,
        Err(error) => {
            run.violations
                .record(format!("scrape of the metrics failed: {error:#}"));
            return None;
        }
    };

    let alerts_seen = run.counters.overdue_alerts_seen.load(Ordering::Relaxed);
    let Some(exported) = counter_value(&text, ALERTS_TOTAL) else {
        if alerts_seen > 0 {
            run.violations.record(format!(
                "GET /metrics has no {ALERTS_TOTAL} sample, \
                 but the pending requests reported {alerts_seen} alerts"
            ));
        }
        return None;
    };
    if exported < alerts_seen {
        run.violations.record(format!(
            "GET /metrics reports {ALERTS_TOTAL} {exported}, \
             below the {alerts_seen} alerts the pending requests reported"
        ));
    }
    Some(exported)
}

/// Returns the sum of the samples of counter `name` in Prometheus text,
/// or `None` when it has none.
fn counter_value(text: &str, name: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // Skips longer names that start with this one.
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let Some(value) = rest
            .rsplit(' ')
            .next()
            .and_then(|value| value.parse::<f64>().ok())
        else {
            continue;
        };
        // Counters are whole numbers, exact in an f64 below 2^53.
        *total.get_or_insert(0) += value as u64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_value_sums_label_sets() {
        let text = "# HELP keywheel_watchdog_alerts_total Overdue alerts.\n\
                    # TYPE keywheel_watchdog_alerts_total counter\n\
                    keywheel_watchdog_alerts_total{manager=\"a\"} 12\n\
                    keywheel_watchdog_alerts_total{manager=\"b\"} 30\n\
                    keywheel_watchdog_alerts_total_other 99\n";
        assert_eq!(
            counter_value(text, "keywheel_watchdog_alerts_total"),
            Some(42)
        );
    }

    #[test]
    fn counter_value_without_samples() {
        let text = "# TYPE keywheel_watchdog_alerts_total counter\nother_total 3\n";
        assert_eq!(counter_value(text, "keywheel_watchdog_alerts_total"), None);
    }
}
