//! A shard's writes to the store: records of changed entries, deletes,
//! the coalesced payload changes of callbacks, and recovery.
//!
//! Writes leave the shard in the order the shard applies the changes, all
//! through the one commit thread, so the store sees the changes to one id
//! in the order they happened. A caller's reply goes out only after the
//! commit that holds its write.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::command::Reply;
use super::entry::{Entry, Flags};
use super::Shard;
use crate::error::Error;
use crate::handler::Handler;
use crate::options::{Interval, PackedInterval, MAX_INTERVAL};
use crate::persist::committer::{Ack, Writer};
use crate::persist::record::{self, Head};
use crate::persist::Codec;
use crate::store::StoreOp;
use crate::Id;

/// Intervals at least this long have their next due time written after
/// every perform, even when payload changes of performs are not kept, so a
/// restart does not run them early.
const KEEP_DUE_FROM: Duration = Duration::from_secs(60);

/// The store writer and settings of one shard.
pub(crate) struct ShardPersist<H: Handler> {
    pub(crate) codec: Arc<dyn Codec<H::Id, H::Payload>>,
    pub(crate) writer: Arc<Writer>,
    /// Keep payload changes made by `perform`.
    pub(crate) perform_changes: bool,
    /// The longest delay given to an entry that was overdue at recovery.
    pub(crate) recovery_spread: Duration,
}

/// An entry read back from the store.
pub(crate) struct Restored<H: Handler> {
    pub(crate) id: H::Id,
    pub(crate) payload: H::Payload,
    pub(crate) head: Head,
}

/// Counts of one restore command: entries restored, and how many were overdue.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RestoreCounts {
    pub(crate) restored: u64,
    /// Restored entries whose due time had passed.
    pub(crate) overdue: u64,
}

/// The key and payload bytes of an entry about to be written.
pub(crate) struct Encoded {
    key: Vec<u8>,
    payload: Vec<u8>,
}

impl Encoded {
    pub(super) fn key_bytes(&self) -> Vec<u8> {
        self.key.clone()
    }

    pub(super) fn payload_bytes(&self) -> &[u8] {
        &self.payload
    }
}

/// The clocks at one moment: the monotonic clock the wheel runs on and the
/// wall clock the store keeps due times in.
#[derive(Clone, Copy)]
struct Clocks {
    now: Instant,
    wall_ms: u64,
}

impl Clocks {
    fn read(now: Instant) -> Self {
        Clocks {
            now,
            wall_ms: record::unix_ms(SystemTime::now()),
        }
    }

    /// Returns `at` as milliseconds since the Unix epoch (at least 1, since
    /// 0 means "no due time").
    fn wall_of(self, at: Instant) -> u64 {
        let ms = if at >= self.now {
            self.wall_ms
                .saturating_add(millis(at.duration_since(self.now)))
        } else {
            self.wall_ms
                .saturating_sub(millis(self.now.duration_since(at)))
        };
        ms.max(1)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl<H: Handler> Shard<H> {
    pub(super) fn persisting(&self) -> bool {
        self.ctx.persist.is_some()
    }

    /// Encodes an id and payload before they are stored; an error here
    /// leaves everything unchanged.
    pub(super) fn encode(&self, id: &H::Id, payload: &H::Payload) -> Result<Encoded, Error> {
        let persist = self
            .ctx
            .persist
            .as_ref()
            .expect("only called when persisting");
        let failed = |detail: crate::persist::CodecError| Error::Codec {
            id: format!("{id:?}"),
            detail: detail.to_string(),
        };
        let mut id_bytes = Vec::new();
        persist.codec.encode_id(id, &mut id_bytes).map_err(failed)?;
        let mut payload_bytes = Vec::new();
        persist
            .codec
            .encode_payload(payload, &mut payload_bytes)
            .map_err(failed)?;
        Ok(Encoded {
            key: record::key(id.stable_hash(), &id_bytes),
            payload: payload_bytes,
        })
    }

    /// Returns the store key of an id, or `None` if the codec refuses it
    /// (such an id was never stored).
    pub(super) fn key_of(&self, id: &H::Id) -> Option<Vec<u8>> {
        let persist = self.ctx.persist.as_ref()?;
        let mut id_bytes = Vec::new();
        persist.codec.encode_id(id, &mut id_bytes).ok()?;
        Some(record::key(id.stable_hash(), &id_bytes))
    }

    /// Builds the store record of the entry in `slot` from its already
    /// encoded key and payload bytes.
    pub(super) fn record_op(&self, slot: u32, encoded: Encoded, now: Instant) -> StoreOp {
        let persist = self
            .ctx
            .persist
            .as_ref()
            .expect("only called when persisting");
        let clocks = Clocks::read(now);
        let entry = &self.slab[slot as usize];
        let head = Head {
            version: persist.writer.next_version(),
            interval: interval_of(entry),
            cadence: entry.cadence(),
            next_due_ms: self.next_due_ms(entry, clocks),
            written_ms: clocks.wall_ms,
        };
        StoreOp::Put {
            key: encoded.key,
            value: record::encode(&head, &encoded.payload),
        }
    }

    fn next_due_ms(&self, entry: &Entry<H::Id, H::Payload>, clocks: Clocks) -> Option<u64> {
        match entry.timer().and_then(|key| self.timers.deadline(key)) {
            Some(deadline) => Some(clocks.wall_of(deadline)),
            // Periodic but not armed: a perform is due or running now.
            None if entry.interval.get().is_some() => Some(clocks.wall_ms.max(1)),
            None => None,
        }
    }

    /// Builds the record head of an entry moved to a new id, whose first
    /// perform is due one interval from now.
    pub(super) fn moved_head(&self, options: &crate::EntryOptions, now: Instant) -> Head {
        let persist = self
            .ctx
            .persist
            .as_ref()
            .expect("only called when persisting");
        let clocks = Clocks::read(now);
        let next_due_ms = match options.interval {
            Interval::Every(every) => Some(clocks.wall_of(now + every.min(MAX_INTERVAL))),
            Interval::Never => None,
        };
        Head {
            version: persist.writer.next_version(),
            interval: options.interval,
            cadence: options.cadence,
            next_due_ms,
            written_ms: clocks.wall_ms,
        }
    }

    /// Encodes the current state of an idle entry; logs and returns `None`
    /// if the codec fails.
    pub(super) fn current_record(&mut self, slot: u32, now: Instant) -> Option<StoreOp> {
        let entry = &self.slab[slot as usize];
        let payload = entry.payload.as_ref()?;
        match self.encode(&entry.id, payload) {
            Ok(encoded) => Some(self.record_op(slot, encoded, now)),
            Err(error) => {
                self.log_store_problem(&error);
                None
            }
        }
    }

    /// Writes the current record of an entry whose schedule changed; the
    /// write goes into the shard's pending ops for the current change.
    pub(super) fn queue_record(&mut self, slot: u32, now: Instant) {
        if !self.persisting() {
            return;
        }
        if let Some(op) = self.current_record(slot, now) {
            self.slab[slot as usize].flags.clear(Flags::DIRTY);
            self.pending_ops.push(op);
        }
    }

    /// Deletes the record of the entry in `slot`, which is being removed.
    pub(super) fn queue_delete(&mut self, slot: u32) {
        if !self.persisting() {
            return;
        }
        if let Some(key) = self.key_of(&self.slab[slot as usize].id) {
            self.pending_ops.push(StoreOp::Delete { key });
        }
    }

    /// Sends the pending ops of the current change; `ack` runs after their
    /// commit, or at once if there are none.
    pub(super) fn submit_pending(&mut self, ack: Option<Ack>) {
        let ops = std::mem::take(&mut self.pending_ops);
        match &self.ctx.persist {
            Some(persist) => persist.writer.submit(ops, ack),
            None => {
                if let Some(ack) = ack {
                    ack(Ok(()));
                }
            }
        }
    }

    /// Sends `ops` and replies with `value` once they are committed.
    pub(super) fn submit_with_reply<T: Send + 'static>(
        &mut self,
        ops: Vec<StoreOp>,
        reply: Reply<T>,
        value: T,
    ) {
        self.pending_ops.extend(ops);
        self.submit_pending(Some(Box::new(move |result: Result<(), Error>| {
            let _ = reply.send(result.map(|()| value));
        })));
    }

    /// Notes that a callback may have changed the payload of `slot`; the
    /// next flush writes it.
    pub(super) fn mark_dirty(&mut self, slot: u32, was_perform: bool) {
        let Some(persist) = &self.ctx.persist else {
            return;
        };
        let entry = &mut self.slab[slot as usize];
        // A long interval's next due time, and the end of a one-off
        // schedule (an entry without an interval), must reach the store,
        // or a restart would run the perform early or again.
        let keep_due = entry
            .interval
            .get()
            .is_none_or(|every| every >= KEEP_DUE_FROM);
        if was_perform && !persist.perform_changes && !keep_due {
            return;
        }
        if !entry.flags.has(Flags::DIRTY) {
            entry.flags.set(Flags::DIRTY);
            self.dirty.push((slot, entry.generation));
        }
    }

    /// Writes every dirty entry that is idle; busy ones wait for the next
    /// flush. Nothing waits for this commit.
    pub(super) fn flush_dirty(&mut self, now: Instant) {
        if self.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let mut ops = Vec::with_capacity(dirty.len());
        for (slot, generation) in dirty {
            let Some(entry) = self.slab.get(slot as usize) else {
                continue;
            };
            if entry.generation != generation
                || !entry.flags.has(Flags::DIRTY)
                || entry.flags.has(Flags::DETACHED)
            {
                continue;
            }
            if entry.is_busy() {
                self.dirty.push((slot, generation));
                continue;
            }
            self.slab[slot as usize].flags.clear(Flags::DIRTY);
            if let Some(op) = self.current_record(slot, now) {
                ops.push(op);
            }
        }
        if let Some(persist) = &self.ctx.persist {
            persist.writer.submit(ops, None);
        }
    }

    /// Inserts entries read from the store, skipping ids already present
    /// (written since the manager started, so newer than the store).
    pub(super) fn restore(
        &mut self,
        items: Vec<Restored<H>>,
        reply: oneshot::Sender<RestoreCounts>,
        now: Instant,
    ) {
        let clocks = Clocks::read(now);
        let spread_max = self
            .ctx
            .persist
            .as_ref()
            .map_or(Duration::ZERO, |persist| persist.recovery_spread);
        let mut counts = RestoreCounts::default();
        self.index.reserve(&self.slab, items.len());
        self.slab.reserve(items.len());

        for Restored { id, payload, head } in items {
            if self.index.find(&self.slab, &id).is_some() {
                continue;
            }
            let slot = self.insert_entry(
                id,
                payload,
                PackedInterval::new(head.interval),
                head.cadence,
            );
            let generation = self.slab[slot as usize].generation;
            counts.restored += 1;

            let every = match head.interval {
                Interval::Every(every) => Some(every),
                Interval::Never => None,
            };
            let due_ms = match (head.next_due_ms, every) {
                (Some(due_ms), _) => due_ms,
                // Periodic with no due time written: due now.
                (None, Some(_)) => clocks.wall_ms,
                (None, None) => continue,
            };
            if due_ms > clocks.wall_ms {
                // Not due yet: keep the due time, but never further than one
                // interval away, so a wall clock that was ahead cannot park
                // an entry.
                let ahead = Duration::from_millis(due_ms - clocks.wall_ms);
                let ahead = ahead.min(every.unwrap_or(MAX_INTERVAL)).min(MAX_INTERVAL);
                self.arm(slot, now + ahead, now);
                continue;
            }

            // Overdue: run soon, spread over a short window so a restart is
            // not a thundering herd, and measure lateness from the original
            // due time.
            counts.overdue += 1;
            let window = every.unwrap_or(spread_max).min(spread_max);
            let jitter = Duration::from_millis(self.random_below(millis(window)));
            let behind = Duration::from_millis(clocks.wall_ms - due_ms);
            let original = now.checked_sub(behind).unwrap_or(now);
            self.recovered_due.insert(slot, (generation, original));
            self.arm(slot, now + jitter, now);
        }
        self.publish_len();
        let _ = reply.send(counts);
    }

    /// Returns the due time a recovered overdue entry was originally given,
    /// for its first perform's lateness.
    pub(super) fn take_recovered_due(&mut self, slot: u32, generation: u32) -> Option<Instant> {
        if self.recovered_due.is_empty() {
            return None;
        }
        match self.recovered_due.remove(&slot) {
            Some((recorded, due)) if recorded == generation => Some(due),
            _ => None,
        }
    }

    pub(super) fn log_store_problem(&mut self, error: &Error) {
        if let Some(suppressed) = self.store_log.allow() {
            tracing::warn!(
                shard = self.ctx.index,
                %error,
                suppressed,
                "an entry could not be written to the store"
            );
        }
    }
}

fn interval_of<I, P>(entry: &Entry<I, P>) -> Interval {
    match entry.interval.get() {
        Some(every) => Interval::Every(every),
        None => Interval::Never,
    }
}
