//! Store operations inside a shard: put, get, del, call, cast and their bulk forms.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::command::{Command, PutMode, Reply, Waiter};
use super::entry::{Entry, Flags};
use super::timers::TimerRef;
use super::Shard;
use crate::error::Error;
use crate::handler::{Handler, TerminateReason};
use crate::manager::{PutResult, Snapshot};
use crate::options::{ceil_millis, EntryOptions, FirstRun, Interval, PackedInterval, MAX_INTERVAL};
use crate::pool::Job;

impl<H: Handler> Shard<H> {
    pub(super) fn on_command(&mut self, command: Command<H>, now: Instant) {
        if !self.phase.accepts_commands() {
            reject_shutting_down(command);
            return;
        }

        match command {
            Command::Put {
                id,
                payload,
                options,
                mode,
                reply,
            } => match reply {
                Some(reply) if self.persisting() => {
                    self.put_persisted(id, payload, options, mode, reply, now)
                }
                Some(reply) => {
                    let (result, _) = self.put(id, payload, options, mode, now);
                    let _ = reply.send(Ok(result));
                }
                // The insert half of a `Move`. The shard the entry left has
                // written the record already, in one commit with the delete
                // of the old id. It is written again here, in this shard's
                // order, so a put or del of this id that arrived in between
                // cannot leave the store different from the entry served.
                None if self.persisting() => match self.encode(&id, &payload) {
                    Ok(encoded) => {
                        let (_, slot) = self.put(id, payload, options, mode, now);
                        let op = self.record_op(slot, encoded, now);
                        self.pending_ops.push(op);
                        self.submit_pending(None);
                    }
                    Err(error) => {
                        self.log_store_problem(&error);
                        self.put(id, payload, options, mode, now);
                    }
                },
                None => {
                    self.put(id, payload, options, mode, now);
                }
            },
            Command::PutMany {
                items,
                mode,
                coming,
                reply,
            } => {
                let encoded = if self.persisting() {
                    let encoded: Result<Vec<_>, Error> = items
                        .iter()
                        .map(|(id, payload, _)| self.encode(id, payload))
                        .collect();
                    match encoded {
                        Ok(encoded) => Some(encoded),
                        Err(error) => {
                            let _ = reply.send(Err(error));
                            return;
                        }
                    }
                } else {
                    None
                };

                let (mut inserted, mut replaced) = (0, 0);
                let mut ops = Vec::new();
                if coming > 0 {
                    self.reserve_exact(coming);
                }
                self.index.reserve(&self.slab, items.len());
                self.slab.reserve(items.len());
                let mut encoded = encoded.map(Vec::into_iter);
                for (id, payload, options) in items {
                    let (result, slot) = self.put(id, payload, options, mode, now);
                    let bytes = encoded.as_mut().and_then(Iterator::next);
                    match result {
                        PutResult::Inserted => inserted += 1,
                        PutResult::Replaced => replaced += 1,
                        PutResult::Exists => continue,
                    }
                    if let Some(bytes) = bytes {
                        ops.push(self.record_op(slot, bytes, now));
                    }
                }
                self.submit_with_reply(ops, reply, (inserted, replaced));
            }
            Command::Get { id, reply } => self.get(id, reply),
            Command::Contains { id, reply } => {
                let _ = reply.send(Ok(self.index.find(&self.slab, &id).is_some()));
            }
            Command::Del { id, reply } => {
                let existed = self.del(&id);
                let ops = self.delete_ops(existed.then_some(&id));
                self.submit_with_reply(ops, reply, existed);
            }
            Command::DelMany { ids, reply } => {
                let deleted: Vec<&H::Id> = ids.iter().filter(|id| self.del(id)).collect();
                let count = deleted.len();
                let ops = self.delete_ops(deleted);
                self.submit_with_reply(ops, reply, count);
            }
            Command::Call {
                id,
                request,
                deadline,
                issued,
                reply,
            } => self.call(id, request, deadline, issued, reply, now),
            Command::Cast { id, message, reply } => self.cast(id, message, reply),
            Command::Restore { items, reply } => self.restore(items, reply, now),
            Command::Flush => self.flush_dirty(now),
            Command::Shutdown {
                grace,
                run_terminate,
                reply,
            } => self.begin_drain(grace, run_terminate, reply, now),
        }
    }

    /// Inserts or replaces an entry and sets its first timer.
    pub(super) fn put(
        &mut self,
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
        mode: PutMode,
        now: Instant,
    ) -> (PutResult, u32) {
        let existing = self.index.find(&self.slab, &id);
        if let (Some(slot), PutMode::IfAbsent) = (existing, mode) {
            self.ctx.stats.counters.puts_exists.increment(1);
            return (PutResult::Exists, slot);
        }
        if let Some(slot) = existing {
            self.remove(slot, TerminateReason::Replaced);
        }

        // Also after a replace: removing the old entry took the id off the ring.
        let slot = self.insert_entry(
            id,
            payload,
            PackedInterval::new(options.interval),
            options.cadence,
        );

        match self.first_due(&options, now) {
            // Due now: start the perform at once, so it runs before any
            // call or cast sent after this put (they queue behind it).
            Some(first_due) if first_due <= now => {
                self.ctx.shared.due_waiting.fetch_add(1, Ordering::Relaxed);
                self.dispatch(slot, Waiter::Perform { due: first_due }, now);
            }
            Some(first_due) => self.arm(slot, first_due, now),
            None => {}
        }
        self.publish_len();

        if existing.is_some() {
            self.ctx.stats.counters.puts_replaced.increment(1);
            (PutResult::Replaced, slot)
        } else {
            self.ctx.stats.counters.puts_inserted.increment(1);
            (PutResult::Inserted, slot)
        }
    }

    /// Puts an entry and replies once its record is committed. The payload
    /// is encoded first, so a payload the codec rejects changes nothing.
    fn put_persisted(
        &mut self,
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
        mode: PutMode,
        reply: Reply<PutResult>,
        now: Instant,
    ) {
        let encoded = match self.encode(&id, &payload) {
            Ok(encoded) => encoded,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let (result, slot) = self.put(id, payload, options, mode, now);
        let ops = match result {
            PutResult::Exists => Vec::new(),
            PutResult::Inserted | PutResult::Replaced => vec![self.record_op(slot, encoded, now)],
        };
        self.submit_with_reply(ops, reply, result);
    }

    /// Returns the store deletes for removed ids (none without a store).
    fn delete_ops<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a H::Id>,
    ) -> Vec<crate::store::StoreOp> {
        if !self.persisting() {
            return Vec::new();
        }
        ids.into_iter()
            .filter_map(|id| self.key_of(id))
            .map(|key| crate::store::StoreOp::Delete { key })
            .collect()
    }

    /// Makes room for `additional` more entries in the slab, the index and
    /// the timer queue. Each grows at most once, to the size asked (the
    /// index to its next power of two), so a bulk load leaves no doubled
    /// spare capacity behind.
    fn reserve_exact(&mut self, additional: usize) {
        self.slab.reserve_exact(additional);
        self.index.reserve(&self.slab, additional);
        self.timers.reserve(additional);
    }

    /// Adds a new entry, with no timer, to the slab, the index and the
    /// routing ring; returns its slot. The id must not be in the index.
    pub(super) fn insert_entry(
        &mut self,
        id: H::Id,
        payload: H::Payload,
        interval: PackedInterval,
        cadence: crate::options::Cadence,
    ) -> u32 {
        let generation = self.next_generation();
        let entry = Entry::new(id, payload, interval, cadence, generation, self.placeholder);
        let slot = self.slab.insert(entry) as u32;
        self.index
            .insert(&self.slab, &self.slab[slot as usize].id, slot);
        if let Some(ring) = &self.ctx.ring {
            ring.add(&self.slab[slot as usize].id);
        }
        slot
    }

    /// Returns the first due time of a new entry, at most [`MAX_INTERVAL`] ahead.
    fn first_due(&mut self, options: &EntryOptions, now: Instant) -> Option<Instant> {
        let delay = match (options.first_run, options.interval) {
            (FirstRun::AfterInterval, Interval::Every(every)) => every,
            (FirstRun::AfterInterval, Interval::Never) => return None,
            (FirstRun::Immediately, _) => Duration::ZERO,
            (FirstRun::After(after), _) => after,
        };
        let jitter_ms = ceil_millis(options.jitter);
        let jitter = Duration::from_millis(self.random_below(jitter_ms));
        let delay = delay.saturating_add(jitter).min(MAX_INTERVAL);
        Some(now + delay)
    }

    /// Sets the timer of the entry in `slot`.
    pub(super) fn arm(&mut self, slot: u32, when: Instant, now: Instant) {
        if self.timers.renewal_blocked(now) {
            self.migrate_retiring_timers(now);
        }
        let entry = &mut self.slab[slot as usize];
        let timer = TimerRef {
            slot,
            generation: entry.generation,
        };
        let key = self.timers.insert(timer, when, now);
        if let Some(old) = entry.disarm() {
            self.timers.remove(old);
        }
        entry.arm(key);
    }

    /// Moves every timer still in the retiring queue into a fresh queue, so
    /// that the active queue can be renewed before its wheel's horizon.
    ///
    /// Only a clock jump of more than 35 days gets here (see
    /// [`Timers::renewal_blocked`](super::timers::Timers::renewal_blocked)),
    /// so the scan over the whole slab is rare. The moved timers are all
    /// overdue and fire on the shard's next turn.
    fn migrate_retiring_timers(&mut self, now: Instant) {
        let mut moved = Vec::new();
        for (slot, entry) in self.slab.iter_mut() {
            let Some(key) = entry.timer() else {
                continue;
            };
            if let Some(deadline) = self.timers.take_retiring(key) {
                entry.disarm();
                moved.push((slot as u32, deadline));
            }
        }
        self.timers.discard_retiring();
        tracing::debug!(
            shard = self.ctx.index,
            timers = moved.len(),
            "moved overdue timers out of the retiring queue after a clock jump"
        );
        // With no retiring queue left, the first insert renews the active
        // queue and every moved timer lands in the fresh one.
        for (slot, deadline) in moved {
            self.arm(slot, deadline, now);
        }
    }

    /// Removes the entry in `slot` from the index and the schedule. An idle
    /// entry leaves the slab and its `terminate` is queued now; a busy one is
    /// detached and terminated when its callback hands the payload back.
    pub(super) fn remove(&mut self, slot: u32, reason: TerminateReason) {
        if !self.recovered_due.is_empty() {
            self.recovered_due.remove(&slot);
        }
        let entry = &self.slab[slot as usize];
        self.index.remove(&self.slab, &entry.id);
        if let Some(ring) = &self.ctx.ring {
            ring.remove(&entry.id);
        }

        let entry = &mut self.slab[slot as usize];
        if let Some(key) = entry.disarm() {
            self.timers.remove(key);
        }
        if entry.flags.has(Flags::HAS_WAITERS) {
            entry.flags.clear(Flags::HAS_WAITERS);
            let id = entry.id.clone();
            if let Some(waiters) = self.waiters.remove(&slot) {
                self.abandon_waiters(&id, waiters);
            }
        }

        if self.slab[slot as usize].is_busy() {
            let entry = &mut self.slab[slot as usize];
            entry.flags.set(Flags::DETACHED);
            // The job may still sit in the pool's queue: it must not start.
            self.ctx.shared.revoke(slot, entry.generation);
            self.detached.insert(slot, reason);
        } else {
            let entry = self.slab.remove(slot as usize);
            self.panics.remove(&slot);
            let payload = entry.payload.expect("an idle entry holds its payload");
            self.terminate(entry.id, payload, reason);
        }
        self.publish_len();
    }

    /// Queues `terminate` for an entry that has left the shard.
    pub(super) fn terminate(&mut self, id: H::Id, payload: H::Payload, reason: TerminateReason) {
        tracing::debug!(id = ?id, shard = self.ctx.index, reason = reason.as_str(), "entry removed");
        self.terminating += 1;
        self.push_job(Job::Terminate {
            id,
            payload,
            reason,
        });
    }

    /// Answers waiters of an entry that is gone.
    fn abandon_waiters(&mut self, id: &H::Id, waiters: VecDeque<Waiter<H>>) {
        for waiter in waiters {
            match waiter {
                Waiter::Call { reply, .. } => {
                    let _ = reply.send(Err(Error::not_found(id)));
                }
                Waiter::Get { reply } => {
                    let _ = reply.send(Ok(None));
                }
                Waiter::Perform { .. } => {
                    self.ctx.shared.due_waiting.fetch_sub(1, Ordering::Relaxed);
                }
                // A cast was acknowledged when it was queued; it is dropped
                // with the entry, like any later work for a deleted id.
                Waiter::Cast { .. } => {}
            }
        }
    }

    fn del(&mut self, id: &H::Id) -> bool {
        match self.index.find(&self.slab, id) {
            Some(slot) => {
                self.remove(slot, TerminateReason::Deleted);
                self.ctx.stats.counters.deletes.increment(1);
                true
            }
            None => false,
        }
    }

    fn get(&mut self, id: H::Id, reply: Reply<Option<Snapshot<H::Payload>>>) {
        let Some(slot) = self.index.find(&self.slab, &id) else {
            let _ = reply.send(Ok(None));
            return;
        };
        if self.must_wait(slot) {
            self.enqueue(slot, Waiter::Get { reply });
        } else {
            let _ = reply.send(Ok(Some(self.snapshot(slot))));
        }
    }

    /// Returns a copy of an idle entry's payload and metadata.
    pub(super) fn snapshot(&self, slot: u32) -> Snapshot<H::Payload> {
        let entry = &self.slab[slot as usize];
        Snapshot {
            payload: entry
                .payload
                .clone()
                .expect("an idle entry holds its payload"),
            interval: match entry.interval.get() {
                Some(every) => Interval::Every(every),
                None => Interval::Never,
            },
            next_due: entry.timer().and_then(|key| self.timers.deadline(key)),
            performs: u64::from(entry.performs),
            last_outcome: entry.last_outcome,
            cadence: entry.cadence(),
        }
    }

    fn call(
        &mut self,
        id: H::Id,
        request: H::Request,
        deadline: Instant,
        issued: Instant,
        reply: Reply<H::Reply>,
        now: Instant,
    ) {
        let Some(slot) = self.index.find(&self.slab, &id) else {
            let _ = reply.send(Err(Error::not_found(&id)));
            return;
        };
        let waiter = Waiter::Call {
            request,
            deadline,
            issued,
            reply,
        };
        if self.must_wait(slot) {
            self.enqueue(slot, waiter);
        } else {
            self.dispatch(slot, waiter, now);
        }
    }

    fn cast(&mut self, id: H::Id, message: H::Message, reply: Reply<()>) {
        let Some(slot) = self.index.find(&self.slab, &id) else {
            let _ = reply.send(Err(Error::not_found(&id)));
            return;
        };
        let _ = reply.send(Ok(()));
        let waiter = Waiter::Cast { message };
        if self.must_wait(slot) {
            self.enqueue(slot, waiter);
        } else {
            self.dispatch(slot, waiter, Instant::now());
        }
    }

    /// True if work for this entry must queue behind its in-flight callback
    /// or behind earlier waiters.
    pub(super) fn must_wait(&self, slot: u32) -> bool {
        let entry = &self.slab[slot as usize];
        entry.is_busy() || entry.flags.has(Flags::HAS_WAITERS)
    }

    pub(super) fn enqueue(&mut self, slot: u32, waiter: Waiter<H>) {
        if matches!(waiter, Waiter::Perform { .. }) {
            self.ctx.shared.due_waiting.fetch_add(1, Ordering::Relaxed);
        }
        self.slab[slot as usize].flags.set(Flags::HAS_WAITERS);
        self.waiters.entry(slot).or_default().push_back(waiter);
    }

    /// Starts work on an idle entry: a get is answered here, anything else
    /// takes the payload and goes to the pool. Returns true if the entry is
    /// now busy.
    pub(super) fn dispatch(&mut self, slot: u32, waiter: Waiter<H>, now: Instant) -> bool {
        let waiter = match waiter {
            Waiter::Get { reply } => {
                let _ = reply.send(Ok(Some(self.snapshot(slot))));
                return false;
            }
            Waiter::Call {
                deadline,
                issued,
                reply,
                ..
            } if now >= deadline || reply.is_closed() => {
                // The caller counts the timeout when it gives up.
                let id = &self.slab[slot as usize].id;
                let _ = reply.send(Err(Error::Timeout {
                    id: format!("{id:?}"),
                    waited: now.saturating_duration_since(issued),
                }));
                return false;
            }
            other => other,
        };

        let entry = &mut self.slab[slot as usize];
        let payload = entry
            .payload
            .take()
            .expect("an idle entry holds its payload");
        let needs_init = entry.flags.has(Flags::NEEDS_INIT);
        entry.flags.clear(Flags::NEEDS_INIT);
        entry.flags.set(Flags::BUSY);
        let id = entry.id.clone();
        let generation = entry.generation;
        self.in_flight += 1;

        let job = match waiter {
            Waiter::Perform { due } => Job::Perform {
                slot,
                generation,
                id,
                payload,
                needs_init,
                due,
            },
            Waiter::Call {
                request,
                deadline,
                issued,
                reply,
            } => Job::Call {
                slot,
                generation,
                id,
                payload,
                needs_init,
                request,
                deadline,
                issued,
                reply,
            },
            Waiter::Cast { message } => Job::Cast {
                slot,
                generation,
                id,
                payload,
                needs_init,
                message,
            },
            Waiter::Get { .. } => unreachable!("gets are answered above"),
        };
        self.push_job(job);
        true
    }
}

/// Answers a command that arrived after shutdown began.
fn reject_shutting_down<H: Handler>(command: Command<H>) {
    match command {
        Command::Put { reply, .. } => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::ShuttingDown));
            }
        }
        Command::PutMany { reply, .. } => {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        Command::Get { reply, .. } => {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        Command::Contains { reply, .. } | Command::Del { reply, .. } => {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        Command::DelMany { reply, .. } => {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        Command::Call { reply, .. } => {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        Command::Cast { reply, .. } => {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        Command::Restore { reply, .. } => {
            let _ = reply.send(Default::default());
        }
        Command::Flush => {}
        Command::Shutdown { reply, .. } => {
            let _ = reply.send(Default::default());
        }
    }
}
