//! A shard: one task that alone owns a timer wheel, a slab of entries and an
//! id index.
//!
//! # Ground rules
//!
//! Nothing in a shard is shared. The shard task is the only code that reads
//! or writes its slab, index and timers, so none of them needs a lock. Other
//! tasks talk to it through its command channel, and the worker pool hands
//! payloads back through its completion channel. While a callback runs, the
//! payload lives in the job, not in the slab, and the entry is marked busy.
//!
//! # The loop
//!
//! Each turn collects finished jobs, commands and expired timers, up to a
//! budget each, and applies them in that order. Then it hands the due work
//! to the pool in batches. The budgets keep one turn short, so a burst of due
//! timers never freezes calls and commands for long.
//!
//! # Timers and stale work
//!
//! Timers and jobs carry the entry's slot and generation. Generations come
//! from a shard-wide counter, so when a slot is freed and reused, an old
//! timer or job never matches the new entry. An entry's timer is forgotten
//! the moment it fires, before anything else runs, because `DelayQueue`
//! reuses a fired timer's key for the next insert.
//!
//! # Horizon and shard count
//!
//! The wheel has 6 levels of 64 slots at 1 ms, so it covers 2^36 ms (about
//! 795 days) from its creation; see [`timers`] for how a shard stays inside
//! that. The default shard count is 32 whatever the core count: on a
//! 2-core machine, a prototype of this design measured lateness p99 of about
//! 58 ms with 2 shards, 4–10 ms with 8 and 3–4 ms with 32 at a million
//! performs per second, because a level-2 cascade moves about 1/S of all
//! keys at once.

mod command;
mod completion;
mod drain;
mod entry;
mod index;
mod operations;
pub(crate) mod persist;
pub(crate) mod timers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use slab::Slab;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::delay_queue::Key;

use command::Waiter;
pub(crate) use command::{Command, PutMode};
use drain::Phase;
use entry::Entry;
use index::IdIndex;
use timers::{TimerRef, Timers};

use crate::config::Config;
use crate::handler::Handler;
use crate::pool::{Batch, Done, Job, PoolLoad};
use crate::stats::ManagerStats;

/// Finished job batches taken per turn.
const DONE_BUDGET: usize = 64;
/// Commands taken per turn. A bulk command counts as one but carries at most
/// [`BULK_SLICE`] ids.
const COMMAND_BUDGET: usize = 256;
/// Expired timers taken per turn.
const DUE_BUDGET: usize = 2048;
/// Ids per bulk command: a prototype measured 15–130 ms stalls when a whole
/// shard's bulk load arrived as one message; 16k keys take a few ms.
pub(crate) const BULK_SLICE: usize = 16 * 1024;

/// Figures a shard publishes for the manager to read without a round trip,
/// and the few facts its workers check before they start a job.
#[derive(Default)]
pub(crate) struct ShardShared {
    pub(crate) entries: AtomicUsize,
    /// Performs that are due and not started: in the pool queue or waiting
    /// for an in-flight callback of their entry.
    pub(crate) due_waiting: AtomicUsize,
    /// Entries removed (deleted, replaced, halted, moved) while a job of
    /// theirs was on the pool, as (slot, generation). A job may wait in the
    /// pool's queue long after its entry was removed. `del` promises that no
    /// perform starts after it returns, so workers skip these jobs. The
    /// shard adds an entry when it detaches it and drops it when the job
    /// comes back.
    revoked: Mutex<HashSet<(u32, u32)>>,
    /// The size of `revoked`, so workers skip the lock while it is empty.
    revoked_len: AtomicUsize,
    /// Set when shutdown begins: workers start no more performs.
    pub(crate) draining: AtomicBool,
    /// Due times of the performs handed to the pool, in hand-over order,
    /// for the age of the oldest one not started.
    dues: Mutex<HandedDues>,
    /// Performs of this shard that workers have taken (started or skipped).
    pub(crate) performs_taken: AtomicU64,
    /// The longest loop turn, in µs, since the gauges last read it.
    pub(crate) turn_max_gauge: AtomicU64,
    /// The longest loop turn, in µs, since
    /// [`Manager::take_longest_turn`](crate::Manager::take_longest_turn)
    /// last read it.
    pub(crate) turn_max_taken: AtomicU64,
}

/// Due times of handed-over performs, oldest first.
#[derive(Default)]
struct HandedDues {
    dues: VecDeque<Instant>,
    /// How many dues have been dropped from the front so far.
    dropped: u64,
}

impl ShardShared {
    /// Marks the in-flight job of a removed entry, so it is skipped if it has not started.
    pub(crate) fn revoke(&self, slot: u32, generation: u32) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if revoked.insert((slot, generation)) {
            self.revoked_len.fetch_add(1, Ordering::Release);
        }
    }

    /// Forgets a revoked job once its payload has come back.
    pub(crate) fn forget_revoked(&self, slot: u32, generation: u32) {
        if self.revoked_len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if revoked.remove(&(slot, generation)) {
            self.revoked_len.fetch_sub(1, Ordering::Release);
        }
    }

    /// Records the due times of performs just handed to the pool.
    fn hand_over(&self, dues: impl Iterator<Item = Instant>) {
        let mut handed = self.dues.lock().unwrap_or_else(|e| e.into_inner());
        handed.dues.extend(dues);
        self.drop_taken(&mut handed);
    }

    fn drop_taken(&self, handed: &mut HandedDues) {
        let taken = self.performs_taken.load(Ordering::Acquire);
        while handed.dropped < taken && handed.dues.pop_front().is_some() {
            handed.dropped += 1;
        }
    }

    /// Returns the due time of the oldest handed-over perform that no
    /// worker has taken yet.
    ///
    /// NOTE: this assumes workers take performs in hand-over order, which
    /// is true except when a callback waits and the rest of its batch moves to
    /// another worker; performs waiting behind a call of their entry are not
    /// counted.
    pub(crate) fn oldest_due(&self) -> Option<Instant> {
        let mut handed = self.dues.lock().unwrap_or_else(|e| e.into_inner());
        self.drop_taken(&mut handed);
        handed.dues.front().copied()
    }

    /// Returns true if the entry of this job was removed after the job was queued.
    pub(crate) fn is_revoked(&self, slot: u32, generation: u32) -> bool {
        if self.revoked_len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.contains(&(slot, generation))
    }
}

/// The channels, settings and shared figures a shard gets from its manager.
pub(crate) struct ShardContext<H: Handler> {
    pub(crate) index: usize,
    pub(crate) config: Arc<Config>,
    pub(crate) commands: mpsc::Receiver<Command<H>>,
    pub(crate) done: mpsc::UnboundedReceiver<Vec<Done<H>>>,
    pub(crate) pool: async_channel::Sender<Batch<H>>,
    /// The pool's queue for calls, which workers read first.
    pub(crate) calls: async_channel::Sender<Batch<H>>,
    pub(crate) load: Arc<PoolLoad>,
    /// Every shard's command channel, for `Move` to an id on another shard.
    /// Weak, so the shards alone never keep each other alive.
    pub(crate) peers: Arc<[mpsc::WeakSender<Command<H>>]>,
    pub(crate) shared: Arc<ShardShared>,
    pub(crate) stats: Arc<ManagerStats>,
    pub(crate) hasher: hashbrown::DefaultHashBuilder,
    /// The routing ring, when routed calls are on.
    pub(crate) ring: Option<Arc<crate::routing::Ring<H::Id>>>,
    /// The store writer, when persistence is on.
    pub(crate) persist: Option<persist::ShardPersist<H>>,
}

pub(crate) struct Shard<H: Handler> {
    ctx: ShardContext<H>,
    slab: Slab<Entry<H::Id, H::Payload>>,
    index: IdIndex,
    timers: Timers,
    /// Stored in entries without a timer; never used to address one.
    placeholder: Key,
    next_generation: u32,
    waiters: HashMap<u32, VecDeque<Waiter<H>>>,
    /// The end reason of each detached entry, keyed by slot.
    detached: HashMap<u32, crate::handler::TerminateReason>,
    /// Recent panics per slot, for the restart limit.
    panics: HashMap<u32, completion::PanicWindow>,
    /// Jobs for the pool, already split into batches.
    outgoing: Vec<VecDeque<Job<H>>>,
    /// Calls for the pool, sent ahead of `outgoing` on the calls queue.
    outgoing_calls: VecDeque<Job<H>>,
    /// Callbacks on the pool whose payload has not come back.
    in_flight: usize,
    /// Terminate jobs on the pool.
    terminating: usize,
    phase: Phase,
    rng: u64,
    overrun_log: crate::log::LogLimiter,
    panic_log: crate::log::LogLimiter,
    store_log: crate::log::LogLimiter,
    /// Entries whose payload may have changed since their last write, as
    /// (slot, generation); see [`Flags::DIRTY`](entry::Flags::DIRTY).
    dirty: Vec<(u32, u32)>,
    /// Store writes of the change being applied, sent together.
    pending_ops: Vec<crate::store::StoreOp>,
    /// The original due time of entries that were overdue at recovery, by
    /// slot, with the entry's generation.
    recovered_due: HashMap<u32, (u32, Instant)>,
}

impl<H: Handler> Shard<H> {
    pub(crate) fn new(ctx: ShardContext<H>) -> Self {
        let shards = ctx.config.shards as u32;
        let offset = timers::CASCADE_PERIOD * ctx.index as u32 / shards;
        let offset = if ctx.config.stagger {
            offset
        } else {
            std::time::Duration::ZERO
        };
        let seed = ctx.config.seed ^ (ctx.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Shard {
            index: IdIndex::new(ctx.hasher.clone()),
            ctx,
            slab: Slab::new(),
            timers: Timers::new(offset),
            placeholder: Timers::placeholder_key(),
            next_generation: 0,
            waiters: HashMap::new(),
            detached: HashMap::new(),
            panics: HashMap::new(),
            outgoing: Vec::new(),
            outgoing_calls: VecDeque::new(),
            in_flight: 0,
            terminating: 0,
            phase: Phase::Running,
            rng: seed | 1,
            overrun_log: crate::log::LogLimiter::new(),
            panic_log: crate::log::LogLimiter::new(),
            store_log: crate::log::LogLimiter::new(),
            dirty: Vec::new(),
            pending_ops: Vec::new(),
            recovered_due: HashMap::new(),
        }
    }

    /// Runs the shard until shutdown or until every manager handle is gone.
    pub(crate) async fn run(mut self) {
        // The buffers start empty and grow to what a busy turn needs: sized
        // for full budgets up front, they took about 3 MB over 32 shards
        // that an idle manager never uses.
        let mut commands = Vec::new();
        let mut done = Vec::new();
        let mut due = Vec::new();

        loop {
            let open = poll_fn(|cx| self.poll_work(cx, &mut commands, &mut done, &mut due)).await;
            let now = Instant::now();

            for batch in done.drain(..) {
                for finished in batch {
                    self.on_done(finished, now);
                }
            }
            for command in commands.drain(..) {
                self.on_command(command, now);
            }
            for (timer, deadline) in due.drain(..) {
                self.on_due(timer, deadline, now);
            }

            // A drain step may queue `terminate` jobs, so it comes before the send.
            let finished = self.drain_step(now);
            self.record_turn(now);
            self.send_outgoing().await;
            if finished || !open {
                break;
            }
        }

        self.ctx.shared.entries.store(0, Ordering::Relaxed);
    }

    /// Collects work; ready when anything arrived. Returns false once the
    /// command channel is closed (every manager handle dropped).
    fn poll_work(
        &mut self,
        cx: &mut Context<'_>,
        commands: &mut Vec<Command<H>>,
        done: &mut Vec<Vec<Done<H>>>,
        due: &mut Vec<(TimerRef, Instant)>,
    ) -> Poll<bool> {
        let mut open = true;

        if let Poll::Ready(0) = self.ctx.done.poll_recv_many(cx, done, DONE_BUDGET) {
            // Never closed while the shard runs, because the pool keeps its sender.
        }
        if self.phase.accepts_commands() {
            if let Poll::Ready(0) = self
                .ctx
                .commands
                .poll_recv_many(cx, commands, COMMAND_BUDGET)
            {
                open = false;
            }
        }
        if self.phase.runs_timers() {
            while due.len() < DUE_BUDGET {
                let Poll::Ready(Some(expired)) = self.timers.poll_expired(cx) else {
                    break;
                };
                let timer = *expired.get_ref();
                // Forget the key now: the next insert may reuse it.
                if let Some(entry) = self.slab.get_mut(timer.slot as usize) {
                    if entry.generation == timer.generation {
                        entry.disarm();
                    }
                }
                due.push((timer, expired.deadline()));
            }
        }

        if !open || !done.is_empty() || !commands.is_empty() || !due.is_empty() {
            Poll::Ready(open)
        } else {
            Poll::Pending
        }
    }

    /// Hands the collected jobs to the pool, waiting while its queue is full.
    async fn send_outgoing(&mut self) {
        if !self.outgoing_calls.is_empty() {
            let jobs = std::mem::take(&mut self.outgoing_calls);
            self.ctx
                .load
                .queued
                .fetch_add(jobs.len(), Ordering::Relaxed);
            let batch = Batch {
                shard: self.ctx.index,
                jobs,
            };
            if self.ctx.calls.send(batch).await.is_err() {
                return;
            }
        }
        for jobs in self.outgoing.drain(..) {
            self.ctx
                .load
                .queued
                .fetch_add(jobs.len(), Ordering::Relaxed);
            self.ctx
                .shared
                .hand_over(jobs.iter().filter_map(|job| match job {
                    Job::Perform { due, .. } => Some(*due),
                    _ => None,
                }));
            let batch = Batch {
                shard: self.ctx.index,
                jobs,
            };
            if self.ctx.pool.send(batch).await.is_err() {
                // The pool closes when the last manager handle is dropped
                // without a shutdown; nobody waits for these jobs any more.
                return;
            }
        }
    }

    /// Queues a job for the pool.
    fn push_job(&mut self, job: Job<H>) {
        if matches!(job, Job::Call { .. }) {
            self.outgoing_calls.push_back(job);
            return;
        }
        let batch_size = self.ctx.config.batch_size;
        match self.outgoing.last_mut() {
            Some(batch) if batch.len() < batch_size => batch.push_back(job),
            _ => {
                let mut batch = VecDeque::with_capacity(batch_size);
                batch.push_back(job);
                self.outgoing.push(batch);
            }
        }
    }

    fn next_generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// Returns a pseudo-random number in `[0, bound)` (splitmix64), for jitter.
    fn random_below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        z % bound
    }

    /// Records how long this turn's work took, from `started` to now. The
    /// wait for room in the pool's queue that follows is not counted: the
    /// loop is idle then, and `keywheel_pool_queued` shows that pressure.
    fn record_turn(&self, started: Instant) {
        let took = Instant::now().saturating_duration_since(started);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let shared = &self.ctx.shared;
        shared.turn_max_gauge.fetch_max(micros, Ordering::Relaxed);
        shared.turn_max_taken.fetch_max(micros, Ordering::Relaxed);
    }

    fn publish_len(&self) {
        self.ctx
            .shared
            .entries
            .store(self.index.len(), Ordering::Relaxed);
    }
}
