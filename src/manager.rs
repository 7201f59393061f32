//! The public handle: the store API over the shards and the worker pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::builder::ManagerBuilder;
use crate::config::Config;
use crate::error::{Error, PutError};
use crate::handler::{Handler, OutcomeKind};
use crate::options::{Cadence, EntryOptions, Interval};
use crate::pool::{run_worker, Batch, PoolLoad, WorkerContext};
use crate::routing::Ring;
use crate::shard::{Command, PutMode, Shard, ShardContext, ShardShared, BULK_SLICE};
use crate::stats::ManagerStats;
use crate::Id;

/// The result of a `put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutResult {
    /// The id was new.
    Inserted,
    /// An entry with this id was replaced; its `terminate` runs with `Replaced`.
    Replaced,
    /// `put_new` found an entry with this id and changed nothing.
    Exists,
}

/// A copy of one entry, as `get` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<P> {
    /// A clone of the payload, taken after the entry's in-flight callback.
    pub payload: P,
    /// The current interval (after any `Reschedule`).
    pub interval: Interval,
    /// When the next perform is due; `None` if no perform is scheduled.
    pub next_due: Option<Instant>,
    /// How many performs have finished.
    pub performs: u64,
    /// The outcome of the last perform, if any ran.
    pub last_outcome: Option<OutcomeKind>,
    /// The cadence of the entry.
    pub cadence: Cadence,
}

/// The life of a manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Loading initial entries.
    Starting,
    /// Serving.
    Ready,
    /// `shutdown` began: no new performs or operations.
    Draining,
    /// Every task has ended.
    Stopped,
}

/// What `shutdown` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Callbacks running when shutdown began.
    pub in_flight: usize,
    /// Callbacks that finished within the grace period.
    pub completed: usize,
    /// Callbacks cancelled when the grace period ended.
    pub cancelled: usize,
    /// `terminate` callbacks run (for `Shutdown` and for removals still pending).
    pub terminated: usize,
}

/// One shard's part of a [`ShutdownReport`].
pub(crate) type ShardReport = ShutdownReport;

/// Counts of a bulk put.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkPut {
    /// New ids.
    pub inserted: usize,
    /// Ids whose entry was replaced.
    pub replaced: usize,
}

/// A handle to a running manager: cheap to clone, usable from any task.
///
/// A manager keeps entries in `S` shards (an id's shard is its
/// [`stable_hash`](Id::stable_hash) modulo `S`); each shard is one tokio task
/// with a timer wheel, a slab and an id index. A fixed worker pool runs the
/// callbacks. Operations on one id are applied in the order a caller issued
/// them, and each returned future resolves once the operation took effect.
///
/// Dropping the last handle stops the manager's tasks without running
/// `terminate`; call [`shutdown`](Manager::shutdown) for an orderly stop.
///
/// # Example
///
/// ```
/// use keywheel::{EntryOptions, Handler, Manager, Outcome, PutResult};
/// use std::time::Duration;
///
/// struct Ping;
/// impl Handler for Ping {
///     type Id = String;
///     type Payload = u32;
///     type Request = ();
///     type Reply = u32;
///     type Message = ();
///     async fn perform(&self, _id: &String, pings: &mut u32) -> Outcome<String> {
///         *pings += 1;
///         Outcome::Continue
///     }
///     async fn call(&self, _id: &String, pings: &mut u32, _: ()) -> (u32, Outcome<String>) {
///         (*pings, Outcome::Continue)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Ping).build()?;
/// let every = EntryOptions::every(Duration::from_millis(100));
/// assert_eq!(manager.put("a".to_string(), 0, every).await?, PutResult::Inserted);
///
/// tokio::time::sleep(Duration::from_millis(350)).await;
/// assert_eq!(manager.call(&"a".to_string(), ()).await?, 3);
///
/// assert!(manager.del(&"a".to_string()).await?);
/// manager.shutdown(Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
pub struct Manager<H: Handler> {
    inner: Arc<Inner<H>>,
}

impl<H: Handler> Clone for Manager<H> {
    fn clone(&self) -> Self {
        Manager {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Inner<H: Handler> {
    pub(crate) config: Arc<Config>,
    shards: Vec<mpsc::Sender<Command<H>>>,
    pub(crate) shared: Vec<Arc<ShardShared>>,
    pool: async_channel::Sender<Batch<H>>,
    pub(crate) load: Arc<PoolLoad>,
    pub(crate) stats: Arc<ManagerStats>,
    state: watch::Sender<State>,
    cancel: CancellationToken,
    cancel_terminate: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    ring: Option<Arc<Ring<H::Id>>>,
    report: tokio::sync::Mutex<Option<ShutdownReport>>,
}

impl<H: Handler> Inner<H> {
    pub(crate) fn is_stopped(&self) -> bool {
        *self.state.borrow() == State::Stopped
    }
}

impl<H: Handler> Drop for Inner<H> {
    fn drop(&mut self) {
        // Shards hold senders of the pool's queue until they notice that the
        // manager is gone; closing it here lets the workers end at once.
        self.pool.close();
    }
}

/// How an operation treats a full shard queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Waits for room.
    Block,
    /// Returns [`Error::Overloaded`].
    Try,
}

impl<H: Handler> Manager<H> {
    /// Returns a builder for a manager over `handler`.
    pub fn builder(handler: H) -> ManagerBuilder<H> {
        ManagerBuilder::new(handler)
    }

    pub(crate) fn start(
        handler: Arc<H>,
        config: Config,
        initial: Vec<(H::Id, H::Payload, EntryOptions)>,
    ) -> Self {
        crate::metrics::describe();
        let config = Arc::new(config);
        let stats = Arc::new(ManagerStats::new(&config.name));
        let load = Arc::new(PoolLoad::default());
        let hasher = hashbrown::DefaultHashBuilder::default();
        let (pool_tx, pool_rx) = async_channel::bounded(config.pool_capacity);
        let (handed_back_tx, handed_back_rx) = async_channel::bounded(config.pool_capacity);
        let cancel = CancellationToken::new();
        let cancel_terminate = CancellationToken::new();

        let mut senders = Vec::with_capacity(config.shards);
        let mut receivers = Vec::with_capacity(config.shards);
        let mut done_senders = Vec::with_capacity(config.shards);
        let mut done_receivers = Vec::with_capacity(config.shards);
        for _ in 0..config.shards {
            let (tx, rx) = mpsc::channel(config.command_capacity);
            senders.push(tx);
            receivers.push(rx);
            // Unbounded on purpose: completions are bounded by the jobs in
            // flight, and a bounded channel here could deadlock a shard that
            // waits on a full pool queue against workers that wait on it.
            let (done_tx, done_rx) = mpsc::unbounded_channel();
            done_senders.push(done_tx);
            done_receivers.push(done_rx);
        }
        let shared: Vec<Arc<ShardShared>> = (0..config.shards)
            .map(|_| Arc::new(ShardShared::default()))
            .collect();
        let ring = config.routing.then(|| Arc::new(Ring::new()));
        let peers: Arc<[mpsc::WeakSender<Command<H>>]> =
            senders.iter().map(|tx| tx.downgrade()).collect();

        let mut tasks = Vec::new();
        let worker_context = Arc::new(WorkerContext {
            handler,
            batches: pool_rx,
            handed_back: handed_back_rx,
            requeue: handed_back_tx,
            done: done_senders,
            load: load.clone(),
            stats: stats.clone(),
            shards: shared.clone(),
            cancel: cancel.clone(),
            cancel_terminate: cancel_terminate.clone(),
        });
        for _ in 0..config.workers {
            tasks.push(tokio::spawn(run_worker(worker_context.clone())));
        }
        for (index, (commands, done)) in receivers.into_iter().zip(done_receivers).enumerate() {
            let shard = Shard::new(ShardContext {
                index,
                config: config.clone(),
                commands,
                done,
                pool: pool_tx.clone(),
                load: load.clone(),
                peers: peers.clone(),
                ring: ring.clone(),
                shared: shared[index].clone(),
                stats: stats.clone(),
                hasher: hasher.clone(),
            });
            tasks.push(tokio::spawn(shard.run()));
        }

        let (state, _) = watch::channel(State::Starting);
        let manager = Manager {
            inner: Arc::new(Inner {
                config,
                shards: senders,
                shared,
                pool: pool_tx,
                load,
                stats,
                state,
                cancel,
                cancel_terminate,
                tasks: Mutex::new(tasks),
                ring,
                report: tokio::sync::Mutex::new(None),
            }),
        };

        crate::gauges::spawn(Arc::downgrade(&manager.inner));
        manager.spawn_initial_load(initial);
        manager
    }

    /// Loads the initial entries with `put_new` semantics, then becomes ready.
    fn spawn_initial_load(&self, initial: Vec<(H::Id, H::Payload, EntryOptions)>) {
        let manager = self.clone();
        tokio::spawn(async move {
            if !initial.is_empty() {
                if let Err(error) = manager.bulk_put(initial, PutMode::IfAbsent).await {
                    tracing::warn!(%error, "loading initial entries failed");
                }
            }
            manager.inner.state.send_if_modified(|state| {
                let starting = *state == State::Starting;
                if starting {
                    *state = State::Ready;
                }
                starting
            });
        });
    }

    fn shard_of(&self, id: &H::Id) -> usize {
        (id.stable_hash() % self.inner.shards.len() as u64) as usize
    }

    /// Sends a command built around a reply channel and waits for the reply.
    async fn request<T>(
        &self,
        shard: usize,
        wait: Wait,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command<H>,
    ) -> Result<T, Error> {
        let (reply, response) = oneshot::channel();
        self.send(shard, wait, make(reply))
            .await
            .map_err(|(error, _)| error)?;
        response.await.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Sends a command; on failure returns the command, so a payload can be handed back.
    async fn send(
        &self,
        shard: usize,
        wait: Wait,
        command: Command<H>,
    ) -> Result<(), (Error, Command<H>)> {
        if self.is_closed() {
            return Err((Error::ShuttingDown, command));
        }
        let sender = &self.inner.shards[shard];
        match wait {
            Wait::Block => sender
                .send(command)
                .await
                .map_err(|err| (Error::ShuttingDown, err.0)),
            Wait::Try => sender.try_send(command).map_err(|err| match err {
                mpsc::error::TrySendError::Full(command) => (Error::Overloaded { shard }, command),
                mpsc::error::TrySendError::Closed(command) => (Error::ShuttingDown, command),
            }),
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self.state(), State::Draining | State::Stopped)
    }

    /// Inserts an entry, replacing any entry with the same id.
    ///
    /// A replaced entry's pending timer is cancelled, its `terminate` runs
    /// once with reason `Replaced`, and the new entry starts a fresh schedule.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for an interval of zero or over
    /// [`MAX_INTERVAL`](crate::MAX_INTERVAL) (nothing changes), or
    /// [`Error::ShuttingDown`]. The payload comes back in the error.
    pub async fn put(
        &self,
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
    ) -> Result<PutResult, PutError<H::Payload>> {
        self.put_with(id, payload, options, PutMode::Upsert, Wait::Block)
            .await
    }

    /// Inserts an entry only if the id is absent; otherwise changes nothing
    /// and returns [`PutResult::Exists`].
    ///
    /// # Errors
    ///
    /// As for [`put`](Manager::put).
    pub async fn put_new(
        &self,
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
    ) -> Result<PutResult, PutError<H::Payload>> {
        self.put_with(id, payload, options, PutMode::IfAbsent, Wait::Block)
            .await
    }

    /// Like [`put`](Manager::put), but returns [`Error::Overloaded`] instead
    /// of waiting when the shard's queue is full.
    ///
    /// # Errors
    ///
    /// As for `put`, plus `Overloaded`.
    pub async fn try_put(
        &self,
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
    ) -> Result<PutResult, PutError<H::Payload>> {
        self.put_with(id, payload, options, PutMode::Upsert, Wait::Try)
            .await
    }

    /// Like [`put_new`](Manager::put_new), but returns
    /// [`Error::Overloaded`] instead of waiting when the shard's queue is full.
    ///
    /// # Errors
    ///
    /// As for `put_new`, plus `Overloaded`.
    pub async fn try_put_new(
        &self,
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
    ) -> Result<PutResult, PutError<H::Payload>> {
        self.put_with(id, payload, options, PutMode::IfAbsent, Wait::Try)
            .await
    }

    async fn put_with(
        &self,
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
        mode: PutMode,
        wait: Wait,
    ) -> Result<PutResult, PutError<H::Payload>> {
        if let Err(error) = options.validate() {
            self.inner.stats.counters.count_rejected(&error);
            return Err(PutError {
                error: error.into(),
                payload: Some(payload),
            });
        }

        let shard = self.shard_of(&id);
        let (reply, response) = oneshot::channel();
        let command = Command::Put {
            id,
            payload,
            options,
            mode,
            reply: Some(reply),
        };
        if let Err((error, command)) = self.send(shard, wait, command).await {
            let payload = match command {
                Command::Put { payload, .. } => Some(payload),
                _ => None,
            };
            return Err(PutError { error, payload });
        }
        match response.await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(PutError {
                error,
                payload: None,
            }),
            Err(_) => Err(PutError {
                error: Error::ShuttingDown,
                payload: None,
            }),
        }
    }

    /// Returns a copy of the entry's payload and metadata, or `None`.
    ///
    /// Ordered like a `call`: it waits for an in-flight callback of the id,
    /// for at most the call timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the entry stays busy past the call timeout;
    /// [`Error::ShuttingDown`].
    pub async fn get(&self, id: &H::Id) -> Result<Option<Snapshot<H::Payload>>, Error> {
        let issued = Instant::now();
        let deadline = issued + self.inner.config.call_timeout;
        let shard = self.shard_of(id);
        let request = self.request(shard, Wait::Block, |reply| Command::Get {
            id: id.clone(),
            reply,
        });
        match tokio::time::timeout_at(deadline, request).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                id: format!("{id:?}"),
                waited: issued.elapsed(),
            }),
        }
    }

    /// Returns true if an entry has this id.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`].
    pub async fn contains(&self, id: &H::Id) -> Result<bool, Error> {
        let shard = self.shard_of(id);
        self.request(shard, Wait::Block, |reply| Command::Contains {
            id: id.clone(),
            reply,
        })
        .await
    }

    /// Removes an entry; returns true if it existed.
    ///
    /// `terminate` runs once with reason `Deleted`. No perform starts after
    /// this returns. A callback already running may finish, but its outcome
    /// is discarded and never brings the entry back; `terminate` then runs
    /// when it hands the payload back.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`].
    pub async fn del(&self, id: &H::Id) -> Result<bool, Error> {
        let shard = self.shard_of(id);
        self.request(shard, Wait::Block, |reply| Command::Del {
            id: id.clone(),
            reply,
        })
        .await
    }

    /// Like [`del`](Manager::del), but returns [`Error::Overloaded`] instead
    /// of waiting when the shard's queue is full.
    ///
    /// # Errors
    ///
    /// `Overloaded` or `ShuttingDown`.
    pub async fn try_del(&self, id: &H::Id) -> Result<bool, Error> {
        let shard = self.shard_of(id);
        self.request(shard, Wait::Try, |reply| Command::Del {
            id: id.clone(),
            reply,
        })
        .await
    }

    /// Runs the handler's `call` for the entry, serialized with its other
    /// callbacks, with the manager's call timeout as deadline.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Timeout`] (the call did not start, or
    /// did not finish, before the deadline; a call that had not started
    /// never runs), [`Error::Panicked`], [`Error::ShuttingDown`].
    pub async fn call(&self, id: &H::Id, request: H::Request) -> Result<H::Reply, Error> {
        self.call_with(id, request, self.inner.config.call_timeout, Wait::Block)
            .await
    }

    /// Like [`call`](Manager::call) with an explicit timeout.
    ///
    /// # Errors
    ///
    /// As for `call`.
    pub async fn call_timeout(
        &self,
        id: &H::Id,
        request: H::Request,
        timeout: Duration,
    ) -> Result<H::Reply, Error> {
        self.call_with(id, request, timeout, Wait::Block).await
    }

    /// Like [`call`](Manager::call), but returns [`Error::Overloaded`]
    /// instead of waiting when the shard's queue is full.
    ///
    /// # Errors
    ///
    /// As for `call`, plus `Overloaded`.
    pub async fn try_call(&self, id: &H::Id, request: H::Request) -> Result<H::Reply, Error> {
        self.call_with(id, request, self.inner.config.call_timeout, Wait::Try)
            .await
    }

    async fn call_with(
        &self,
        id: &H::Id,
        request: H::Request,
        timeout: Duration,
        wait: Wait,
    ) -> Result<H::Reply, Error> {
        let issued = Instant::now();
        let deadline = issued + timeout;
        let shard = self.shard_of(id);
        let call = self.request(shard, wait, |reply| Command::Call {
            id: id.clone(),
            request,
            deadline,
            issued,
            reply,
        });
        match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_) => {
                self.inner.stats.counters.calls_timed_out.increment(1);
                Err(Error::Timeout {
                    id: format!("{id:?}"),
                    waited: issued.elapsed(),
                })
            }
        }
    }

    /// Runs a `call` on the entry that owns `routing_key` on the routing
    /// ring (a consistent hash over the current ids): the same key keeps
    /// reaching the same entry while the ids stay the same, and adding or
    /// removing one id moves only about 1/n of the keys.
    ///
    /// Needs [`ManagerBuilder::routing`](crate::ManagerBuilder::routing).
    ///
    /// # Errors
    ///
    /// [`Error::RoutingOff`] without routing, [`Error::NoRoute`] with no
    /// entries, and the errors of [`call`](Manager::call). If the chosen
    /// entry is removed between the lookup and the call, the result is
    /// [`Error::NotFound`]; retry to reach the key's new owner.
    pub async fn call_routed<K: Id>(
        &self,
        routing_key: &K,
        request: H::Request,
    ) -> Result<H::Reply, Error> {
        let ring = self.inner.ring.as_ref().ok_or(Error::RoutingOff)?;
        let id = ring.owner(routing_key).ok_or(Error::NoRoute)?;
        self.call(&id, request).await
    }

    /// Returns the id that owns `routing_key` on the routing ring, or `None`
    /// when routing is off or the manager has no entries.
    pub fn route(&self, routing_key: &impl Id) -> Option<H::Id> {
        self.inner.ring.as_ref()?.owner(routing_key)
    }

    /// Sends a message to the entry's `cast`, FIFO with its calls. Returns
    /// once the shard has queued it; the message is dropped if the entry is
    /// deleted before it runs.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::ShuttingDown`].
    pub async fn cast(&self, id: &H::Id, message: H::Message) -> Result<(), Error> {
        let shard = self.shard_of(id);
        self.request(shard, Wait::Block, |reply| Command::Cast {
            id: id.clone(),
            message,
            reply,
        })
        .await
    }

    /// Like [`cast`](Manager::cast), but returns [`Error::Overloaded`]
    /// instead of waiting when the shard's queue is full.
    ///
    /// # Errors
    ///
    /// As for `cast`, plus `Overloaded`.
    pub async fn try_cast(&self, id: &H::Id, message: H::Message) -> Result<(), Error> {
        let shard = self.shard_of(id);
        self.request(shard, Wait::Try, |reply| Command::Cast {
            id: id.clone(),
            message,
            reply,
        })
        .await
    }

    /// Inserts many entries, replacing existing ones, without a round trip
    /// per id. Ids go to their shards in slices of at most 16,384, so no
    /// shard stalls on one huge message.
    ///
    /// Every entry's options are checked first; if one is invalid nothing
    /// is inserted.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] (naming the first bad entry's problem) or
    /// [`Error::ShuttingDown`].
    pub async fn put_many(
        &self,
        entries: impl IntoIterator<Item = (H::Id, H::Payload, EntryOptions)>,
    ) -> Result<BulkPut, Error> {
        self.bulk_put(entries.into_iter().collect(), PutMode::Upsert)
            .await
    }

    async fn bulk_put(
        &self,
        entries: Vec<(H::Id, H::Payload, EntryOptions)>,
        mode: PutMode,
    ) -> Result<BulkPut, Error> {
        for (_, _, options) in &entries {
            if let Err(error) = options.validate() {
                self.inner.stats.counters.count_rejected(&error);
                return Err(error.into());
            }
        }

        let shards = self.inner.shards.len();
        let mut per_shard: Vec<Vec<_>> = (0..shards).map(|_| Vec::new()).collect();
        for entry in entries {
            let shard = self.shard_of(&entry.0);
            per_shard[shard].push(entry);
        }

        let mut replies = Vec::new();
        for (shard, mut items) in per_shard.into_iter().enumerate() {
            while !items.is_empty() {
                let rest = items.split_off(items.len().min(BULK_SLICE));
                let slice = std::mem::replace(&mut items, rest);
                let (reply, response) = oneshot::channel();
                let command = Command::PutMany {
                    items: slice,
                    mode,
                    reply,
                };
                self.send(shard, Wait::Block, command)
                    .await
                    .map_err(|(error, _)| error)?;
                replies.push(response);
            }
        }

        let mut report = BulkPut::default();
        for response in replies {
            let (inserted, replaced) = response.await.unwrap_or(Err(Error::ShuttingDown))?;
            report.inserted += inserted;
            report.replaced += replaced;
        }
        Ok(report)
    }

    /// Removes many entries without a round trip per id; returns how many existed.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`].
    pub async fn del_many(&self, ids: impl IntoIterator<Item = H::Id>) -> Result<usize, Error> {
        let shards = self.inner.shards.len();
        let mut per_shard: Vec<Vec<H::Id>> = (0..shards).map(|_| Vec::new()).collect();
        for id in ids {
            let shard = self.shard_of(&id);
            per_shard[shard].push(id);
        }

        let mut replies = Vec::new();
        for (shard, mut ids) in per_shard.into_iter().enumerate() {
            while !ids.is_empty() {
                let rest = ids.split_off(ids.len().min(BULK_SLICE));
                let slice = std::mem::replace(&mut ids, rest);
                let (reply, response) = oneshot::channel();
                self.send(shard, Wait::Block, Command::DelMany { ids: slice, reply })
                    .await
                    .map_err(|(error, _)| error)?;
                replies.push(response);
            }
        }

        let mut deleted = 0;
        for response in replies {
            deleted += response.await.unwrap_or(Err(Error::ShuttingDown))?;
        }
        Ok(deleted)
    }

    /// Returns the number of entries. Each shard publishes its count after
    /// every change, so a count read after an acknowledged put includes it.
    pub fn len(&self) -> usize {
        self.inner
            .shared
            .iter()
            .map(|shard| shard.entries.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Returns true if the manager has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns where the manager is in its life.
    pub fn state(&self) -> State {
        *self.inner.state.borrow()
    }

    /// Waits until the initial entries are loaded (returns at once later on).
    pub async fn ready(&self) {
        let mut state = self.inner.state.subscribe();
        let _ = state.wait_for(|state| *state != State::Starting).await;
    }

    /// Returns the manager's name, as in its metrics' `manager` label.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Returns the lateness of every perform so far (start minus due time),
    /// in microseconds. Workers publish at least every 100 ms.
    pub fn lateness(&self) -> hdrhistogram::Histogram<u64> {
        self.inner.stats.lateness()
    }

    /// Returns how many performs have finished (published at least every 100 ms).
    pub fn performs(&self) -> u64 {
        self.inner.stats.performs()
    }

    /// Stops the manager.
    ///
    /// No perform starts after this is called, and new operations fail with
    /// [`Error::ShuttingDown`]. Callbacks already running get `grace` to
    /// finish and are then cancelled (their futures dropped). Then
    /// `terminate` runs once per entry with reason `Shutdown` (unless turned
    /// off in the builder), with another `grace` to finish. Calling it again
    /// waits for the first call and returns its report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let mut report_slot = self.inner.report.lock().await;
        if let Some(report) = *report_slot {
            return report;
        }
        self.ready().await;
        self.inner.state.send_replace(State::Draining);
        // Workers check this before each perform, so a perform still queued
        // in the pool does not start, even before its shard sees the command.
        for shard in &self.inner.shared {
            shard
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
        }

        let cancel = self.inner.cancel.clone();
        let cancel_terminate = self.inner.cancel_terminate.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            cancel.cancel();
            tokio::time::sleep(grace).await;
            cancel_terminate.cancel();
        });

        let mut replies = Vec::new();
        for sender in &self.inner.shards {
            let (reply, response) = oneshot::channel();
            let command = Command::Shutdown {
                grace,
                run_terminate: self.inner.config.terminate_on_shutdown,
                reply,
            };
            if sender.send(command).await.is_ok() {
                replies.push(response);
            }
        }

        let mut report = ShutdownReport::default();
        for response in replies {
            if let Ok(part) = response.await {
                report.in_flight += part.in_flight;
                report.completed += part.completed;
                report.cancelled += part.cancelled;
                report.terminated += part.terminated;
            }
        }

        timer.abort();
        self.inner.pool.close();
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
        for task in tasks {
            let _ = task.await;
        }
        // The workers have flushed their tallies; hand the last lateness
        // samples to the metrics recorder.
        self.inner.stats.publish_lateness();
        self.inner.state.send_replace(State::Stopped);
        tracing::debug!(manager = %self.inner.config.name, ?report, "manager stopped");

        *report_slot = Some(report);
        report
    }
}
