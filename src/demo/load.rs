//! The load phase: registering every key while completing the chosen ones
//! at their planned moments.
//!
//! Registration runs as one stream with `--concurrency` requests in flight.
//! Each registered key that the plan completes is handed, with its
//! completion time, to a scheduler task that keeps a min-heap of completion
//! times and starts each completion when it is due. Both share the
//! client's request slots, so the total in flight stays within
//! `--concurrency`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::stream::{self, FuturesUnordered, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{key_id, micros, DemoRun, KeyState, COMPLETION_WINDOW};

/// Chooses, key by key in index order, exactly `picks` of `keys` keys to
/// complete and a completion delay for each.
///
/// Selection sampling picks each key with probability remaining picks /
/// remaining keys. That yields exactly `picks` keys, uniformly chosen,
/// without storing a plan per key.
pub(super) struct CompletionPlan {
    rng: StdRng,
    keys_left: u64,
    picks_left: u64,
    max_delay: Duration,
}

impl CompletionPlan {
    pub(super) fn new(seed: u64, keys: u64, picks: u64, max_delay: Duration) -> Self {
        CompletionPlan {
            rng: StdRng::seed_from_u64(seed),
            keys_left: keys,
            picks_left: picks.min(keys),
            max_delay,
        }
    }

    /// Decides for the next key: `Some(delay)` when it is to be completed
    /// that long after its registration, `None` when it is left to go overdue.
    pub(super) fn next_key(&mut self) -> Option<Duration> {
        if self.keys_left == 0 {
            return None;
        }
        let picked =
            self.picks_left > 0 && self.rng.random_range(0..self.keys_left) < self.picks_left;
        self.keys_left -= 1;
        if !picked {
            return None;
        }
        self.picks_left -= 1;
        Some(self.rng.random_range(Duration::ZERO..=self.max_delay))
    }
}

/// Returns how many of the keys are completed: the ratio of the keys, rounded.
pub(super) fn planned_completions(keys: u64, ratio: f64) -> u64 {
    // Exact for every key count up to 2^53, far above the 10,000,000 limit.
    ((keys as f64) * ratio).round() as u64
}

/// A completion waiting for its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ScheduledCompletion {
    due: Instant,
    index: u64,
    /// When the registration request was sent. The server's first due time
    /// is at least one interval after this.
    registration_sent: Instant,
}

/// Registers every key and completes the planned ones; returns when both
/// are done, with the time from the demo's start to the last registration.
///
/// Failed requests are recorded as violations, so only a failure of the
/// demo's own tasks is an error.
pub(super) async fn register_and_complete(run: &Arc<DemoRun>) -> anyhow::Result<Duration> {
    let picks = planned_completions(run.args.keys, run.args.complete_ratio);
    run.progress.start_registering(run.args.keys);
    run.progress.start_completing(picks);

    let (schedule, scheduled) = mpsc::unbounded_channel();
    let completing = tokio::spawn(complete_when_due(run.clone(), scheduled));
    let registering = tokio::spawn(register_all(run.clone(), picks, schedule));

    registering.await.context("the registration task failed")?;
    let registration_elapsed = run.started.elapsed();
    run.progress.finish_registering();
    completing.await.context("the completion task failed")?;
    run.progress.finish_completing();
    Ok(registration_elapsed)
}

async fn register_all(
    run: Arc<DemoRun>,
    picks: u64,
    schedule: mpsc::UnboundedSender<ScheduledCompletion>,
) {
    let max_delay = run.interval.mul_f64(COMPLETION_WINDOW);
    let mut plan = CompletionPlan::new(run.args.seed, run.args.keys, picks, max_delay);
    let every = format!("{}ms", run.interval.as_millis());

    stream::iter(0..run.args.keys)
        .map(|index| {
            let delay = plan.next_key();
            register_one(&run, &every, index, delay, &schedule)
        })
        .buffer_unordered(run.args.concurrency)
        .for_each(|()| async {})
        .await;
}

async fn register_one(
    run: &DemoRun,
    every: &str,
    index: u64,
    completion_delay: Option<Duration>,
    schedule: &mpsc::UnboundedSender<ScheduledCompletion>,
) {
    let id = key_id(index);
    let body = registration_body(index, every);

    match run.client.register(&id, &body).await {
        Ok(sent) => {
            let answered = Instant::now();
            run.counters.registered.fetch_add(1, Ordering::Relaxed);
            match completion_delay {
                Some(delay) => {
                    // Counting from the send keeps the registration's own
                    // latency out of the slack before the first due time.
                    run.set_state(index, KeyState::Completing);
                    let completion = ScheduledCompletion {
                        due: sent + delay,
                        index,
                        registration_sent: sent,
                    };
                    // The receiver lives until this sender is dropped.
                    let _ = schedule.send(completion);
                }
                None => {
                    run.set_state(index, KeyState::Pending);
                    run.counters.overdue.fetch_add(1, Ordering::Relaxed);
                    let since_start = micros(answered.duration_since(run.started));
                    run.counters
                        .last_pending_registered_us
                        .fetch_max(since_start, Ordering::Relaxed);
                }
            }
        }
        Err(error) => {
            run.violations
                .record(format!("registration of {id} failed: {error:#}"));
            if completion_delay.is_some() {
                run.progress.completing.inc(1);
            }
        }
    }
    run.progress.registering.inc(1);
}

/// Returns the violation message for a completion that reported alerts,
/// telling a server fault from a client that fell behind its schedule.
fn alerted_completion(id: &str, alerts: u64, delay: Duration, interval: Duration) -> String {
    let delay_ms = delay.as_millis();
    let interval_ms = interval.as_millis();
    if delay < interval {
        return format!(
            "{id} reported {alerts} alerts, although its completion was answered \
             {delay_ms} ms after its registration was sent, before its first due time \
             at {interval_ms} ms"
        );
    }
    format!(
        "{id} reported {alerts} alerts, but its completion was answered {delay_ms} ms \
         after its registration was sent, past its first due time at {interval_ms} ms: \
         the client fell behind its schedule, so lower --concurrency or raise --interval"
    )
}

/// Returns the body of `PUT /v1/keys/{id}`: a small payload naming the
/// request and the alert interval.
fn registration_body(index: u64, every: &str) -> Value {
    json!({
        "payload": { "request": index, "service": "payments" },
        "every": every,
    })
}

/// Starts each scheduled completion when it is due, with at most
/// `--concurrency` in flight, until the schedule is closed and drained.
async fn complete_when_due(
    run: Arc<DemoRun>,
    mut scheduled: mpsc::UnboundedReceiver<ScheduledCompletion>,
) {
    let limit = run.args.concurrency;
    let mut waiting = BinaryHeap::<Reverse<ScheduledCompletion>>::new();
    let mut in_flight = FuturesUnordered::new();
    let mut receiving = true;

    loop {
        let now = Instant::now();
        while in_flight.len() < limit {
            match waiting.peek() {
                Some(Reverse(next)) if next.due <= now => {}
                _ => break,
            }
            let Some(Reverse(completion)) = waiting.pop() else {
                break;
            };
            in_flight.push(complete_one(&run, completion));
        }

        if !receiving && waiting.is_empty() && in_flight.is_empty() {
            break;
        }

        // At least one branch is enabled: with nothing in flight and the
        // schedule closed, `waiting` is not empty and a slot is free.
        let next_due = waiting.peek().map(|Reverse(next)| next.due);
        let slot_free = in_flight.len() < limit;
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            received = scheduled.recv(), if receiving => match received {
                Some(completion) => waiting.push(Reverse(completion)),
                None => receiving = false,
            },
            () = tokio::time::sleep_until(next_due.unwrap_or(now)), if slot_free && next_due.is_some() => {}
        }
    }
}

async fn complete_one(run: &DemoRun, completion: ScheduledCompletion) {
    let index = completion.index;
    let id = key_id(index);
    let result = run.client.complete(&id).await;
    let delay = completion.registration_sent.elapsed();
    let lag = completion.due.elapsed();
    run.counters
        .max_completion_delay_us
        .fetch_max(micros(delay), Ordering::Relaxed);
    run.counters
        .max_completion_lag_us
        .fetch_max(micros(lag), Ordering::Relaxed);

    match result {
        Ok(response) => {
            run.set_state(index, KeyState::Completed);
            run.counters.completed.fetch_add(1, Ordering::Relaxed);
            if response.alerts > 0 {
                run.counters
                    .completed_alerted
                    .fetch_add(1, Ordering::Relaxed);
                run.violations.record(alerted_completion(
                    &id,
                    response.alerts,
                    delay,
                    run.interval,
                ));
            }
            let request = response.payload.get("request").and_then(Value::as_u64);
            if request != Some(index) {
                run.violations.record(format!(
                    "completion of {id} returned payload {}, expected request {index}",
                    response.payload
                ));
            }
        }
        Err(error) => {
            run.set_state(index, KeyState::Failed);
            run.violations
                .record(format!("completion of {id} failed: {error:#}"));
        }
    }
    run.progress.completing.inc(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(seed: u64, keys: u64, picks: u64) -> Vec<Option<Duration>> {
        let mut plan = CompletionPlan::new(seed, keys, picks, Duration::from_secs(12));
        (0..keys).map(|_| plan.next_key()).collect()
    }

    #[test]
    fn plan_picks_exact_count() {
        for (keys, picks) in [(1, 0), (1, 1), (10, 9), (1_000, 900), (1_000, 1_000)] {
            let plan = plan_of(7, keys, picks);
            let picked = plan.iter().filter(|delay| delay.is_some()).count() as u64;
            assert_eq!(picked, picks, "{picks} of {keys} keys");
        }
    }

    #[test]
    fn plan_delays_within_window() {
        let plan = plan_of(7, 1_000, 900);
        let max = plan.iter().flatten().max().copied();
        assert!(max <= Some(Duration::from_secs(12)), "max delay {max:?}");
    }

    #[test]
    fn plan_repeats_for_same_seed() {
        assert_eq!(plan_of(3, 500, 450), plan_of(3, 500, 450));
        assert_ne!(plan_of(3, 500, 450), plan_of(4, 500, 450));
    }

    #[test]
    fn planned_completions_rounds_ratio() {
        assert_eq!(planned_completions(100_000, 0.9), 90_000);
        assert_eq!(planned_completions(3, 0.5), 2);
        assert_eq!(planned_completions(7, 0.0), 0);
        assert_eq!(planned_completions(7, 1.0), 7);
    }
}
