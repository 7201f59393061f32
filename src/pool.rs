//! The worker pool: a fixed set of tasks that run callbacks.
//!
//! Shards hand due work to the pool in batches (one channel send per batch,
//! not per perform), and workers hand each batch's payloads back to its
//! shard in one message. A worker runs the jobs of a batch one after
//! another. When a job's callback has to wait (its first poll returns
//! `Pending`), the rest of the batch goes back to the queue for other
//! workers, so a slow callback delays only its own id. The pool size is
//! therefore the number of callbacks that can wait at the same time.
//!
//! Handed-back jobs go to a second queue that workers read first. They were
//! taken from the main queue before anything still in it, so reading them
//! first keeps jobs close to the order in which they fell due; putting them
//! behind newer batches would let a saturated pool starve old jobs while
//! entries in newer, smaller batches run again and again.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::handler::{Handler, Outcome, TerminateReason};
use crate::shard::ShardShared;
use crate::stats::WorkerStats;

/// A unit of work for the pool. `slot` and `generation` name the entry in
/// its shard; the payload travels with the job and comes back in [`Done`].
pub(crate) enum Job<H: Handler> {
    Perform {
        slot: u32,
        generation: u32,
        id: H::Id,
        payload: H::Payload,
        needs_init: bool,
        due: Instant,
    },
    Call {
        slot: u32,
        generation: u32,
        id: H::Id,
        payload: H::Payload,
        needs_init: bool,
        request: H::Request,
        deadline: Instant,
        issued: Instant,
        reply: oneshot::Sender<Result<H::Reply, Error>>,
    },
    Cast {
        slot: u32,
        generation: u32,
        id: H::Id,
        payload: H::Payload,
        needs_init: bool,
        message: H::Message,
    },
    /// Runs `terminate`; the entry is already gone from its shard.
    Terminate {
        id: H::Id,
        payload: H::Payload,
        reason: TerminateReason,
    },
}

/// The result of a callback, as the shard applies it.
pub(crate) enum Ran<I> {
    /// The callback returned this outcome.
    Outcome(Outcome<I>),
    /// The callback panicked with this message.
    Panicked(String),
    /// The job did not start: a call whose deadline had passed or whose
    /// caller had gone, a job whose entry was removed while it waited in the
    /// pool's queue, or a perform still queued when shutdown began.
    Skipped,
    /// Shutdown cancelled the callback at the end of its grace period.
    Cancelled,
}

/// A call's answer. The shard sends it once it has applied the call's
/// outcome, so a caller that sees the reply also sees its effect: after a
/// call that returned `Halt`, a `get` finds nothing, and after `Move`, a
/// `get` of the new id finds the entry.
pub(crate) struct PendingReply<H: Handler> {
    reply: oneshot::Sender<Result<H::Reply, Error>>,
    result: Result<H::Reply, Error>,
}

impl<H: Handler> PendingReply<H> {
    /// Sends the answer; a caller that gave up is not an error.
    pub(crate) fn send(self) {
        let _ = self.reply.send(self.result);
    }

    /// Sends the answer once the store has committed the outcome's writes;
    /// if that commit failed, the caller gets the store's error instead.
    pub(crate) fn send_after(self, committed: Result<(), Error>) {
        let result = committed.and(self.result);
        let _ = self.reply.send(result);
    }
}

/// A finished job, sent back to the job's shard.
pub(crate) enum Done<H: Handler> {
    Callback {
        slot: u32,
        generation: u32,
        payload: H::Payload,
        ran: Ran<H::Id>,
        /// When the callback started.
        started: Instant,
        /// When the callback returned; the base of a fixed-delay due time.
        finished: Instant,
        /// True for `perform`; calls and casts never move the cadence.
        was_perform: bool,
        /// The due time of a perform.
        due: Instant,
        /// `init` panicked and must run again before the next callback.
        needs_init: bool,
        /// The answer of a call, sent by the shard after the outcome.
        answer: Option<PendingReply<H>>,
    },
    Terminated,
}

/// Jobs from one shard.
pub(crate) struct Batch<H: Handler> {
    pub(crate) shard: usize,
    pub(crate) jobs: VecDeque<Job<H>>,
}

/// Counters the manager reads for `keywheel_pool_busy` and `keywheel_pool_queued`.
#[derive(Default)]
pub(crate) struct PoolLoad {
    /// Workers running a batch.
    pub(crate) busy: AtomicUsize,
    /// Jobs handed to the pool and not yet started.
    pub(crate) queued: AtomicUsize,
}

/// Everything a worker needs.
pub(crate) struct WorkerContext<H: Handler> {
    pub(crate) handler: Arc<H>,
    pub(crate) batches: async_channel::Receiver<Batch<H>>,
    /// Rests of batches handed back by workers whose callback had to wait;
    /// read before `batches`.
    pub(crate) handed_back: async_channel::Receiver<Batch<H>>,
    /// Batches of calls, read before `batches`: a caller waits for its
    /// reply, so a call does not queue behind the performs already handed
    /// to the pool. Only shards send here, never workers.
    pub(crate) calls: async_channel::Receiver<Batch<H>>,
    pub(crate) requeue: async_channel::Sender<Batch<H>>,
    pub(crate) done: Vec<mpsc::UnboundedSender<Vec<Done<H>>>>,
    pub(crate) load: Arc<PoolLoad>,
    pub(crate) stats: Arc<crate::stats::ManagerStats>,
    /// Per shard, for the count of due performs not started.
    pub(crate) shards: Vec<Arc<crate::shard::ShardShared>>,
    /// Cancels callbacks at the end of the shutdown grace period.
    pub(crate) cancel: CancellationToken,
    /// Cancels `terminate` callbacks at the end of their own grace period.
    pub(crate) cancel_terminate: CancellationToken,
}

/// Runs one worker until the batch channel closes.
pub(crate) async fn run_worker<H: Handler>(ctx: Arc<WorkerContext<H>>) {
    let mut stats = WorkerStats::new(ctx.stats.clone());
    while let Some(batch) = next_batch(&ctx, &mut stats).await {
        ctx.load.busy.fetch_add(1, Ordering::Relaxed);
        run_batch(&ctx, batch, &mut stats).await;
        ctx.load.busy.fetch_sub(1, Ordering::Relaxed);
        stats.flush_if_stale();
        // Callbacks that never wait leave a worker with nothing that
        // yields, and a task it woke (a shard, most often) sits in this
        // runtime thread's LIFO slot, where no other thread can steal it,
        // until the worker yields. Once per batch keeps that wait short.
        tokio::task::yield_now().await;
    }
    stats.flush();
}

/// Returns the next batch, handed-back ones first; `None` once the pool is closed.
async fn next_batch<H: Handler>(
    ctx: &WorkerContext<H>,
    stats: &mut WorkerStats,
) -> Option<Batch<H>> {
    if let Ok(batch) = ctx.handed_back.try_recv() {
        return Some(batch);
    }
    if let Ok(batch) = ctx.calls.try_recv() {
        return Some(batch);
    }
    match ctx.batches.try_recv() {
        Ok(batch) => Some(batch),
        Err(async_channel::TryRecvError::Closed) => None,
        Err(async_channel::TryRecvError::Empty) => loop {
            // Idle. Publishing on every idle moment would cost a full
            // histogram merge per batch at low rates, so tallies are
            // published when they are `FLUSH_EVERY` old, even while idle.
            let flush_in = stats.until_flush();
            tokio::select! {
                biased;
                Ok(batch) = ctx.handed_back.recv() => return Some(batch),
                Ok(batch) = ctx.calls.recv() => return Some(batch),
                received = ctx.batches.recv() => return received.ok(),
                _ = tokio::time::sleep(flush_in.unwrap_or_default()), if flush_in.is_some() => {
                    stats.flush();
                }
            }
        },
    }
}

async fn run_batch<H: Handler>(ctx: &WorkerContext<H>, batch: Batch<H>, stats: &mut WorkerStats) {
    let shard = batch.shard;
    let mut jobs = batch.jobs;
    let mut done = Vec::with_capacity(jobs.len());

    // One clock read per job: the end of one callback is the start of the
    // next. A callback that never waits can still run for long (busy work),
    // and both its fixed-delay due time and the next job's lateness depend
    // on when it really ended.
    let mut now = Instant::now();

    while let Some(job) = jobs.pop_front() {
        ctx.load.queued.fetch_sub(1, Ordering::Relaxed);
        if matches!(job, Job::Perform { .. }) {
            let shared = &ctx.shards[shard];
            shared.due_waiting.fetch_sub(1, Ordering::Relaxed);
            shared.performs_taken.fetch_add(1, Ordering::Release);
        }
        let job = match check_start(&ctx.shards[shard], job, now) {
            Ok(job) => job,
            Err(skipped) => {
                done.push(skipped);
                continue;
            }
        };
        let started = now;
        let finished = run_job(ctx, job, now, stats, &mut || {
            // The callback has to wait: let other workers take the rest.
            if !jobs.is_empty() {
                let rest = Batch {
                    shard,
                    jobs: std::mem::take(&mut jobs),
                };
                if let Err(err) = ctx.requeue.try_send(rest) {
                    jobs = err.into_inner().jobs;
                }
            }
        })
        .await;
        now = Instant::now();
        if let Some(finished) = finished {
            done.push(finished.into_done(started, now));
        } else {
            done.push(Done::Terminated);
        }
    }

    // The shard's receiver lives as long as the shard; a closed channel
    // means the shard stopped and no longer needs these payloads.
    let _ = ctx.done[shard].send(done);
}

/// Returns the job if it may start. Otherwise returns the [`Done`] that
/// hands its payload back unrun: its entry was removed after the job was
/// queued (a call then gets `NotFound`), or it is a perform and shutdown has
/// begun.
// Both variants are about as large as a job; the result is matched at once.
#[allow(clippy::result_large_err)]
fn check_start<H: Handler>(
    shard: &ShardShared,
    job: Job<H>,
    now: Instant,
) -> Result<Job<H>, Done<H>> {
    let (slot, generation, was_perform) = match &job {
        Job::Perform {
            slot, generation, ..
        } => (*slot, *generation, true),
        Job::Call {
            slot, generation, ..
        }
        | Job::Cast {
            slot, generation, ..
        } => (*slot, *generation, false),
        Job::Terminate { .. } => return Ok(job),
    };
    let draining = was_perform && shard.draining.load(Ordering::Acquire);
    if !draining && !shard.is_revoked(slot, generation) {
        return Ok(job);
    }

    let (payload, needs_init, due) = match job {
        Job::Perform {
            payload,
            needs_init,
            due,
            ..
        } => (payload, needs_init, due),
        Job::Call {
            id,
            payload,
            needs_init,
            reply,
            ..
        } => {
            let _ = reply.send(Err(Error::not_found(&id)));
            (payload, needs_init, now)
        }
        Job::Cast {
            payload,
            needs_init,
            ..
        } => (payload, needs_init, now),
        Job::Terminate { .. } => unreachable!("terminate jobs always start"),
    };
    Err(Done::Callback {
        slot,
        generation,
        payload,
        ran: Ran::Skipped,
        started: now,
        finished: now,
        was_perform,
        due,
        needs_init,
        answer: None,
    })
}

/// A callback's result before the worker stamps its finish time.
struct Finished<H: Handler> {
    slot: u32,
    generation: u32,
    payload: H::Payload,
    ran: Ran<H::Id>,
    was_perform: bool,
    due: Instant,
    needs_init: bool,
    answer: Option<PendingReply<H>>,
}

impl<H: Handler> Finished<H> {
    fn into_done(self, started: Instant, finished: Instant) -> Done<H> {
        Done::Callback {
            slot: self.slot,
            generation: self.generation,
            payload: self.payload,
            ran: self.ran,
            started,
            finished,
            was_perform: self.was_perform,
            due: self.due,
            needs_init: self.needs_init,
            answer: self.answer,
        }
    }
}

async fn run_job<H: Handler>(
    ctx: &WorkerContext<H>,
    job: Job<H>,
    now: Instant,
    stats: &mut WorkerStats,
    on_wait: &mut (dyn FnMut() + Send),
) -> Option<Finished<H>> {
    let handler = &*ctx.handler;
    match job {
        Job::Perform {
            slot,
            generation,
            id,
            mut payload,
            needs_init,
            due,
        } => {
            stats.record_lateness(now.saturating_duration_since(due));
            if needs_init {
                match init_guarded(ctx, &id, payload, on_wait).await {
                    Ok(ready) => payload = ready,
                    Err((backup, ran)) => {
                        stats.record_perform(&ran);
                        return Some(Finished::init_failed(
                            slot, generation, backup, ran, true, due,
                        ));
                    }
                }
            }
            let ran = guarded(&ctx.cancel, handler.perform(&id, &mut payload), on_wait)
                .await
                .map_or_else(|ran| ran, Ran::Outcome);
            stats.record_perform(&ran);
            Some(Finished {
                slot,
                generation,
                payload,
                ran,
                was_perform: true,
                due,
                needs_init: false,
                answer: None,
            })
        }
        Job::Call {
            slot,
            generation,
            id,
            mut payload,
            needs_init,
            request,
            deadline,
            issued,
            reply,
        } => {
            if now >= deadline || reply.is_closed() {
                let _ = reply.send(Err(Error::Timeout {
                    id: format!("{id:?}"),
                    waited: now.saturating_duration_since(issued),
                }));
                return Some(Finished {
                    slot,
                    generation,
                    payload,
                    ran: Ran::Skipped,
                    was_perform: false,
                    due: now,
                    needs_init,
                    answer: None,
                });
            }
            if needs_init {
                match init_guarded(ctx, &id, payload, on_wait).await {
                    Ok(ready) => payload = ready,
                    Err((backup, ran)) => {
                        let result = match &ran {
                            Ran::Panicked(message) => Err(Error::Panicked {
                                id: format!("{id:?}"),
                                message: message.clone(),
                            }),
                            _ => Err(Error::ShuttingDown),
                        };
                        stats.record_call(&ran);
                        let mut finished =
                            Finished::init_failed(slot, generation, backup, ran, false, now);
                        finished.answer = Some(PendingReply { reply, result });
                        return Some(finished);
                    }
                }
            }
            let result = guarded(
                &ctx.cancel,
                handler.call(&id, &mut payload, request),
                on_wait,
            )
            .await;
            let (ran, result) = match result {
                Ok((answer, outcome)) => (Ran::Outcome(outcome), Ok(answer)),
                Err(Ran::Panicked(message)) => {
                    let error = Error::Panicked {
                        id: format!("{id:?}"),
                        message: message.clone(),
                    };
                    (Ran::Panicked(message), Err(error))
                }
                Err(other) => (other, Err(Error::ShuttingDown)),
            };
            stats.record_call(&ran);
            Some(Finished {
                slot,
                generation,
                payload,
                ran,
                was_perform: false,
                due: now,
                needs_init: false,
                answer: Some(PendingReply { reply, result }),
            })
        }
        Job::Cast {
            slot,
            generation,
            id,
            mut payload,
            needs_init,
            message,
        } => {
            if needs_init {
                match init_guarded(ctx, &id, payload, on_wait).await {
                    Ok(ready) => payload = ready,
                    Err((backup, ran)) => {
                        stats.record_cast(&ran);
                        return Some(Finished::init_failed(
                            slot, generation, backup, ran, false, now,
                        ));
                    }
                }
            }
            let ran = guarded(
                &ctx.cancel,
                handler.cast(&id, &mut payload, message),
                on_wait,
            )
            .await
            .map_or_else(|ran| ran, Ran::Outcome);
            stats.record_cast(&ran);
            Some(Finished {
                slot,
                generation,
                payload,
                ran,
                was_perform: false,
                due: now,
                needs_init: false,
                answer: None,
            })
        }
        Job::Terminate {
            id,
            payload,
            reason,
        } => {
            let label = reason.as_str();
            let result: Result<(), Ran<H::Id>> = guarded(
                &ctx.cancel_terminate,
                handler.terminate(&id, payload, reason),
                on_wait,
            )
            .await;
            if let Err(Ran::Panicked(message)) = &result {
                tracing::warn!(id = ?id, error = %message, "terminate panicked; the entry is removed anyway");
                stats.record_panic("terminate");
            }
            stats.record_terminate(label);
            None
        }
    }
}

/// Runs `init` on a payload; on a panic or cancellation, returns the payload
/// as it was before `init`, so the entry keeps a usable value.
async fn init_guarded<H: Handler>(
    ctx: &WorkerContext<H>,
    id: &H::Id,
    payload: H::Payload,
    on_wait: &mut (dyn FnMut() + Send),
) -> Result<H::Payload, (H::Payload, Ran<H::Id>)> {
    let backup = payload.clone();
    match guarded(&ctx.cancel, ctx.handler.init(id, payload), on_wait).await {
        Ok(ready) => Ok(ready),
        Err(ran) => Err((backup, ran)),
    }
}

impl<H: Handler> Finished<H> {
    fn init_failed(
        slot: u32,
        generation: u32,
        payload: H::Payload,
        ran: Ran<H::Id>,
        was_perform: bool,
        due: Instant,
    ) -> Self {
        Finished {
            slot,
            generation,
            payload,
            ran,
            was_perform,
            due,
            needs_init: true,
            answer: None,
        }
    }
}

/// Runs a callback future, catching a panic and honouring shutdown.
///
/// The future is polled once before anything else, so a callback that
/// finishes at once costs no cancellation bookkeeping. If it has to wait,
/// `on_wait` runs (to release the rest of the batch) and the future then
/// races the shutdown token.
async fn guarded<F, T, I>(
    cancel: &CancellationToken,
    future: F,
    on_wait: &mut (dyn FnMut() + Send),
) -> Result<T, Ran<I>>
where
    F: Future<Output = T>,
{
    let mut future = pin!(AssertUnwindSafe(future).catch_unwind());

    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    let result = match first {
        Poll::Ready(result) => result,
        Poll::Pending => {
            on_wait();
            tokio::select! {
                result = future.as_mut() => result,
                _ = cancel.cancelled() => return Err(Ran::Cancelled),
            }
        }
    };
    result.map_err(|panic| Ran::Panicked(panic_message(&*panic)))
}

/// Extracts the message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
