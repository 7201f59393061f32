//! Shutdown of a shard: stop performs, let callbacks finish, run `terminate`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::command::Waiter;
use super::entry::Flags;
use super::Shard;
use crate::error::Error;
use crate::handler::{Handler, TerminateReason};
use crate::manager::ShardReport;
use crate::pool::Ran;

/// The stage of a shard's life.
pub(crate) enum Phase {
    Running,
    /// No new performs; waiting for in-flight callbacks to come back.
    Draining(Drain),
    /// Waiting for the `terminate` callbacks of the remaining entries.
    Terminating(Drain),
}

pub(crate) struct Drain {
    run_terminate: bool,
    reply: Option<oneshot::Sender<ShardReport>>,
    report: ShardReport,
}

impl Phase {
    pub(crate) fn accepts_commands(&self) -> bool {
        matches!(self, Phase::Running)
    }

    pub(crate) fn runs_timers(&self) -> bool {
        matches!(self, Phase::Running)
    }

    /// Counts a callback that came back during the drain. A skipped job
    /// never started, so it is neither in flight, completed nor cancelled.
    pub(crate) fn count_callback<I>(&mut self, ran: &Ran<I>) {
        if let Phase::Draining(drain) | Phase::Terminating(drain) = self {
            match ran {
                Ran::Skipped => {}
                Ran::Cancelled => {
                    drain.report.in_flight += 1;
                    drain.report.cancelled += 1;
                }
                _ => {
                    drain.report.in_flight += 1;
                    drain.report.completed += 1;
                }
            }
        }
    }

    pub(crate) fn count_terminated(&mut self) {
        if let Phase::Draining(drain) | Phase::Terminating(drain) = self {
            drain.report.terminated += 1;
        }
    }
}

impl<H: Handler> Shard<H> {
    /// Stops timers and new work; in-flight callbacks go on.
    pub(super) fn begin_drain(
        &mut self,
        _grace: Duration,
        run_terminate: bool,
        reply: oneshot::Sender<ShardReport>,
        _now: Instant,
    ) {
        // The manager cancels callbacks still running when the grace period
        // ends; they come back as `Ran::Cancelled` with their payload.
        // `self.in_flight` also counts jobs still queued in the pool, which
        // come back skipped, so the report counts callbacks as they return.
        self.ctx.shared.draining.store(true, Ordering::Release);
        self.phase = Phase::Draining(Drain {
            run_terminate,
            reply: Some(reply),
            report: ShardReport::default(),
        });

        // Queued work will not run: answer it now.
        let slots: Vec<u32> = self.waiters.keys().copied().collect();
        for slot in slots {
            self.slab[slot as usize].flags.clear(Flags::HAS_WAITERS);
            for waiter in self.waiters.remove(&slot).unwrap_or_default() {
                match waiter {
                    Waiter::Call { reply, .. } => {
                        let _ = reply.send(Err(Error::ShuttingDown));
                    }
                    Waiter::Get { reply } => {
                        let _ = reply.send(Err(Error::ShuttingDown));
                    }
                    Waiter::Perform { .. } => {
                        self.ctx.shared.due_waiting.fetch_sub(1, Ordering::Relaxed);
                    }
                    Waiter::Cast { .. } => {}
                }
            }
        }
    }

    /// Advances a drain after a turn; returns true when the shard is done.
    pub(super) fn drain_step(&mut self, now: Instant) -> bool {
        match &mut self.phase {
            Phase::Running => false,
            Phase::Draining(_) if self.in_flight > 0 => false,
            Phase::Draining(drain) => {
                let run_terminate = drain.run_terminate;
                let Phase::Draining(drain) = std::mem::replace(&mut self.phase, Phase::Running)
                else {
                    unreachable!()
                };
                self.phase = Phase::Terminating(drain);
                // Every payload is back in the slab: write the last changes
                // before `terminate` takes the payloads.
                self.flush_dirty(now);
                if run_terminate {
                    self.terminate_all();
                }
                self.finish_if_terminated()
            }
            Phase::Terminating(_) => self.finish_if_terminated(),
        }
    }

    /// Queues `terminate(Shutdown)` for every entry and empties the shard.
    fn terminate_all(&mut self) {
        let slots: Vec<u32> = self.index.slots().collect();
        for slot in slots {
            let entry = self.slab.remove(slot as usize);
            if let Some(payload) = entry.payload {
                self.terminate(entry.id, payload, TerminateReason::Shutdown);
            }
        }
        self.index = super::index::IdIndex::new(self.ctx.hasher.clone());
        self.publish_len();
    }

    fn finish_if_terminated(&mut self) -> bool {
        if self.terminating > 0 {
            return false;
        }
        if let Phase::Terminating(drain) = &mut self.phase {
            if let Some(reply) = drain.reply.take() {
                let _ = reply.send(drain.report);
            }
        }
        true
    }
}
