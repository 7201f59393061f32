//! The designs under test behind one interface: a tokio task per key (A,
//! A0), one unsharded `DelayQueue` feeding a worker pool (B, in `queue`),
//! and keywheel (C and its variants).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hashbrown::HashMap;
use hdrhistogram::Histogram;
use keywheel::{EntryOptions, FirstRun, Handler, Id, Manager, Outcome};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::measure;
use crate::queue::Queue;

/// Ids at or above this value have long intervals (the horizon workload):
/// any perform of one of them within a run is early.
pub const LONG_ID_FLOOR: u64 = 1 << 40;

/// Performs of long-horizon ids, counted by every design's perform.
pub static EARLY_PERFORMS: AtomicU64 = AtomicU64::new(0);

/// Capacity of each key's mailbox in the task-per-key design.
const MAILBOX_CAPACITY: usize = 16;

/// The no-op perform every design runs.
#[inline]
pub fn perform(id: u64) {
    if std::hint::black_box(id) >= LONG_ID_FLOOR {
        EARLY_PERFORMS.fetch_add(1, Ordering::Relaxed);
    }
}

/// One key of a workload: its first perform is due `first` after the load
/// starts, later ones `interval` after the previous perform ends.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub id: u64,
    pub interval: Duration,
    pub first: Duration,
}

/// Which design a run builds, with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// One tokio task per key; `mailbox` adds an mpsc mailbox for calls.
    Tasks { mailbox: bool },
    /// One `DelayQueue` task and a worker pool of this size.
    Queue { workers: usize },
    /// keywheel.
    Wheel {
        shards: usize,
        workers: usize,
        stagger: bool,
    },
}

/// A running design.
pub enum Competitor {
    Tasks(Tasks),
    Queue(Queue),
    Wheel(Wheel),
}

impl Competitor {
    /// Starts a design on the current runtime, with no keys.
    pub fn start(design: Design) -> Self {
        match design {
            Design::Tasks { mailbox } => Competitor::Tasks(Tasks {
                mailbox,
                registry: Mutex::new(HashMap::new()),
            }),
            Design::Queue { workers } => Competitor::Queue(Queue::start(workers)),
            Design::Wheel {
                shards,
                workers,
                stagger,
            } => {
                let manager = Manager::builder(Noop)
                    .shards(shards)
                    .workers(workers)
                    .stagger_shards(stagger)
                    .terminate_on_shutdown(false)
                    .build()
                    .expect("valid keywheel settings");
                Competitor::Wheel(Wheel { manager, shards })
            }
        }
    }

    /// Inserts `count` keys in bulk; key `i` comes from `key(i)` and is due
    /// first at `base + first`.
    pub async fn load(&self, count: u64, key: impl Fn(u64) -> KeySpec, base: Instant) {
        match self {
            Competitor::Tasks(tasks) => tasks.load((0..count).map(key), base),
            Competitor::Queue(queue) => queue.load((0..count).map(key), base).await,
            Competitor::Wheel(wheel) => wheel.load((0..count).map(key), base).await,
        }
    }

    /// Inserts or replaces one key, due first `first` from now.
    pub async fn put(&self, spec: KeySpec) {
        match self {
            Competitor::Tasks(tasks) => tasks.put(spec, Instant::now()),
            Competitor::Queue(queue) => queue.put(spec).await,
            Competitor::Wheel(wheel) => {
                let options =
                    EntryOptions::every(spec.interval).first_run(FirstRun::After(spec.first));
                wheel
                    .manager
                    .put(spec.id, (), options)
                    .await
                    .expect("put of a valid entry");
            }
        }
    }

    /// Removes one key; returns true if it existed.
    pub async fn del(&self, id: u64) -> bool {
        match self {
            Competitor::Tasks(tasks) => tasks.del(id),
            Competitor::Queue(queue) => queue.del(id).await,
            Competitor::Wheel(wheel) => wheel.manager.del(&id).await.unwrap_or(false),
        }
    }

    /// Sends a call to the key and waits for the reply; returns false if
    /// the design has no calls or the call failed.
    pub async fn call(&self, id: u64) -> bool {
        match self {
            Competitor::Tasks(tasks) => tasks.call(id).await,
            Competitor::Queue(queue) => queue.call(id).await,
            Competitor::Wheel(wheel) => wheel.manager.call(&id, ()).await.is_ok(),
        }
    }

    /// True if the design routes calls.
    pub fn has_calls(&self) -> bool {
        !matches!(self, Competitor::Tasks(Tasks { mailbox: false, .. }))
    }

    /// Returns, for each timer loop of the design, a loaded id that it
    /// owns; empty for the task-per-key designs, which have no such loop.
    pub fn probe_ids(&self, loaded: u64) -> Vec<u64> {
        match self {
            Competitor::Tasks(_) => Vec::new(),
            Competitor::Queue(_) => vec![0],
            Competitor::Wheel(wheel) => {
                let mut ids = vec![None; wheel.shards];
                for id in 0..loaded {
                    let shard = (id.stable_hash() % wheel.shards as u64) as usize;
                    ids[shard].get_or_insert(id);
                    if ids.iter().all(Option::is_some) {
                        break;
                    }
                }
                ids.into_iter().flatten().collect()
            }
        }
    }

    /// Returns the longest shard loop turn since the previous call, as
    /// keywheel measures it itself; `None` for the other designs.
    pub fn take_longest_turn(&self) -> Option<Duration> {
        match self {
            Competitor::Wheel(wheel) => Some(wheel.manager.take_longest_turn()),
            _ => None,
        }
    }

    /// Asks the timer loop that owns `id` whether it has the id; the round
    /// trip waits for the loop's current turn to end.
    pub async fn contains(&self, id: u64) -> bool {
        match self {
            Competitor::Tasks(_) => false,
            Competitor::Queue(queue) => queue.contains(id).await,
            Competitor::Wheel(wheel) => wheel.manager.contains(&id).await.unwrap_or(false),
        }
    }

    /// Reads back the next due time of up to 300 of the keys that
    /// `load(count, key, base)` inserted and counts those not one interval
    /// after the load (within the load's duration and a second). Returns
    /// (checked, misplaced); only keywheel exposes due times.
    pub async fn check_next_due(
        &self,
        count: u64,
        key: impl Fn(u64) -> KeySpec,
        base: Instant,
    ) -> (u64, u64) {
        let Competitor::Wheel(wheel) = self else {
            return (0, 0);
        };
        let slack = Duration::from_secs(1);
        let step = (count / 300).max(1);
        let (mut checked, mut misplaced) = (0, 0);
        for i in (0..count).step_by(step as usize) {
            let spec = key(i);
            let next_due = match wheel.manager.get(&spec.id).await {
                Ok(Some(snapshot)) => snapshot.next_due,
                _ => None,
            };
            let earliest = base + spec.first;
            let in_place = next_due
                .is_some_and(|due| due >= earliest && due <= Instant::now() + spec.first + slack);
            checked += 1;
            if !in_place {
                misplaced += 1;
            }
        }
        (checked, misplaced)
    }

    /// Returns the lateness of every perform so far, in microseconds.
    pub fn lateness(&self) -> Histogram<u64> {
        match self {
            Competitor::Wheel(wheel) => wheel.manager.lateness(),
            _ => measure::lateness_snapshot(),
        }
    }
}

/// The task-per-key designs: a registry from id to the task's handle.
pub struct Tasks {
    mailbox: bool,
    registry: Mutex<HashMap<u64, TaskHandle>>,
}

enum TaskHandle {
    /// Dropping the sender closes the mailbox and ends the task.
    Mailbox(mpsc::Sender<oneshot::Sender<()>>),
    Abort(AbortHandle),
}

impl TaskHandle {
    fn stop(self) {
        if let TaskHandle::Abort(handle) = self {
            handle.abort();
        }
    }
}

impl Tasks {
    fn load(&self, keys: impl Iterator<Item = KeySpec>, base: Instant) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let keys = keys.into_iter();
        registry.reserve(keys.size_hint().0);
        for spec in keys {
            let handle = self.spawn(spec, base);
            if let Some(old) = registry.insert(spec.id, handle) {
                old.stop();
            }
        }
    }

    fn put(&self, spec: KeySpec, base: Instant) {
        let handle = self.spawn(spec, base);
        let old = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.id, handle);
        if let Some(old) = old {
            old.stop();
        }
    }

    fn del(&self, id: u64) -> bool {
        let old = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        old.map(TaskHandle::stop).is_some()
    }

    async fn call(&self, id: u64) -> bool {
        let sender = {
            let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            match registry.get(&id) {
                Some(TaskHandle::Mailbox(sender)) => sender.clone(),
                _ => return false,
            }
        };
        let (reply, response) = oneshot::channel();
        if sender.send(reply).await.is_err() {
            return false;
        }
        response.await.is_ok()
    }

    fn spawn(&self, spec: KeySpec, base: Instant) -> TaskHandle {
        let due = base + spec.first;
        if self.mailbox {
            let (sender, mailbox) = mpsc::channel(MAILBOX_CAPACITY);
            tokio::spawn(run_actor(spec, due, mailbox));
            TaskHandle::Mailbox(sender)
        } else {
            TaskHandle::Abort(tokio::spawn(run_sleeper(spec, due)).abort_handle())
        }
    }
}

/// Runs one key as a task with a mailbox: serves calls and performs on its
/// timer, with the next due time one interval after the perform (fixed delay).
async fn run_actor(
    spec: KeySpec,
    mut due: Instant,
    mut mailbox: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let sleep = tokio::time::sleep_until(due);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            message = mailbox.recv() => match message {
                Some(reply) => {
                    let _ = reply.send(());
                }
                None => return,
            },
            () = &mut sleep => {
                let now = Instant::now();
                measure::record_lateness(measure::micros(now.saturating_duration_since(due)));
                perform(spec.id);
                due = now + spec.interval;
                sleep.as_mut().reset(due);
            }
        }
    }
}

/// Runs one key as a task that only sleeps and performs.
async fn run_sleeper(spec: KeySpec, mut due: Instant) {
    loop {
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        measure::record_lateness(measure::micros(now.saturating_duration_since(due)));
        perform(spec.id);
        due = now + spec.interval;
    }
}

/// keywheel with a no-op handler.
pub struct Wheel {
    manager: Manager<Noop>,
    shards: usize,
}

impl Wheel {
    async fn load(&self, keys: impl Iterator<Item = KeySpec>, base: Instant) {
        // The manager takes a delay, not a due time: convert once, now.
        let now = Instant::now();
        let entries = keys.map(|spec| {
            let first = (base + spec.first).saturating_duration_since(now);
            let options = EntryOptions::every(spec.interval).first_run(FirstRun::After(first));
            (spec.id, (), options)
        });
        self.manager
            .put_many(entries)
            .await
            .expect("bulk put of valid entries");
    }
}

/// The handler of every keywheel run: performs nothing and continues.
pub struct Noop;

impl Handler for Noop {
    type Id = u64;
    type Payload = ();
    type Request = ();
    type Reply = ();
    type Message = ();

    async fn perform(&self, id: &u64, _payload: &mut ()) -> Outcome<u64> {
        perform(*id);
        Outcome::Continue
    }
}
