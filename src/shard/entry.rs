//! One entry as a shard stores it, packed small.

use tokio_util::time::delay_queue::Key;

use crate::handler::OutcomeKind;
use crate::options::{Cadence, PackedInterval};
use crate::shard::timers::TimerKey;

/// An entry in a shard's slab.
///
/// For `u64` ids and a unit payload this is 32 bytes (checked by a test);
/// with the wheel's own 56 bytes per timer and a 4-byte index slot, a key
/// costs about 100 bytes before the payload.
pub(crate) struct Entry<I, P> {
    pub(crate) id: I,
    /// `None` while a callback of this entry runs on the worker pool.
    pub(crate) payload: Option<P>,
    /// The key of the next perform's timer; meaningful only while
    /// [`Flags::ARMED`] is set. (An `Option<Key>` would cost 8 more bytes.)
    timer: Key,
    /// Matches the generation in this entry's timer and jobs; a shard-wide
    /// counter, so a reused slot never matches an old timer or job.
    pub(crate) generation: u32,
    pub(crate) interval: PackedInterval,
    pub(crate) performs: u32,
    pub(crate) last_outcome: Option<OutcomeKind>,
    pub(crate) flags: Flags,
}

/// Small per-entry state bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags(u8);

impl Flags {
    /// A callback of the entry is on the worker pool.
    pub(crate) const BUSY: u8 = 1;
    /// `init` has not run yet (or must run again).
    pub(crate) const NEEDS_INIT: u8 = 1 << 1;
    /// The cadence is [`Cadence::FixedRate`].
    pub(crate) const FIXED_RATE: u8 = 1 << 2;
    /// Removed from the index while a callback was in flight; the slot is
    /// freed, and `terminate` runs, when the callback returns.
    pub(crate) const DETACHED: u8 = 1 << 3;
    /// Callbacks, gets or a due perform wait for the in-flight callback.
    pub(crate) const HAS_WAITERS: u8 = 1 << 4;
    /// A timer is set; `Entry::timer` is its key.
    pub(crate) const ARMED: u8 = 1 << 5;
    /// The timer is in the queue tagged 1 (otherwise 0).
    pub(crate) const QUEUE_ONE: u8 = 1 << 6;
    /// A callback may have changed the payload since it was last written to
    /// the store; the entry is in its shard's dirty list.
    pub(crate) const DIRTY: u8 = 1 << 7;

    pub(crate) fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    pub(crate) fn set(&mut self, bit: u8) {
        self.0 |= bit;
    }

    pub(crate) fn clear(&mut self, bit: u8) {
        self.0 &= !bit;
    }
}

impl<I, P> Entry<I, P> {
    /// Creates an entry with no timer; `placeholder` is any key, never used
    /// while the entry is unarmed.
    pub(crate) fn new(
        id: I,
        payload: P,
        interval: PackedInterval,
        cadence: Cadence,
        generation: u32,
        placeholder: Key,
    ) -> Self {
        let mut flags = Flags(Flags::NEEDS_INIT);
        if cadence == Cadence::FixedRate {
            flags.set(Flags::FIXED_RATE);
        }
        Entry {
            id,
            payload: Some(payload),
            timer: placeholder,
            generation,
            interval,
            performs: 0,
            last_outcome: None,
            flags,
        }
    }

    /// Returns the key of the pending timer, if one is set.
    pub(crate) fn timer(&self) -> Option<TimerKey> {
        self.flags
            .has(Flags::ARMED)
            .then(|| TimerKey::new(self.timer, self.flags.has(Flags::QUEUE_ONE)))
    }

    /// Records the pending timer.
    pub(crate) fn arm(&mut self, key: TimerKey) {
        self.timer = key.key();
        self.flags.set(Flags::ARMED);
        if key.queue_one() {
            self.flags.set(Flags::QUEUE_ONE);
        } else {
            self.flags.clear(Flags::QUEUE_ONE);
        }
    }

    /// Forgets the timer, which has fired or been removed; returns it.
    pub(crate) fn disarm(&mut self) -> Option<TimerKey> {
        let key = self.timer();
        self.flags.clear(Flags::ARMED);
        key
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.flags.has(Flags::BUSY)
    }

    pub(crate) fn cadence(&self) -> Cadence {
        if self.flags.has(Flags::FIXED_RATE) {
            Cadence::FixedRate
        } else {
            Cadence::FixedDelay
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_for_u64_ids_is_compact() {
        let entry = std::mem::size_of::<Entry<u64, ()>>();
        assert!(
            entry <= 32,
            "Entry<u64, ()> is {entry} bytes, expected at most 32"
        );
    }
}
