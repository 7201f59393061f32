//! The commit thread: group commit of every shard's writes to the store.
//!
//! Shards send their writes here as they apply changes. The thread takes
//! everything that has arrived, commits it as one batch with one sync, and
//! then answers every caller whose write was in the batch. While one sync
//! runs (about 2.4 ms on the machines keywheel is measured on), the next
//! writes queue up, so the commit window is the length of the previous sync
//! and concurrent callers share it: throughput grows with the number of
//! callers instead of stopping at one sync per write.
//!
//! The thread is a plain OS thread because store calls block.
//!
//! # Failures
//!
//! After a failed commit the store's state is unknown (a failed sync may
//! have dropped pages the kernel had buffered), so the thread commits
//! nothing more: the failed batch and every later write are answered with
//! [`Error::Store`]. The in-memory entries stay as they are and keep
//! running; a restart recovers from whatever the store holds.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use metrics::{Counter, Histogram, Label};

use crate::error::Error;
use crate::metrics as names;
use crate::store::{Store, StoreOp};

/// Ops per commit at most, so one batch never holds an unbounded amount of
/// memory and a huge bulk load still shares syncs with small writes.
const MAX_BATCH_OPS: usize = 64 * 1024;

/// Called once the writes it came with are durable (or have failed).
pub(crate) type Ack = Box<dyn FnOnce(Result<(), Error>) + Send>;

pub(crate) enum Message {
    Write {
        ops: Vec<StoreOp>,
        ack: Option<Ack>,
    },
    /// Commits everything before it, then ends the thread.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// The handle shards and the manager write through. The commit thread
/// ends once every `Writer` is gone (or on [`close`](Writer::close)).
pub(crate) struct Writer {
    sender: Mutex<Option<mpsc::Sender<Message>>>,
    state: Arc<WriterState>,
}

/// State shared by the writers and the commit thread.
pub(crate) struct WriterState {
    /// The version of the next record; grows with every write.
    version: AtomicU64,
    /// Ops sent and not yet committed, for `keywheel_store_queued_ops`.
    pub(crate) queued: AtomicUsize,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl WriterState {
    /// Makes every later version at least `floor`: recovery calls it with
    /// one more than the highest stored version.
    pub(crate) fn raise_version(&self, floor: u64) {
        self.version.fetch_max(floor, Ordering::Relaxed);
    }

    /// Returns the failure that stopped the store's writes, if one has.
    pub(crate) fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl std::ops::Deref for Writer {
    type Target = WriterState;

    fn deref(&self) -> &WriterState {
        &self.state
    }
}

impl Writer {
    /// Returns the state the commit thread shares.
    pub(crate) fn state(&self) -> Arc<WriterState> {
        self.state.clone()
    }

    /// Returns the version for a record written now.
    pub(crate) fn next_version(&self) -> u64 {
        self.version.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends writes to the commit thread; `ack` runs after their commit.
    pub(crate) fn submit(&self, ops: Vec<StoreOp>, ack: Option<Ack>) {
        if ops.is_empty() {
            if let Some(ack) = ack {
                ack(Ok(()));
            }
            return;
        }
        let count = ops.len();
        self.queued.fetch_add(count, Ordering::Relaxed);
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match sender.as_ref() {
            Some(sender) => sender.send(Message::Write { ops, ack }),
            None => Err(mpsc::SendError(Message::Write { ops, ack })),
        };
        if let Err(mpsc::SendError(Message::Write { ack, .. })) = sent {
            self.queued.fetch_sub(count, Ordering::Relaxed);
            if let Some(ack) = ack {
                ack(Err(Error::Store {
                    detail: "the store is closed".to_string(),
                }));
            }
        }
    }

    /// Asks the thread to commit what it has and stop; resolves when it has.
    pub(crate) async fn close(&self) {
        let (done, closed) = tokio::sync::oneshot::channel();
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(sender) = sender {
            if sender.send(Message::Close(done)).is_ok() {
                let _ = closed.await;
            }
        }
    }
}

struct StoreMetrics {
    commits: Counter,
    puts: Counter,
    deletes: Counter,
    errors: Counter,
    commit_seconds: Histogram,
    batch_ops: Histogram,
}

impl StoreMetrics {
    fn new(manager: &str) -> Self {
        let manager = || Label::new("manager", manager.to_string());
        StoreMetrics {
            commits: metrics::counter!(names::STORE_COMMITS_TOTAL, vec![manager()]),
            puts: metrics::counter!(
                names::STORE_WRITES_TOTAL,
                vec![manager(), Label::new("op", "put")]
            ),
            deletes: metrics::counter!(
                names::STORE_WRITES_TOTAL,
                vec![manager(), Label::new("op", "delete")]
            ),
            errors: metrics::counter!(names::STORE_ERRORS_TOTAL, vec![manager()]),
            commit_seconds: metrics::histogram!(names::STORE_COMMIT_SECONDS, vec![manager()]),
            batch_ops: metrics::histogram!(names::STORE_BATCH_OPS, vec![manager()]),
        }
    }
}

/// The commit thread's half: where writes arrive.
pub(crate) struct Inbox {
    receiver: mpsc::Receiver<Message>,
}

/// Creates the writer handle and the inbox the commit thread reads.
pub(crate) fn channel(first_version: u64) -> (Arc<Writer>, Inbox) {
    let (sender, receiver) = mpsc::channel();
    let writer = Arc::new(Writer {
        sender: Mutex::new(Some(sender)),
        state: Arc::new(WriterState {
            version: AtomicU64::new(first_version),
            queued: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        }),
    });
    (writer, Inbox { receiver })
}

/// Commits writes until the manager closes the store or every writer is gone.
pub(crate) fn run(
    mut store: Box<dyn Store>,
    inbox: Inbox,
    writer: Arc<WriterState>,
    manager: &str,
) {
    let metrics = StoreMetrics::new(manager);
    let mut ops: Vec<StoreOp> = Vec::new();
    let mut acks: Vec<Ack> = Vec::new();

    loop {
        let Ok(first) = inbox.receiver.recv() else {
            return;
        };
        let mut close = None;
        let mut take = |message: Message, ops: &mut Vec<StoreOp>, acks: &mut Vec<Ack>| match message
        {
            Message::Write { ops: more, ack } => {
                ops.extend(more);
                acks.extend(ack);
            }
            Message::Close(done) => close = Some(done),
        };
        take(first, &mut ops, &mut acks);
        while ops.len() < MAX_BATCH_OPS {
            match inbox.receiver.try_recv() {
                Ok(message) => take(message, &mut ops, &mut acks),
                Err(_) => break,
            }
        }

        if !ops.is_empty() {
            let result = commit(&mut *store, &ops, &writer, &metrics);
            writer.queued.fetch_sub(ops.len(), Ordering::Relaxed);
            ops.clear();
            for ack in acks.drain(..) {
                ack(result.clone());
            }
        }
        if let Some(done) = close {
            let _ = done.send(());
            return;
        }
    }
}

fn commit(
    store: &mut dyn Store,
    ops: &[StoreOp],
    writer: &WriterState,
    metrics: &StoreMetrics,
) -> Result<(), Error> {
    if let Some(detail) = writer.failure() {
        return Err(Error::Store { detail });
    }

    let started = Instant::now();
    match store.commit(ops) {
        Ok(()) => {
            metrics.commits.increment(1);
            metrics
                .commit_seconds
                .record(started.elapsed().as_secs_f64());
            metrics.batch_ops.record(ops.len() as f64);
            let deletes = ops
                .iter()
                .filter(|op| matches!(op, StoreOp::Delete { .. }))
                .count();
            metrics.deletes.increment(deletes as u64);
            metrics.puts.increment((ops.len() - deletes) as u64);
            Ok(())
        }
        Err(error) => {
            let detail = format!("{}: {error}", store.describe());
            metrics.errors.increment(1);
            tracing::error!(
                error = %detail,
                ops = ops.len(),
                "store commit failed; no further writes will be committed until a restart"
            );
            *writer.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(detail.clone());
            writer.failed.store(true, Ordering::Release);
            Err(Error::Store { detail })
        }
    }
}
