//! The public handle: the store API over the shards and the worker pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::builder::ManagerBuilder;
use crate::config::Config;
use crate::error::{Error, OpenError, PutError};
use crate::handler::{Handler, OutcomeKind};
use crate::options::{Cadence, EntryOptions, Interval};
use crate::persist::committer::{self, Writer};
use crate::persist::Persistence;
use crate::pool::{run_worker, Batch, PoolLoad, WorkerContext};
use crate::routing::Ring;
use crate::shard::persist::{RestoreCounts, Restored, ShardPersist};
use crate::shard::{Command, PutMode, Shard, ShardContext, ShardShared, BULK_SLICE};
use crate::stats::ManagerStats;
use crate::Id;

/// The result of a `put`.
///
/// # Example
///
/// ```
/// # use keywheel::{Handler, Outcome};
/// # struct Counter;
/// # impl Handler for Counter {
/// #     type Id = u64;
/// #     type Payload = u64;
/// #     type Request = ();
/// #     type Reply = u64;
/// #     type Message = u64;
/// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
/// #         *count += 1;
/// #         Outcome::Continue
/// #     }
/// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
/// #         (*count, Outcome::Continue)
/// #     }
/// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
/// #         *count += add;
/// #         Outcome::Continue
/// #     }
/// # }
/// use keywheel::{EntryOptions, Manager, PutResult};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Counter).build()?;
/// let options = EntryOptions::never();
///
/// assert_eq!(manager.put(1, 0, options).await?, PutResult::Inserted);
/// assert_eq!(manager.put(1, 0, options).await?, PutResult::Replaced);
/// assert_eq!(manager.put_new(1, 0, options).await?, PutResult::Exists);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutResult {
    /// The id was new.
    Inserted,
    /// An entry with this id was replaced; its `terminate` runs with `Replaced`.
    Replaced,
    /// `put_new` found an entry with this id and changed nothing.
    Exists,
}

/// A copy of one entry, as [`Manager::get`] returns it.
///
/// # Example
///
/// ```
/// # use keywheel::{Handler, Outcome};
/// # struct Counter;
/// # impl Handler for Counter {
/// #     type Id = u64;
/// #     type Payload = u64;
/// #     type Request = ();
/// #     type Reply = u64;
/// #     type Message = u64;
/// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
/// #         *count += 1;
/// #         Outcome::Continue
/// #     }
/// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
/// #         (*count, Outcome::Continue)
/// #     }
/// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
/// #         *count += add;
/// #         Outcome::Continue
/// #     }
/// # }
/// use keywheel::{EntryOptions, Interval, Manager, OutcomeKind};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Counter).build()?;
/// manager.put(1, 0, EntryOptions::every(Duration::from_secs(1))).await?;
/// tokio::time::sleep(Duration::from_millis(2500)).await;
///
/// let snapshot = manager.get(&1).await?.expect("the entry exists");
/// assert_eq!(snapshot.payload, 2);
/// assert_eq!(snapshot.performs, 2);
/// assert_eq!(snapshot.last_outcome, Some(OutcomeKind::Continue));
/// assert_eq!(snapshot.interval, Interval::Every(Duration::from_secs(1)));
/// let next_due = snapshot.next_due.expect("a perform is scheduled");
/// assert_eq!(next_due - Instant::now(), Duration::from_millis(500));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<P> {
    /// A clone of the payload, taken after the entry's in-flight callback.
    pub payload: P,
    /// The current interval, as stored: rounded up to the 1 ms
    /// [`TICK`](crate::TICK), and changed by any
    /// [`Outcome::Reschedule`](crate::Outcome::Reschedule).
    pub interval: Interval,
    /// When the next perform is due, on tokio's clock.
    ///
    /// `None` when no perform is scheduled (an [`Interval::Never`] entry
    /// after its first run, if any), and for the moment between a timer
    /// firing and its perform starting.
    pub next_due: Option<Instant>,
    /// How many performs of this entry have finished, including those that
    /// panicked. The shard counts in 32 bits, so the count stops at
    /// `u32::MAX`.
    pub performs: u64,
    /// The outcome of the last perform, if any ran; calls and casts do not
    /// change it.
    pub last_outcome: Option<OutcomeKind>,
    /// The cadence of the entry.
    pub cadence: Cadence,
}

/// The life of a manager: `Starting` → `Ready` → `Draining` → `Stopped`.
///
/// # Example
///
/// ```
/// # use keywheel::{Handler, Outcome};
/// # struct Counter;
/// # impl Handler for Counter {
/// #     type Id = u64;
/// #     type Payload = u64;
/// #     type Request = ();
/// #     type Reply = u64;
/// #     type Message = u64;
/// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
/// #         *count += 1;
/// #         Outcome::Continue
/// #     }
/// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
/// #         (*count, Outcome::Continue)
/// #     }
/// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
/// #         *count += add;
/// #         Outcome::Continue
/// #     }
/// # }
/// use keywheel::{Manager, State};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Counter).build()?;
/// manager.ready().await;
/// assert_eq!(manager.state(), State::Ready);
///
/// manager.shutdown(Duration::from_secs(1)).await;
/// assert_eq!(manager.state(), State::Stopped);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Loading initial entries. Operations are accepted already.
    Starting,
    /// The initial entries are loaded.
    Ready,
    /// [`Manager::shutdown`] began: no new performs or operations.
    Draining,
    /// Every task of the manager has ended.
    Stopped,
}

/// The counts of a [`Manager::shutdown`], added up over the shards.
///
/// [`Manager::shutdown`](Manager::shutdown) shows one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Callbacks that were running, or already handed to the worker pool,
    /// when shutdown began: `completed + cancelled`. Performs that had not
    /// started are dropped and not counted.
    pub in_flight: usize,
    /// Callbacks that finished within the grace period.
    pub completed: usize,
    /// Callbacks cancelled when the grace period ended.
    pub cancelled: usize,
    /// `terminate` callbacks that ended during the shutdown: one per entry
    /// with reason `Shutdown` (unless turned off), plus those still pending
    /// from earlier removals. Those cancelled at the end of their own grace
    /// period are counted too.
    pub terminated: usize,
}

/// One shard's part of a [`ShutdownReport`].
pub(crate) type ShardReport = ShutdownReport;

/// Counts of a bulk put.
///
/// [`Manager::put_many`](Manager::put_many) shows one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkPut {
    /// New ids.
    pub inserted: usize,
    /// Ids whose entry was replaced, including an id given twice in the
    /// same call.
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
/// Dropping the last handle stops the shards, and the workers once they
/// have run the jobs already handed to them, without running `terminate`.
/// Call [`shutdown`](Manager::shutdown) for an orderly stop.
///
/// Most method examples use a `Counter` handler like the one in
/// [`Handler`]'s example: its payload counts performs, `call` returns the
/// count and `cast` adds a number to it.
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
    /// The store's writer and commit thread, when persistence is on.
    pub(crate) store: Option<StoreHandle>,
    /// The store's codec, when persistence is on.
    codec: Option<Arc<dyn crate::persist::Codec<H::Id, H::Payload>>>,
}

/// The store side of a manager with persistence.
pub(crate) struct StoreHandle {
    pub(crate) writer: Arc<Writer>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    ///
    /// [`ManagerBuilder`](ManagerBuilder#example) shows it.
    pub fn builder(handler: H) -> ManagerBuilder<H> {
        ManagerBuilder::new(handler)
    }

    pub(crate) fn start(
        handler: Arc<H>,
        config: Config,
        initial: Vec<(H::Id, H::Payload, EntryOptions)>,
    ) -> Self {
        let manager = Self::start_tasks(handler, config, None);
        manager.spawn_initial_load(initial);
        manager
    }

    /// Starts a manager with a store: reads every record back into the
    /// shards, then loads `initial` if the store was empty, then becomes ready.
    pub(crate) async fn open(
        handler: Arc<H>,
        config: Config,
        initial: Vec<(H::Id, H::Payload, EntryOptions)>,
        persistence: Persistence<H::Id, H::Payload>,
    ) -> Result<Self, OpenError> {
        let Persistence {
            store,
            codec,
            flush_interval,
            recovery_spread,
            perform_changes,
        } = persistence;
        let description = store.describe();
        let (writer, inbox) = committer::channel(first_version());
        let seed = ShardPersistSeed {
            codec: codec.clone(),
            writer: writer.clone(),
            perform_changes,
            recovery_spread,
        };
        let shards = config.shards;
        let name = config.name.clone();
        let manager = Self::start_tasks(handler, config, Some(seed));
        let started = std::time::Instant::now();

        // The commit thread reads the store first and hands the entries over
        // in slices, then commits writes until the manager closes it.
        let (slices, mut incoming) = mpsc::channel::<(usize, Vec<Restored<H>>)>(4);
        let (scan_done, scanned) = oneshot::channel();
        let thread_writer = writer.state();
        let thread = std::thread::Builder::new()
            .name("keywheel-store".to_string())
            .spawn(move || {
                let mut store = store;
                let result = crate::persist::scan(
                    &mut *store,
                    &*codec,
                    shards,
                    BULK_SLICE,
                    &mut |shard, items| {
                        let items = items
                            .into_iter()
                            .map(|(id, payload, head)| Restored { id, payload, head })
                            .collect();
                        slices.blocking_send((shard, items)).is_ok()
                    },
                );
                drop(slices);
                if let Ok(scanned) = &result {
                    thread_writer.raise_version(scanned.max_version.saturating_add(1));
                }
                let ok = result.is_ok();
                let _ = scan_done.send(result);
                if ok {
                    committer::run(store, inbox, thread_writer, &name);
                }
            });
        let thread = match thread {
            Ok(thread) => thread,
            Err(error) => {
                manager.abandon().await;
                return Err(OpenError::Store(crate::store::StoreError::Io {
                    path: std::path::PathBuf::from(description),
                    operation: "start the store thread",
                    source: error,
                }));
            }
        };
        if let Some(store) = &manager.inner.store {
            *store.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        }

        let mut replies = Vec::new();
        while let Some((shard, items)) = incoming.recv().await {
            let (reply, response) = oneshot::channel();
            if manager.inner.shards[shard]
                .send(Command::Restore { items, reply })
                .await
                .is_ok()
            {
                replies.push(response);
            }
        }
        let scanned = match scanned.await {
            Ok(Ok(scanned)) => scanned,
            Ok(Err(error)) => {
                manager.abandon().await;
                return Err(OpenError::Store(error));
            }
            Err(_) => {
                manager.abandon().await;
                return Err(OpenError::Store(crate::store::StoreError::Damaged {
                    path: std::path::PathBuf::from(description),
                    detail:
                        "reading the store stopped without a result (the store thread panicked)"
                            .to_string(),
                }));
            }
        };
        let mut counts = RestoreCounts::default();
        for response in replies {
            if let Ok(part) = response.await {
                counts.restored += part.restored;
                counts.overdue += part.overdue;
            }
        }
        let took = started.elapsed();
        crate::metrics::record_recovery(
            &manager.inner.config.name,
            counts.restored,
            counts.overdue,
            took,
        );
        tracing::info!(
            manager = %manager.inner.config.name,
            store = %description,
            records = scanned.records,
            restored = counts.restored,
            overdue = counts.overdue,
            took_ms = took.as_millis() as u64,
            "recovered entries from the store"
        );

        if scanned.records == 0 && !initial.is_empty() {
            if let Err(error) = manager.bulk_put(initial, PutMode::IfAbsent).await {
                manager.abandon().await;
                return Err(OpenError::Initial(error));
            }
        }
        manager.inner.state.send_replace(State::Ready);
        spawn_flusher(Arc::downgrade(&manager.inner), flush_interval);
        Ok(manager)
    }

    /// Stops a manager that failed to open: no `terminate`, no final writes.
    async fn abandon(&self) {
        if let Some(store) = &self.inner.store {
            store.writer.close().await;
        }
        self.inner.state.send_replace(State::Ready);
        self.shutdown_with(Duration::ZERO, false).await;
    }

    fn start_tasks(handler: Arc<H>, config: Config, persist: Option<ShardPersistSeed<H>>) -> Self {
        crate::metrics::describe();
        let config = Arc::new(config);
        let stats = Arc::new(ManagerStats::new(&config.name));
        let load = Arc::new(PoolLoad::default());
        let hasher = hashbrown::DefaultHashBuilder::default();
        let (pool_tx, pool_rx) = async_channel::bounded(config.pool_capacity);
        let (handed_back_tx, handed_back_rx) = async_channel::bounded(config.pool_capacity);
        let (calls_tx, calls_rx) = async_channel::bounded(config.pool_capacity);
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
            calls: calls_rx,
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
                calls: calls_tx.clone(),
                load: load.clone(),
                peers: peers.clone(),
                ring: ring.clone(),
                shared: shared[index].clone(),
                stats: stats.clone(),
                hasher: hasher.clone(),
                persist: persist.as_ref().map(|seed| ShardPersist {
                    codec: seed.codec.clone(),
                    writer: seed.writer.clone(),
                    perform_changes: seed.perform_changes,
                    recovery_spread: seed.recovery_spread,
                }),
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
                codec: persist.as_ref().map(|seed| seed.codec.clone()),
                store: persist.map(|seed| StoreHandle {
                    writer: seed.writer,
                    thread: Mutex::new(None),
                }),
            }),
        };

        crate::gauges::spawn(Arc::downgrade(&manager.inner));
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
    /// once with reason `Replaced`, and the new entry starts a fresh
    /// schedule. If the old entry has a callback in flight, the new entry
    /// takes its place at once and the old `terminate` runs when that
    /// callback returns. Waits while the shard's command queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for an interval of zero or over
    /// [`MAX_INTERVAL`](crate::MAX_INTERVAL), or a first-run delay or jitter
    /// over it; nothing changes. [`Error::ShuttingDown`] once shutdown has
    /// begun. [`PutError`] describes when the payload comes back.
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager, PutResult};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// let every = EntryOptions::every(Duration::from_secs(60));
    ///
    /// assert_eq!(manager.put(1, 0, every).await?, PutResult::Inserted);
    /// assert_eq!(manager.put(1, 40, every).await?, PutResult::Replaced);
    /// assert_eq!(manager.call(&1, ()).await?, 40);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put(
        &self,
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
    ) -> Result<PutResult, PutError<H::Payload>> {
        self.put_with(id, payload, options, PutMode::Upsert, Wait::Block)
            .await
    }

    /// Inserts an entry only if the id is absent; otherwise changes nothing,
    /// runs no callback and returns [`PutResult::Exists`].
    ///
    /// # Errors
    ///
    /// As for [`put`](Manager::put).
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager, PutResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// let options = EntryOptions::never();
    ///
    /// assert_eq!(manager.put_new(1, 0, options).await?, PutResult::Inserted);
    /// assert_eq!(manager.put_new(1, 40, options).await?, PutResult::Exists);
    /// assert_eq!(manager.call(&1, ()).await?, 0);
    /// # Ok(())
    /// # }
    /// ```
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
    /// of waiting when the shard's command queue is full.
    ///
    /// # Errors
    ///
    /// As for `put`, plus `Overloaded`, with the payload handed back.
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager, PutResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // One shard whose command queue has room for one command.
    /// let manager = Manager::builder(Counter).shards(1).command_capacity(1).build()?;
    /// let options = EntryOptions::never();
    ///
    /// // Both puts are sent before the shard takes any: the second finds the queue full.
    /// let (first, second) = tokio::join!(
    ///     manager.try_put(1, 0, options),
    ///     manager.try_put(2, 0, options),
    /// );
    /// assert_eq!(first?, PutResult::Inserted);
    /// let failed = second.unwrap_err();
    /// assert!(failed.error.is_overloaded());
    /// assert_eq!(failed.payload, Some(0));
    /// # Ok(())
    /// # }
    /// ```
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
    /// [`Error::Overloaded`] instead of waiting when the shard's command
    /// queue is full.
    ///
    /// [`try_put`](Manager::try_put) shows a full queue.
    ///
    /// # Errors
    ///
    /// As for `put_new`, plus `Overloaded`, with the payload handed back.
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

    /// Returns a copy of the entry's payload and metadata, or `None` if no
    /// entry has this id.
    ///
    /// Ordered like a `call`: it waits for the entry's in-flight callback
    /// and for the work queued before it, for at most the
    /// [call timeout](crate::ManagerBuilder::call_timeout), so the snapshot
    /// shows the effect of every operation the caller issued before.
    /// [`Snapshot`](Snapshot#example) shows the metadata.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the entry stays busy past the call timeout;
    /// [`Error::ShuttingDown`].
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// manager.put(1, 0, EntryOptions::never()).await?;
    /// manager.cast(&1, 5).await?;
    ///
    /// let snapshot = manager.get(&1).await?.expect("the entry exists");
    /// assert_eq!(snapshot.payload, 5);
    /// assert!(manager.get(&2).await?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, id: &H::Id) -> Result<Option<Snapshot<H::Payload>>, Error> {
        let issued = Instant::now();
        let deadline = deadline_after(issued, self.inner.config.call_timeout);
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
    /// Unlike [`get`](Manager::get), it does not wait for the entry's
    /// in-flight callback; operations the caller issued before it have taken
    /// effect.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`].
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// manager.put(1, 0, EntryOptions::never()).await?;
    ///
    /// assert!(manager.contains(&1).await?);
    /// assert!(!manager.contains(&2).await?);
    /// # Ok(())
    /// # }
    /// ```
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
    /// is discarded and never brings the entry back. `terminate` then runs
    /// when that callback hands the payload back. Calls waiting for the entry get
    /// [`Error::NotFound`], waiting gets return `None`, and casts not yet
    /// run are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`].
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// manager.put(1, 0, EntryOptions::every(Duration::from_secs(1))).await?;
    ///
    /// assert!(manager.del(&1).await?);
    /// assert!(!manager.del(&1).await?);
    /// tokio::time::sleep(Duration::from_secs(5)).await;
    /// assert_eq!(manager.performs(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn del(&self, id: &H::Id) -> Result<bool, Error> {
        let shard = self.shard_of(id);
        self.request(shard, Wait::Block, |reply| Command::Del {
            id: id.clone(),
            reply,
        })
        .await
    }

    /// Like [`del`](Manager::del), but returns [`Error::Overloaded`] instead
    /// of waiting when the shard's command queue is full.
    ///
    /// [`try_put`](Manager::try_put) shows a full queue.
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

    /// Runs the handler's [`call`](Handler::call) for the entry, serialized
    /// with its other callbacks, and returns the reply.
    ///
    /// The deadline is the manager's
    /// [call timeout](crate::ManagerBuilder::call_timeout) from now. A call
    /// still queued at its deadline never runs. A call that has started
    /// runs to the end even if the caller got `Timeout`, and its outcome
    /// applies.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (also when the entry is removed before the call
    /// starts), [`Error::Timeout`], [`Error::Panicked`] (the callback or the
    /// `init` before it panicked), [`Error::ShuttingDown`] (also when the
    /// call is cancelled at the end of the shutdown grace period).
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// manager.put(1, 0, EntryOptions::every(Duration::from_secs(1))).await?;
    /// tokio::time::sleep(Duration::from_millis(3500)).await;
    ///
    /// assert_eq!(manager.call(&1, ()).await?, 3);
    /// assert!(manager.call(&2, ()).await.unwrap_err().is_not_found());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call(&self, id: &H::Id, request: H::Request) -> Result<H::Reply, Error> {
        self.call_with(id, request, self.inner.config.call_timeout, Wait::Block)
            .await
    }

    /// Like [`call`](Manager::call) with its own timeout instead of the
    /// manager's.
    ///
    /// [`Error::is_timeout`](Error::is_timeout) shows it.
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
    /// instead of waiting when the shard's command queue is full.
    ///
    /// [`try_put`](Manager::try_put) shows a full queue.
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
        let deadline = deadline_after(issued, timeout);
        let shard = self.shard_of(id);
        let call = self.request(shard, wait, |reply| Command::Call {
            id: id.clone(),
            request,
            deadline,
            issued,
            reply,
        });
        let result = match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                id: format!("{id:?}"),
                waited: issued.elapsed(),
            }),
        };
        self.inner.stats.counters.count_call(&result);
        result
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
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).routing(true).build()?;
    /// for id in 0..4 {
    ///     manager.put(id, 0, EntryOptions::never()).await?;
    /// }
    ///
    /// // Requests for one user always reach the same entry.
    /// let owner = manager.route(&"user-42").expect("the ring has ids");
    /// manager.cast(&owner, 7).await?;
    /// assert_eq!(manager.call_routed(&"user-42", ()).await?, 7);
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// [`call_routed`](Manager::call_routed) shows it.
    pub fn route(&self, routing_key: &impl Id) -> Option<H::Id> {
        self.inner.ring.as_ref()?.owner(routing_key)
    }

    /// Sends a message to the entry's [`cast`](Handler::cast), FIFO with its
    /// calls.
    ///
    /// Returns once the shard has queued or started it, not when it has
    /// run. The message is dropped if the entry is removed before it runs.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::ShuttingDown`].
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// manager.put(1, 0, EntryOptions::never()).await?;
    ///
    /// manager.cast(&1, 2).await?;
    /// manager.cast(&1, 3).await?;
    /// assert_eq!(manager.call(&1, ()).await?, 5);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cast(&self, id: &H::Id, message: H::Message) -> Result<(), Error> {
        let shard = self.shard_of(id);
        let result = self
            .request(shard, Wait::Block, |reply| Command::Cast {
                id: id.clone(),
                message,
                reply,
            })
            .await;
        self.inner.stats.counters.count_cast(&result);
        result
    }

    /// Like [`cast`](Manager::cast), but returns [`Error::Overloaded`]
    /// instead of waiting when the shard's command queue is full.
    ///
    /// [`try_put`](Manager::try_put) shows a full queue.
    ///
    /// # Errors
    ///
    /// As for `cast`, plus `Overloaded`.
    pub async fn try_cast(&self, id: &H::Id, message: H::Message) -> Result<(), Error> {
        let shard = self.shard_of(id);
        let result = self
            .request(shard, Wait::Try, |reply| Command::Cast {
                id: id.clone(),
                message,
                reply,
            })
            .await;
        self.inner.stats.counters.count_cast(&result);
        result
    }

    /// Inserts many entries, replacing existing ones, without a round trip
    /// per id. Ids go to their shards in slices of at most 16,384, so no
    /// shard stalls on one huge message. Of two entries with the same id,
    /// the later one wins.
    ///
    /// Every entry's options are checked first; if one is invalid nothing
    /// is inserted.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] (naming the first bad entry's problem) or
    /// [`Error::ShuttingDown`]. If shutdown begins midway, the slices that
    /// reached a shard before it stay inserted. Payloads are not handed back.
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{BulkPut, EntryOptions, Manager};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// let every = EntryOptions::every(Duration::from_secs(60));
    ///
    /// let loaded = manager.put_many((0..1000).map(|id| (id, 0, every))).await?;
    /// assert_eq!(loaded, BulkPut { inserted: 1000, replaced: 0 });
    ///
    /// let overlap = manager.put_many((990..1010).map(|id| (id, 0, every))).await?;
    /// assert_eq!(overlap, BulkPut { inserted: 10, replaced: 10 });
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put_many(
        &self,
        entries: impl IntoIterator<Item = (H::Id, H::Payload, EntryOptions)>,
    ) -> Result<BulkPut, Error> {
        self.bulk_put(entries.into_iter().collect(), PutMode::Upsert)
            .await
    }

    /// Splits items by shard into slices of at most [`BULK_SLICE`], keeping
    /// their order within each shard. Each item is moved once.
    fn slice_by_shard<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        id_of: impl Fn(&T) -> &H::Id,
    ) -> Vec<(usize, Vec<Vec<T>>)> {
        let shards = self.inner.shards.len();
        let mut per_shard: Vec<Vec<Vec<T>>> = (0..shards).map(|_| Vec::new()).collect();
        for item in items {
            let slices = &mut per_shard[self.shard_of(id_of(&item))];
            match slices.last_mut() {
                Some(slice) if slice.len() < BULK_SLICE => slice.push(item),
                _ => slices.push(vec![item]),
            }
        }
        per_shard.into_iter().enumerate().collect()
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
        // Each shard encodes its slice again to write it; this first pass
        // makes sure no shard inserts anything when one payload is refused.
        if let Some(codec) = &self.inner.codec {
            let mut scratch = Vec::new();
            for (id, payload, _) in &entries {
                scratch.clear();
                let encoded = codec
                    .encode_id(id, &mut scratch)
                    .and_then(|()| codec.encode_payload(payload, &mut scratch));
                if let Err(error) = encoded {
                    return Err(Error::Codec {
                        id: format!("{id:?}"),
                        detail: error.to_string(),
                    });
                }
            }
        }

        let mut replies = Vec::new();
        for (shard, slices) in self.slice_by_shard(entries, |entry| &entry.0) {
            // The first slice tells the shard how many entries are coming,
            // so its tables grow once, to the size they need, instead of
            // doubling past it.
            let mut coming: usize = slices.iter().map(Vec::len).sum();
            for slice in slices {
                let (reply, response) = oneshot::channel();
                let command = Command::PutMany {
                    items: slice,
                    mode,
                    coming: std::mem::take(&mut coming),
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

    /// Removes many entries without a round trip per id; returns how many
    /// existed. Each removal is like a [`del`](Manager::del).
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`]. If shutdown begins midway, the slices that
    /// reached a shard before it stay removed.
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// manager.put_many((0..100).map(|id| (id, 0, EntryOptions::never()))).await?;
    ///
    /// assert_eq!(manager.del_many(50..150).await?, 50);
    /// assert_eq!(manager.len(), 50);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn del_many(&self, ids: impl IntoIterator<Item = H::Id>) -> Result<usize, Error> {
        let mut replies = Vec::new();
        for (shard, slices) in self.slice_by_shard(ids, |id| id) {
            for slice in slices {
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
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// assert!(manager.is_empty());
    ///
    /// manager.put(1, 0, EntryOptions::never()).await?;
    /// assert_eq!(manager.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.inner
            .shared
            .iter()
            .map(|shard| shard.entries.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Returns true if the manager has no entries.
    ///
    /// [`len`](Manager::len) shows it.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns where the manager is in its life.
    ///
    /// [`State`](State#example) shows it.
    pub fn state(&self) -> State {
        *self.inner.state.borrow()
    }

    /// Waits until the initial entries are loaded (returns at once later on).
    ///
    /// [`ManagerBuilder::initial_entries`](crate::ManagerBuilder::initial_entries)
    /// shows it.
    pub async fn ready(&self) {
        let mut state = self.inner.state.subscribe();
        let _ = state.wait_for(|state| *state != State::Starting).await;
    }

    /// Returns the manager's name, as in its metrics' `manager` label.
    ///
    /// [`ManagerBuilder`](ManagerBuilder#example) shows it.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Returns a copy of the lateness (start minus due time) of every
    /// perform that has started, in microseconds, with two significant
    /// digits (about 1% error).
    ///
    /// Workers add their figures every 100 ms, so the histogram can lag
    /// behind by that much. The copy is about 25 KiB: read it for reports,
    /// not per operation.
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// manager.put(1, 0, EntryOptions::every(Duration::from_secs(1))).await?;
    /// tokio::time::sleep(Duration::from_millis(3500)).await;
    ///
    /// let lateness = manager.lateness();
    /// assert_eq!(lateness.len(), 3);
    /// assert!(lateness.value_at_quantile(0.99) < 1_000, "under 1 ms late");
    /// # Ok(())
    /// # }
    /// ```
    pub fn lateness(&self) -> hdrhistogram::Histogram<u64> {
        self.inner.stats.lateness()
    }

    /// Returns how many performs of all entries have returned an outcome or
    /// panicked. Like [`lateness`](Manager::lateness), it can lag behind by
    /// about 100 ms.
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Counter;
    /// # impl Handler for Counter {
    /// #     type Id = u64;
    /// #     type Payload = u64;
    /// #     type Request = ();
    /// #     type Reply = u64;
    /// #     type Message = u64;
    /// #     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
    /// #         *count += 1;
    /// #         Outcome::Continue
    /// #     }
    /// #     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
    /// #         (*count, Outcome::Continue)
    /// #     }
    /// #     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
    /// #         *count += add;
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Counter).build()?;
    /// manager.put(1, 0, EntryOptions::every(Duration::from_secs(1))).await?;
    /// manager.put(2, 0, EntryOptions::every(Duration::from_secs(2))).await?;
    /// tokio::time::sleep(Duration::from_millis(4500)).await;
    ///
    /// assert_eq!(manager.performs(), 4 + 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn performs(&self) -> u64 {
        self.inner.stats.performs()
    }

    /// Returns the longest turn of any shard loop since the previous call
    /// (or since the manager started), and starts a new measurement.
    ///
    /// A turn applies the callbacks that finished, the commands that
    /// arrived and the timers that fell due, up to a budget of each. While
    /// it runs, nothing else on that shard moves. A long turn shows a
    /// cascade of the timer wheel or an oversized bulk command. The gauge
    /// `keywheel_shard_turn_max_seconds` shows the same per gauge interval.
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Noop;
    /// # impl Handler for Noop {
    /// #     type Id = u64;
    /// #     type Payload = ();
    /// #     type Request = ();
    /// #     type Reply = ();
    /// #     type Message = ();
    /// #     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// use keywheel::{EntryOptions, Manager};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Noop).build()?;
    /// let every = EntryOptions::every(Duration::from_secs(60));
    /// manager.put_many((0..10_000).map(|id| (id, (), every))).await?;
    ///
    /// let longest = manager.take_longest_turn();
    /// assert!(longest > Duration::ZERO, "the bulk load took some time");
    /// assert!(manager.take_longest_turn() <= longest, "a new measurement starts");
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_longest_turn(&self) -> Duration {
        let micros = self
            .inner
            .shared
            .iter()
            .map(|shard| {
                shard
                    .turn_max_taken
                    .swap(0, std::sync::atomic::Ordering::Relaxed)
            })
            .max()
            .unwrap_or(0);
        Duration::from_micros(micros)
    }

    /// Returns what stopped the store from committing writes, if anything
    /// has; `None` also for a manager without a store.
    ///
    /// After a failed commit every later write answers
    /// [`Error::Store`](crate::Error::Store) and is kept in memory only, so
    /// a program should report itself unhealthy and restart.
    ///
    /// # Example
    ///
    /// ```
    /// # use keywheel::{Handler, Outcome};
    /// # struct Noop;
    /// # impl Handler for Noop {
    /// #     type Id = u64;
    /// #     type Payload = ();
    /// #     type Request = ();
    /// #     type Reply = ();
    /// #     type Message = ();
    /// #     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
    /// #         Outcome::Continue
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = keywheel::Manager::builder(Noop).build()?;
    /// assert_eq!(manager.store_failure(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn store_failure(&self) -> Option<String> {
        self.inner
            .store
            .as_ref()
            .and_then(|store| store.writer.failure())
    }

    /// Stops the manager and reports what it did.
    ///
    /// It first waits for the initial entries to be loaded. Then the state
    /// becomes [`State::Draining`]: no perform starts from then on, and new
    /// operations fail with [`Error::ShuttingDown`]. Calls and gets waiting
    /// for a busy entry get `ShuttingDown`, and waiting casts are dropped.
    /// Calls and casts already handed to the worker pool still run.
    ///
    /// Callbacks get `grace` to finish. Those still running then are
    /// cancelled (their futures dropped), and their entries keep the payload
    /// as it was. Then `terminate` runs once per entry with reason
    /// `Shutdown`, unless
    /// [`terminate_on_shutdown`](crate::ManagerBuilder::terminate_on_shutdown)
    /// is off; `terminate` callbacks still running two grace periods after
    /// the start are cancelled. Finally every task ends and the state
    /// becomes [`State::Stopped`].
    ///
    /// Calling it again, from any handle, waits for the first call and
    /// returns its report.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::{EntryOptions, FirstRun, Handler, Manager, Outcome, ShutdownReport};
    /// use std::time::Duration;
    ///
    /// struct Stuck;
    ///
    /// impl Handler for Stuck {
    ///     type Id = u64;
    ///     type Payload = ();
    ///     type Request = ();
    ///     type Reply = ();
    ///     type Message = ();
    ///
    ///     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
    ///         tokio::time::sleep(Duration::from_secs(3600)).await;
    ///         Outcome::Continue
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Stuck).build()?;
    /// let every = EntryOptions::every(Duration::from_secs(60));
    /// manager.put(1, (), every.first_run(FirstRun::Immediately)).await?;
    /// manager.put(2, (), every).await?;
    /// tokio::time::sleep(Duration::from_millis(10)).await;
    ///
    /// // The perform of entry 1 outlives the grace period.
    /// let report = manager.shutdown(Duration::from_secs(1)).await;
    /// assert_eq!(
    ///     report,
    ///     ShutdownReport { in_flight: 1, completed: 0, cancelled: 1, terminated: 2 }
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.shutdown_with(grace, self.inner.config.terminate_on_shutdown)
            .await
    }

    async fn shutdown_with(&self, grace: Duration, run_terminate: bool) -> ShutdownReport {
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
                run_terminate,
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
        // The shards have sent their last writes: commit them and release
        // the store, so it can be opened again as soon as this returns.
        if let Some(store) = &self.inner.store {
            store.writer.close().await;
            let thread = store
                .thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
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

/// Store settings handed to every shard of a manager with a store.
struct ShardPersistSeed<H: Handler> {
    codec: Arc<dyn crate::persist::Codec<H::Id, H::Payload>>,
    writer: Arc<Writer>,
    perform_changes: bool,
    recovery_spread: Duration,
}

/// The version of the first record a manager writes: the wall clock in ms,
/// shifted so that about a million writes fit in each millisecond, so that
/// versions keep growing across restarts unless the wall clock goes back.
fn first_version() -> u64 {
    crate::persist::record::unix_ms(std::time::SystemTime::now()) << 20
}

/// Asks every shard, once per `interval`, to write the payload changes of
/// its callbacks. Ends when the manager stops or is dropped.
fn spawn_flusher<H: Handler>(inner: std::sync::Weak<Inner<H>>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if matches!(*inner.state.borrow(), State::Draining | State::Stopped) {
                return;
            }
            for shard in &inner.shards {
                // A full queue skips this round; the entries stay dirty.
                let _ = shard.try_send(Command::Flush);
            }
        }
    });
}

/// Returns `start + timeout`, capped at about 30 years ahead, so a timeout
/// of `Duration::MAX` means "no deadline" instead of an overflow.
fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);
    start + timeout.min(FAR_FUTURE)
}
