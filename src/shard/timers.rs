//! The due times of one shard: tokio-util `DelayQueue`s, staggered at start
//! and replaced before they age past the wheel's horizon.
//!
//! Two facts about `DelayQueue` shape this file:
//!
//! - Its wheel keeps deadlines as milliseconds since the queue was created,
//!   in 6 levels of 64 slots. When time reaches a level-2 slot (4,096 ms
//!   wide), the whole slot moves down in one `poll_expired` call. With
//!   intervals of a few seconds nearly every entry of a shard sits in that
//!   slot, and queues created in the same millisecond all hit the boundary
//!   together, so every shard stalls at once. Shard `i` therefore creates its
//!   long-lived queue `i × 4096 / shards` ms after start. Until then it uses a
//!   boot queue, which drains on its own as its timers fire.
//! - Inserting a deadline more than 2^36 ms (about 795 days) after the
//!   queue's creation panics. The queue is replaced once it is
//!   [`QUEUE_MAX_AGE`] old; the old one keeps firing what it holds and is
//!   dropped when empty.
//!
//! A [`TimerKey`] records which of the two queues holds a timer, so a
//! removal always goes to the right one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_util::time::delay_queue::{Expired, Key};
use tokio_util::time::DelayQueue;

/// Age at which a shard starts a fresh queue: 400 days. With deadlines at
/// most [`MAX_INTERVAL`](crate::MAX_INTERVAL) (365 days) ahead, no deadline
/// lands more than 765 days after its queue's start, below the 795-day limit.
pub(crate) const QUEUE_MAX_AGE: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// The width of a level-2 wheel slot: shard start times are spread over it.
pub(crate) const CASCADE_PERIOD: Duration = Duration::from_millis(4096);

/// The value a shard stores in its queues: the slab slot of the entry and the
/// generation it had when the timer was set. A timer whose generation no
/// longer matches its slot belongs to an entry that is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerRef {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// A timer's key, with the queue that contains the timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerKey {
    key: Key,
    queue_one: bool,
}

impl TimerKey {
    pub(crate) fn new(key: Key, queue_one: bool) -> Self {
        TimerKey { key, queue_one }
    }

    pub(crate) fn key(self) -> Key {
        self.key
    }

    pub(crate) fn queue_one(self) -> bool {
        self.queue_one
    }
}

struct Queue {
    delays: DelayQueue<TimerRef>,
    created: Instant,
    /// Distinguishes this queue from the one it replaced (alternates).
    tag: bool,
}

impl Queue {
    fn new(tag: bool) -> Self {
        Queue {
            delays: DelayQueue::new(),
            created: Instant::now(),
            tag,
        }
    }
}

/// The staggered, self-renewing timer queues of one shard.
pub(crate) struct Timers {
    active: Queue,
    /// The queue that `active` replaced; it only fires and removes.
    retiring: Option<Queue>,
    /// Fires when the staggered long-lived queue replaces the boot queue.
    stagger: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    /// Creates the timers of a shard whose long-lived queue starts `offset` from now.
    pub(crate) fn new(offset: Duration) -> Self {
        let stagger = (!offset.is_zero()).then(|| Box::pin(tokio::time::sleep(offset)));
        Timers {
            active: Queue::new(false),
            retiring: None,
            stagger,
        }
    }

    /// Sets a timer for `timer` at `when`, which is at most
    /// [`MAX_INTERVAL`](crate::MAX_INTERVAL) from `now`.
    ///
    /// # Panics
    ///
    /// Never for deadlines within that bound, unless
    /// [`renewal_blocked`](Timers::renewal_blocked) is true: the queue is
    /// renewed first if it is near its horizon.
    pub(crate) fn insert(&mut self, timer: TimerRef, when: Instant, now: Instant) -> TimerKey {
        self.renew_if_due(now);
        let key = self.active.delays.insert_at(timer, when);
        TimerKey {
            key,
            queue_one: self.active.tag,
        }
    }

    /// Makes room for `additional` more timers in the active queue. An
    /// empty queue grows to exactly that size; one with timers grows by
    /// its own rule (at least doubling).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.active.delays.reserve(additional);
    }

    /// Returns true when the active queue is old enough to be replaced but
    /// the queue it replaced still contains timers, so no fresh queue can
    /// start.
    ///
    /// Every timer of the retiring queue is due at least 35 days before the
    /// active queue needs renewal, so a shard that keeps up with its timers
    /// never gets here. A monotonic clock that jumps ahead by more than that
    /// does, for example a paused test clock moved by `tokio::time::advance`,
    /// while the shard has not yet drained the overdue timers. An insert into
    /// the old active queue could then pass its wheel's horizon and panic,
    /// so the shard first moves the retiring timers out with
    /// [`take_retiring`](Timers::take_retiring).
    pub(crate) fn renewal_blocked(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.active.created) >= QUEUE_MAX_AGE
            && self.retiring.as_ref().is_some_and(|q| !q.delays.is_empty())
    }

    /// Removes a timer from the retiring queue and returns its deadline;
    /// returns `None` for a timer of the active queue.
    pub(crate) fn take_retiring(&mut self, key: TimerKey) -> Option<Instant> {
        if key.queue_one == self.active.tag {
            return None;
        }
        let retiring = self.retiring.as_mut()?;
        retiring
            .delays
            .try_remove(&key.key)
            .map(|expired| expired.deadline())
    }

    /// Drops the retiring queue. Called once every entry's timer has been
    /// taken out of it, so any timer left there belongs to no entry.
    pub(crate) fn discard_retiring(&mut self) {
        self.retiring = None;
    }

    /// Removes a timer that has not fired yet.
    pub(crate) fn remove(&mut self, key: TimerKey) {
        if key.queue_one == self.active.tag {
            self.active.delays.try_remove(&key.key);
        } else if let Some(retiring) = self.retiring.as_mut() {
            retiring.delays.try_remove(&key.key);
        }
    }

    /// Returns the deadline of a timer that has not fired yet.
    pub(crate) fn deadline(&self, key: TimerKey) -> Option<Instant> {
        if key.queue_one == self.active.tag {
            Some(self.active.delays.deadline(&key.key))
        } else {
            self.retiring.as_ref().map(|q| q.delays.deadline(&key.key))
        }
    }

    /// Returns a key that names no timer, for entries that have none.
    pub(crate) fn placeholder_key() -> Key {
        let mut scratch = DelayQueue::new();
        scratch.insert_at((), Instant::now())
    }

    /// Polls for the next expired timer of either queue.
    ///
    /// `Ready(None)` means no timer is due now; the task is woken when one is.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Option<Expired<TimerRef>>> {
        if let Some(stagger) = self.stagger.as_mut() {
            if stagger.as_mut().poll(cx).is_ready() {
                self.stagger = None;
                self.renew();
            }
        }

        if let Some(retiring) = self.retiring.as_mut() {
            match retiring.delays.poll_expired(cx) {
                Poll::Ready(Some(expired)) => return Poll::Ready(Some(expired)),
                Poll::Ready(None) => self.retiring = None,
                Poll::Pending => {}
            }
        }

        match self.active.delays.poll_expired(cx) {
            Poll::Ready(Some(expired)) => Poll::Ready(Some(expired)),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// Starts a fresh queue once the active one nears the wheel's horizon.
    fn renew_if_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.active.created) >= QUEUE_MAX_AGE {
            self.renew();
        }
    }

    /// Makes a fresh queue active. The old one takes no more inserts; it
    /// fires what it holds and is dropped once empty.
    fn renew(&mut self) {
        // Only one queue can retire at a time. A retiring queue took its last
        // insert at least 400 days ago, at most 365 days ahead, so all its
        // timers are past due and fire on the next poll; until then the
        // active queue is at most 430 days old, and a deadline 365 days ahead
        // is still inside its 795-day horizon.
        if self.retiring.as_ref().is_some_and(|q| !q.delays.is_empty()) {
            return;
        }

        let fresh = Queue::new(!self.active.tag);
        let old = std::mem::replace(&mut self.active, fresh);
        self.retiring = (!old.delays.is_empty()).then_some(old);
    }
}
