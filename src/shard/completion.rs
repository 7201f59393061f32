//! Due timers and finished callbacks: outcomes, cadence and the panic policy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::command::{Command, PutMode, Waiter};
use super::entry::Flags;
use super::timers::TimerRef;
use super::Shard;
use crate::config::PanicPolicy;
use crate::error::Error;
use crate::handler::{Handler, Outcome, OutcomeKind, TerminateReason};
use crate::options::{
    clamp_interval, Cadence, EntryOptions, FirstRun, Interval, PackedInterval, MAX_INTERVAL,
};
use crate::persist::record;
use crate::pool::{Done, PendingReply, Ran};
use crate::store::StoreOp;
use crate::Id;

/// Panics of one entry within the current restart window.
pub(crate) struct PanicWindow {
    started: Instant,
    count: u32,
}

impl<H: Handler> Shard<H> {
    /// Starts the perform of an entry whose timer fired, or queues it behind
    /// the entry's in-flight callback.
    pub(super) fn on_due(&mut self, timer: TimerRef, due: Instant, now: Instant) {
        let Some(entry) = self.slab.get(timer.slot as usize) else {
            return;
        };
        if entry.generation != timer.generation || entry.flags.has(Flags::DETACHED) {
            // The entry was deleted or replaced after this timer fired.
            return;
        }

        let due = self
            .take_recovered_due(timer.slot, timer.generation)
            .unwrap_or(due);
        let waiter = Waiter::Perform { due };
        if self.must_wait(timer.slot) {
            self.enqueue(timer.slot, waiter);
        } else {
            self.ctx.shared.due_waiting.fetch_add(1, Ordering::Relaxed);
            self.dispatch(timer.slot, waiter, now);
        }
    }

    /// Applies a finished job: the payload goes back into the slab, then the
    /// outcome decides the entry's fate, then the next waiter starts.
    pub(super) fn on_done(&mut self, done: Done<H>, now: Instant) {
        let Done::Callback {
            slot,
            generation,
            payload,
            ran,
            started,
            finished,
            was_perform,
            due,
            needs_init,
            mut answer,
        } = done
        else {
            self.terminating -= 1;
            self.phase.count_terminated();
            return;
        };
        self.in_flight -= 1;
        self.phase.count_callback(&ran);

        let entry = &mut self.slab[slot as usize];
        debug_assert_eq!(entry.generation, generation, "a busy slot is never reused");
        if entry.flags.has(Flags::DETACHED) {
            // Deleted or replaced while the callback ran (or waited to run):
            // the outcome is discarded and the entry ends now, with its last
            // payload.
            self.ctx.shared.forget_revoked(slot, generation);
            let entry = self.slab.remove(slot as usize);
            self.panics.remove(&slot);
            let reason = self
                .detached
                .remove(&slot)
                .unwrap_or(TerminateReason::Deleted);
            self.log_panic(&entry.id, &ran);
            self.terminate(entry.id, payload, reason);
            if let Some(answer) = answer {
                answer.send();
            }
            return;
        }

        entry.payload = Some(payload);
        entry.flags.clear(Flags::BUSY);
        if needs_init {
            entry.flags.set(Flags::NEEDS_INIT);
        }
        // A perform skipped at shutdown never ran, so it is not counted.
        if was_perform && !matches!(ran, Ran::Skipped) {
            entry.performs = entry.performs.saturating_add(1);
            entry.last_outcome = Some(match &ran {
                Ran::Outcome(outcome) => outcome.kind(),
                _ => OutcomeKind::Panicked,
            });
            self.check_overrun(slot, started, finished);
        }

        let ran_callback = !matches!(ran, Ran::Skipped | Ran::Cancelled);
        let alive = match ran {
            Ran::Outcome(outcome) => self.apply_outcome(
                slot,
                outcome,
                was_perform,
                (due, finished, now),
                &mut answer,
            ),
            Ran::Panicked(message) => {
                self.apply_panic_policy(slot, message, was_perform, due, finished, now)
            }
            Ran::Skipped | Ran::Cancelled => true,
        };
        // A change that rewrote or deleted the record covers the payload too.
        if alive && ran_callback && self.pending_ops.is_empty() {
            self.mark_dirty(slot, was_perform);
        }
        // The caller of a call hears back only now that its outcome applies,
        // and, with a store, once the outcome's writes are committed.
        match answer {
            Some(answer) if !self.pending_ops.is_empty() => {
                self.submit_pending(Some(Box::new(move |result| answer.send_after(result))));
            }
            Some(answer) => answer.send(),
            None => self.submit_pending(None),
        }
        if alive {
            self.start_next_waiter(slot, now);
        }
    }

    /// Returns false if the outcome removed the entry.
    fn apply_outcome(
        &mut self,
        slot: u32,
        outcome: Outcome<H::Id>,
        was_perform: bool,
        (due, finished, now): (Instant, Instant, Instant),
        answer: &mut Option<PendingReply<H>>,
    ) -> bool {
        match outcome {
            Outcome::Continue => {
                if was_perform {
                    self.rearm_after_perform(slot, due, finished, now);
                }
                true
            }
            Outcome::Reschedule(interval) => {
                let (interval, clamped) = clamp_interval(interval);
                if clamped {
                    self.ctx.stats.counters.clamped.increment(1);
                }
                self.slab[slot as usize].interval = PackedInterval::from_duration(interval);
                if was_perform {
                    self.rearm_after_perform(slot, due, finished, now);
                } else {
                    // From a call or cast, the new interval starts now, also
                    // for an entry that had no schedule (`Interval::Never`).
                    self.arm(slot, now + interval, now);
                }
                self.queue_record(slot, now);
                true
            }
            Outcome::Halt => {
                self.queue_delete(slot);
                self.remove(slot, TerminateReason::Halted);
                false
            }
            Outcome::Move(new_id) => {
                if new_id == self.slab[slot as usize].id {
                    if was_perform {
                        self.rearm_after_perform(slot, due, finished, now);
                    }
                    return true;
                }
                self.move_entry(slot, new_id, now, answer.take());
                false
            }
        }
    }

    /// Sets the next perform's timer after a perform finished.
    fn rearm_after_perform(&mut self, slot: u32, due: Instant, finished: Instant, now: Instant) {
        let entry = &self.slab[slot as usize];
        let Some(interval) = entry.interval.get() else {
            return;
        };
        let next = match entry.cadence() {
            Cadence::FixedDelay => finished + interval,
            Cadence::FixedRate => next_on_grid(due, interval, now),
        };
        let next = next.min(now + MAX_INTERVAL);
        self.arm(slot, next, now);
    }

    /// Removes `slot` and inserts its payload and options under `new_id`.
    ///
    /// A call's `answer` goes out only once the insert is in the target
    /// shard's queue, so whatever the caller sends next to the new id comes
    /// after the insert.
    fn move_entry(
        &mut self,
        slot: u32,
        new_id: H::Id,
        now: Instant,
        answer: Option<PendingReply<H>>,
    ) {
        let entry = &self.slab[slot as usize];
        let payload = entry
            .payload
            .clone()
            .expect("an idle entry holds its payload");
        let interval = match entry.interval.get() {
            Some(every) => Interval::Every(every),
            None => Interval::Never,
        };
        let options = EntryOptions {
            interval,
            first_run: FirstRun::AfterInterval,
            jitter: Duration::ZERO,
            cadence: entry.cadence(),
        };
        // With a store, the old record's delete and the new record go in
        // one commit, before the insert reaches the target shard, so the
        // target's later writes for the new id come after them.
        let committed = self.write_move(slot, &new_id, &payload, &options, now);
        self.remove(slot, TerminateReason::Moved);

        let target = (new_id.stable_hash() % self.ctx.config.shards as u64) as usize;
        if target == self.ctx.index {
            self.put(new_id, payload, options, PutMode::Upsert, now);
            answer_after(answer, committed);
            return;
        }
        let Some(peer) = self.ctx.peers[target].upgrade() else {
            // Every manager handle is gone; nobody can read the new id.
            answer_after(answer, committed);
            return;
        };
        let command = Command::Put {
            id: new_id,
            payload,
            options,
            mode: PutMode::Upsert,
            reply: None,
        };
        // Never wait on another shard's full queue here: two shards moving
        // entries to each other would deadlock.
        match peer.try_send(command) {
            Err(TrySendError::Full(command)) => {
                tokio::spawn(async move {
                    let _ = peer.send(command).await;
                    answer_after(answer, committed);
                });
            }
            // Queued, or the target shard has stopped (shutdown).
            Ok(()) | Err(TrySendError::Closed(_)) => answer_after(answer, committed),
        }
    }

    /// Sends the store writes of a move: delete the old record, write the
    /// new one. Returns the commit's result to come, or `None` without a
    /// store.
    fn write_move(
        &mut self,
        slot: u32,
        new_id: &H::Id,
        payload: &H::Payload,
        options: &EntryOptions,
        now: Instant,
    ) -> Option<oneshot::Receiver<Result<(), Error>>> {
        if !self.persisting() {
            return None;
        }
        self.queue_delete(slot);
        match self.encode(new_id, payload) {
            Ok(encoded) => {
                let head = self.moved_head(options, now);
                self.pending_ops.push(StoreOp::Put {
                    key: encoded.key_bytes(),
                    value: record::encode(&head, encoded.payload_bytes()),
                });
            }
            Err(error) => self.log_store_problem(&error),
        }
        let (done, committed) = oneshot::channel();
        self.submit_pending(Some(Box::new(move |result| {
            let _ = done.send(result);
        })));
        Some(committed)
    }

    /// Applies the manager's panic policy; returns false if the entry was removed.
    fn apply_panic_policy(
        &mut self,
        slot: u32,
        message: String,
        was_perform: bool,
        due: Instant,
        finished: Instant,
        now: Instant,
    ) -> bool {
        let id = self.slab[slot as usize].id.clone();
        self.log_panic(&id, &Ran::Panicked(message.clone()));

        let config = &self.ctx.config;
        let window = self.panics.entry(slot).or_insert(PanicWindow {
            started: now,
            count: 0,
        });
        if now.saturating_duration_since(window.started) > config.restart_window {
            *window = PanicWindow {
                started: now,
                count: 0,
            };
        }
        window.count += 1;
        let over_limit = window.count > config.max_restarts;

        if over_limit || config.panic_policy == PanicPolicy::Remove {
            self.queue_delete(slot);
            self.remove(slot, TerminateReason::Panicked(message));
            return false;
        }
        if config.panic_policy == PanicPolicy::Reinit {
            self.slab[slot as usize].flags.set(Flags::NEEDS_INIT);
        }
        if was_perform {
            self.rearm_after_perform(slot, due, finished, now);
        }
        true
    }

    fn log_panic(&mut self, id: &H::Id, ran: &Ran<H::Id>) {
        let Ran::Panicked(message) = ran else {
            return;
        };
        if let Some(suppressed) = self.panic_log.allow() {
            tracing::warn!(
                id = ?id,
                shard = self.ctx.index,
                error = %message,
                suppressed,
                "callback panicked"
            );
        }
    }

    /// Counts and logs a perform that ran longer than the overrun factor
    /// times its interval.
    fn check_overrun(&mut self, slot: u32, started: Instant, finished: Instant) {
        let entry = &self.slab[slot as usize];
        let Some(interval) = entry.interval.get() else {
            return;
        };
        let took = finished.saturating_duration_since(started);
        if took.as_secs_f64() <= interval.as_secs_f64() * self.ctx.config.overrun_factor {
            return;
        }
        self.ctx.stats.counters.overruns.increment(1);
        if let Some(suppressed) = self.overrun_log.allow() {
            tracing::warn!(
                id = ?entry.id,
                shard = self.ctx.index,
                took_ms = took.as_millis() as u64,
                interval_ms = interval.as_millis() as u64,
                suppressed,
                "perform overran its interval"
            );
        }
    }

    /// Starts the next queued work of an idle entry, answering gets on the way.
    pub(super) fn start_next_waiter(&mut self, slot: u32, now: Instant) {
        while !self.slab[slot as usize].is_busy() {
            let Some(queue) = self.waiters.get_mut(&slot) else {
                return;
            };
            let Some(waiter) = queue.pop_front() else {
                self.waiters.remove(&slot);
                self.slab[slot as usize].flags.clear(Flags::HAS_WAITERS);
                return;
            };
            if queue.is_empty() {
                self.waiters.remove(&slot);
                self.slab[slot as usize].flags.clear(Flags::HAS_WAITERS);
            }
            if !self.phase.runs_timers() && matches!(waiter, Waiter::Perform { .. }) {
                // Draining: no perform starts after shutdown began.
                self.ctx.shared.due_waiting.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            self.dispatch(slot, waiter, now);
        }
    }
}

/// Answers a call after its move is committed (when there is a store).
fn answer_after<H: Handler>(
    answer: Option<PendingReply<H>>,
    committed: Option<oneshot::Receiver<Result<(), Error>>>,
) {
    let Some(answer) = answer else {
        return;
    };
    match committed {
        None => answer.send(),
        Some(committed) => {
            tokio::spawn(async move {
                let result = committed.await.unwrap_or_else(|_| {
                    Err(Error::Store {
                        detail: "the store closed before the commit".to_string(),
                    })
                });
                answer.send_after(result);
            });
        }
    }
}

/// Returns the first point of the grid `due + k × interval` (k ≥ 1) that is
/// not before `now`: slots missed while a perform ran late are skipped.
fn next_on_grid(due: Instant, interval: Duration, now: Instant) -> Instant {
    let next = due + interval;
    if next >= now {
        return next;
    }
    let behind = now.duration_since(next).as_nanos();
    let step = interval.as_nanos().max(1);
    let steps = behind.div_ceil(step);
    let skip = Duration::from_nanos(u64::try_from(steps * step).unwrap_or(u64::MAX));
    next + skip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_skips_missed_slots() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);

        assert_eq!(next_on_grid(start, interval, start), start + interval);
        assert_eq!(
            next_on_grid(start, interval, start + Duration::from_millis(350)),
            start + Duration::from_millis(400)
        );
        assert_eq!(
            next_on_grid(start, interval, start + Duration::from_millis(400)),
            start + Duration::from_millis(400)
        );
    }
}
