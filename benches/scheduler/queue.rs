//! Design B: one task owns one tokio-util `DelayQueue` and a hash map from
//! id to timer key, and hands due performs to a worker pool in batches of
//! up to 256, as keywheel does, but with a single queue for every key.
//!
//! Calls go through the queue task to the pool; they are not serialized
//! with the key's perform, which keywheel does and this design skips.

use std::future::poll_fn;
use std::task::{Context, Poll};

use hashbrown::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::time::delay_queue::Key;
use tokio_util::time::DelayQueue;

use crate::competitors::{perform, KeySpec};
use crate::measure;

const BATCH: usize = 256;
const DONE_BUDGET: usize = 64;
const COMMAND_BUDGET: usize = 256;
const DUE_BUDGET: usize = 2048;
/// Keys per bulk-load command, so one command never stalls the loop for long.
const LOAD_SLICE: usize = 16 * 1024;

enum Command {
    Load(Vec<(KeySpec, Instant)>, oneshot::Sender<()>),
    Put(KeySpec, Instant, oneshot::Sender<()>),
    Del(u64, oneshot::Sender<bool>),
    Call(u64, oneshot::Sender<()>),
    Contains(u64, oneshot::Sender<bool>),
}

enum Job {
    Perform {
        id: u64,
        generation: u32,
        due: Instant,
    },
    Call(oneshot::Sender<()>),
}

struct Done {
    id: u64,
    generation: u32,
    finished: Instant,
}

struct Entry {
    key: Key,
    interval_ms: u32,
    generation: u32,
    armed: bool,
}

/// A handle to the queue task.
pub struct Queue {
    commands: mpsc::Sender<Command>,
}

impl Queue {
    /// Starts the queue task and `workers` pool workers.
    pub fn start(workers: usize) -> Self {
        let (commands, command_rx) = mpsc::channel(1024);
        let (pool, pool_rx) = async_channel::bounded::<Vec<Job>>(256);
        let (done, done_rx) = mpsc::unbounded_channel();
        for _ in 0..workers {
            tokio::spawn(run_worker(pool_rx.clone(), done.clone()));
        }
        let state = QueueTask {
            delays: DelayQueue::new(),
            entries: HashMap::new(),
            commands: command_rx,
            done: done_rx,
            pool,
            next_generation: 0,
            outgoing: Vec::new(),
        };
        tokio::spawn(state.run());
        Queue { commands }
    }

    pub async fn load(&self, keys: impl Iterator<Item = KeySpec>, base: Instant) {
        let mut replies = Vec::new();
        let mut slice = Vec::with_capacity(LOAD_SLICE);
        for spec in keys {
            slice.push((spec, base + spec.first));
            if slice.len() == LOAD_SLICE {
                let full = std::mem::replace(&mut slice, Vec::with_capacity(LOAD_SLICE));
                replies.push(self.send_load(full).await);
            }
        }
        if !slice.is_empty() {
            replies.push(self.send_load(slice).await);
        }
        for reply in replies {
            let _ = reply.await;
        }
    }

    async fn send_load(&self, slice: Vec<(KeySpec, Instant)>) -> oneshot::Receiver<()> {
        let (reply, response) = oneshot::channel();
        let _ = self.commands.send(Command::Load(slice, reply)).await;
        response
    }

    pub async fn put(&self, spec: KeySpec) {
        let (reply, response) = oneshot::channel();
        let due = Instant::now() + spec.first;
        let _ = self.commands.send(Command::Put(spec, due, reply)).await;
        let _ = response.await;
    }

    pub async fn del(&self, id: u64) -> bool {
        let (reply, response) = oneshot::channel();
        let _ = self.commands.send(Command::Del(id, reply)).await;
        response.await.unwrap_or(false)
    }

    pub async fn call(&self, id: u64) -> bool {
        let (reply, response) = oneshot::channel();
        let _ = self.commands.send(Command::Call(id, reply)).await;
        response.await.is_ok()
    }

    pub async fn contains(&self, id: u64) -> bool {
        let (reply, response) = oneshot::channel();
        let _ = self.commands.send(Command::Contains(id, reply)).await;
        response.await.unwrap_or(false)
    }
}

struct QueueTask {
    delays: DelayQueue<(u64, u32)>,
    entries: HashMap<u64, Entry>,
    commands: mpsc::Receiver<Command>,
    done: mpsc::UnboundedReceiver<Vec<Done>>,
    pool: async_channel::Sender<Vec<Job>>,
    next_generation: u32,
    outgoing: Vec<Vec<Job>>,
}

impl QueueTask {
    async fn run(mut self) {
        let mut commands = Vec::with_capacity(COMMAND_BUDGET);
        let mut done = Vec::with_capacity(DONE_BUDGET);
        let mut due = Vec::with_capacity(DUE_BUDGET);
        loop {
            let open = poll_fn(|cx| self.poll_work(cx, &mut commands, &mut done, &mut due)).await;
            if !open {
                return;
            }
            for batch in done.drain(..) {
                for finished in batch {
                    self.rearm(finished);
                }
            }
            let now = Instant::now();
            for command in commands.drain(..) {
                self.apply(command, now);
            }
            for (id, generation, deadline) in due.drain(..) {
                self.fire(id, generation, deadline);
            }
            for batch in self.outgoing.drain(..) {
                if self.pool.send(batch).await.is_err() {
                    return;
                }
            }
        }
    }

    fn poll_work(
        &mut self,
        cx: &mut Context<'_>,
        commands: &mut Vec<Command>,
        done: &mut Vec<Vec<Done>>,
        due: &mut Vec<(u64, u32, Instant)>,
    ) -> Poll<bool> {
        let _ = self.done.poll_recv_many(cx, done, DONE_BUDGET);
        if let Poll::Ready(0) = self.commands.poll_recv_many(cx, commands, COMMAND_BUDGET) {
            return Poll::Ready(false);
        }
        while due.len() < DUE_BUDGET {
            let Poll::Ready(Some(expired)) = self.delays.poll_expired(cx) else {
                break;
            };
            let (id, generation) = *expired.get_ref();
            due.push((id, generation, expired.deadline()));
        }
        if done.is_empty() && commands.is_empty() && due.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(true)
        }
    }

    fn apply(&mut self, command: Command, now: Instant) {
        match command {
            Command::Load(slice, reply) => {
                self.entries.reserve(slice.len());
                for (spec, due) in slice {
                    self.insert(spec, due);
                }
                let _ = reply.send(());
            }
            Command::Put(spec, due, reply) => {
                self.insert(spec, due.max(now));
                let _ = reply.send(());
            }
            Command::Del(id, reply) => {
                let existed = match self.entries.remove(&id) {
                    Some(entry) => {
                        if entry.armed {
                            self.delays.try_remove(&entry.key);
                        }
                        true
                    }
                    None => false,
                };
                let _ = reply.send(existed);
            }
            Command::Call(id, reply) => {
                if self.entries.contains_key(&id) {
                    self.push(Job::Call(reply));
                }
            }
            Command::Contains(id, reply) => {
                let _ = reply.send(self.entries.contains_key(&id));
            }
        }
    }

    fn insert(&mut self, spec: KeySpec, due: Instant) {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let key = self.delays.insert_at((spec.id, generation), due);
        let interval_ms = u32::try_from(spec.interval.as_millis()).unwrap_or(u32::MAX);
        let entry = Entry {
            key,
            interval_ms,
            generation,
            armed: true,
        };
        if let Some(old) = self.entries.insert(spec.id, entry) {
            if old.armed {
                self.delays.try_remove(&old.key);
            }
        }
    }

    fn fire(&mut self, id: u64, generation: u32, due: Instant) {
        match self.entries.get_mut(&id) {
            Some(entry) if entry.generation == generation && entry.armed => entry.armed = false,
            _ => return,
        }
        self.push(Job::Perform {
            id,
            generation,
            due,
        });
    }

    fn rearm(&mut self, done: Done) {
        let Some(entry) = self.entries.get_mut(&done.id) else {
            return;
        };
        if entry.generation != done.generation || entry.armed {
            return;
        }
        let next = done.finished + std::time::Duration::from_millis(u64::from(entry.interval_ms));
        entry.key = self.delays.insert_at((done.id, done.generation), next);
        entry.armed = true;
    }

    fn push(&mut self, job: Job) {
        match self.outgoing.last_mut() {
            Some(batch) if batch.len() < BATCH => batch.push(job),
            _ => {
                let mut batch = Vec::with_capacity(BATCH);
                batch.push(job);
                self.outgoing.push(batch);
            }
        }
    }
}

async fn run_worker(
    batches: async_channel::Receiver<Vec<Job>>,
    done: mpsc::UnboundedSender<Vec<Done>>,
) {
    let mut lateness = Vec::with_capacity(BATCH);
    while let Ok(batch) = batches.recv().await {
        let now = Instant::now();
        let mut finished = Vec::with_capacity(batch.len());
        for job in batch {
            match job {
                Job::Perform {
                    id,
                    generation,
                    due,
                } => {
                    lateness.push(measure::micros(now.saturating_duration_since(due)));
                    perform(id);
                    finished.push(Done {
                        id,
                        generation,
                        finished: now,
                    });
                }
                Job::Call(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        measure::record_lateness_batch(&lateness);
        lateness.clear();
        if !finished.is_empty() && done.send(finished).is_err() {
            return;
        }
    }
}
