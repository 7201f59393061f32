//! The user's side of a manager: callbacks and the outcomes they return.

use std::fmt;
use std::future::{ready, Future};
use std::time::Duration;

use crate::Id;

/// The fate of an entry after a callback returns.
///
/// `perform`, `call` and `cast` each return one. The same outcome means the
/// same thing from every callback, except that only a perform moves the
/// schedule forward: after a `call` or `cast`, [`Continue`](Outcome::Continue)
/// leaves the next due time where it was.
///
/// # Example
///
/// A handler that retries with doubling delays and gives up after three
/// attempts:
///
/// ```
/// use keywheel::{EntryOptions, Handler, Manager, Outcome};
/// use std::time::Duration;
///
/// struct Retry;
///
/// impl Handler for Retry {
///     type Id = u64;
///     type Payload = u32; // attempts so far
///     type Request = ();
///     type Reply = ();
///     type Message = ();
///
///     async fn perform(&self, _id: &u64, attempts: &mut u32) -> Outcome<u64> {
///         *attempts += 1;
///         if *attempts == 3 {
///             return Outcome::Halt;
///         }
///         Outcome::Reschedule(Duration::from_secs(1 << *attempts))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Retry).build()?;
/// manager.put(1, 0, EntryOptions::every(Duration::from_secs(1))).await?;
///
/// // Attempts run at 1 s, 3 s and 7 s; the third one removes the entry.
/// tokio::time::sleep(Duration::from_secs(6)).await;
/// assert!(manager.contains(&1).await?);
/// tokio::time::sleep(Duration::from_secs(2)).await;
/// assert!(!manager.contains(&1).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<I> {
    /// Keeps the entry and its interval.
    Continue,
    /// Keeps the entry and makes the given duration its interval for every
    /// later perform.
    ///
    /// After a perform, the next due time follows the entry's
    /// [`Cadence`](crate::Cadence) with the new interval. After a `call` or
    /// `cast`, the next perform is due one new interval from now, also for
    /// an entry that had no perform scheduled, such as one with
    /// [`Interval::Never`](crate::Interval::Never): it becomes periodic.
    ///
    /// The duration is rounded up to the 1 ms [`TICK`](crate::TICK). A zero
    /// duration or one over [`MAX_INTERVAL`](crate::MAX_INTERVAL) is clamped
    /// into range and counted in `keywheel_clamped_intervals_total`; it is
    /// never an error.
    Reschedule(Duration),
    /// Removes the entry; `terminate` runs once with [`TerminateReason::Halted`].
    Halt,
    /// Moves the payload to another id.
    ///
    /// This id is removed (`terminate` runs with [`TerminateReason::Moved`]
    /// and a copy of the payload), and the new id is inserted with the
    /// current payload, interval and cadence, replacing any entry already
    /// there. The new entry starts a fresh schedule: its first perform is due
    /// one interval later, without jitter, and [`Handler::init`] runs again
    /// before its first callback. Moving to the entry's own id is the same
    /// as [`Continue`](Outcome::Continue).
    ///
    /// When the new id belongs to another shard, its insert reaches that
    /// shard as a separate message, so for a moment neither id may be found.
    Move(I),
}

impl<I> Outcome<I> {
    pub(crate) fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Continue => OutcomeKind::Continue,
            Outcome::Reschedule(_) => OutcomeKind::Reschedule,
            Outcome::Halt => OutcomeKind::Halt,
            Outcome::Move(_) => OutcomeKind::Move,
        }
    }
}

/// The kind of an outcome, without its data: the
/// [`last_outcome`](crate::Snapshot::last_outcome) of a
/// [`Snapshot`](crate::Snapshot) and the `outcome` label of
/// `keywheel_performs_total`.
///
/// # Example
///
/// ```
/// use keywheel::OutcomeKind;
///
/// assert_eq!(OutcomeKind::Reschedule.as_str(), "reschedule");
/// assert_eq!(OutcomeKind::Panicked.to_string(), "panicked");
/// assert_eq!(OutcomeKind::ALL.len(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OutcomeKind {
    /// [`Outcome::Continue`].
    Continue,
    /// [`Outcome::Reschedule`].
    Reschedule,
    /// [`Outcome::Halt`].
    Halt,
    /// [`Outcome::Move`].
    Move,
    /// The callback panicked.
    Panicked,
}

impl OutcomeKind {
    /// Every kind, in declaration order.
    pub const ALL: [OutcomeKind; 5] = [
        OutcomeKind::Continue,
        OutcomeKind::Reschedule,
        OutcomeKind::Halt,
        OutcomeKind::Move,
        OutcomeKind::Panicked,
    ];

    /// Returns the name used as a metric label value and in JSON:
    /// `continue`, `reschedule`, `halt`, `move` or `panicked`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Continue => "continue",
            OutcomeKind::Reschedule => "reschedule",
            OutcomeKind::Halt => "halt",
            OutcomeKind::Move => "move",
            OutcomeKind::Panicked => "panicked",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an entry ended; passed to [`Handler::terminate`].
///
/// # Example
///
/// ```
/// use keywheel::{EntryOptions, Handler, Manager, Outcome, TerminateReason};
/// use tokio::sync::mpsc;
///
/// struct Session {
///     ended: mpsc::UnboundedSender<(u64, TerminateReason)>,
/// }
///
/// impl Handler for Session {
///     type Id = u64;
///     type Payload = ();
///     type Request = ();
///     type Reply = ();
///     type Message = ();
///
///     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
///         Outcome::Continue
///     }
///
///     async fn terminate(&self, id: &u64, _payload: (), reason: TerminateReason) {
///         let _ = self.ended.send((*id, reason));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (ended, mut endings) = mpsc::unbounded_channel();
/// let manager = Manager::builder(Session { ended }).build()?;
///
/// manager.put(1, (), EntryOptions::never()).await?;
/// manager.put(1, (), EntryOptions::never()).await?; // replaces the first entry
/// manager.del(&1).await?;
///
/// assert_eq!(endings.recv().await, Some((1, TerminateReason::Replaced)));
/// assert_eq!(endings.recv().await, Some((1, TerminateReason::Deleted)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminateReason {
    /// Removed by `del` or `del_many`.
    Deleted,
    /// Replaced by a `put` of the same id, or by a [`Outcome::Move`] to it.
    Replaced,
    /// A callback returned [`Outcome::Halt`].
    Halted,
    /// A callback returned [`Outcome::Move`]; the payload now lives under the new id.
    Moved,
    /// A callback panicked and the entry was removed, by
    /// [`PanicPolicy::Remove`](crate::PanicPolicy::Remove) or by the restart
    /// limit. Holds the panic message.
    Panicked(String),
    /// The manager shut down.
    Shutdown,
}

impl TerminateReason {
    /// Returns the `reason` label value of `keywheel_terminates_total`:
    /// `deleted`, `replaced`, `halted`, `moved`, `panicked` or `shutdown`.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::TerminateReason;
    ///
    /// let reason = TerminateReason::Panicked("index out of bounds".into());
    /// assert_eq!(reason.as_str(), "panicked");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            TerminateReason::Deleted => "deleted",
            TerminateReason::Replaced => "replaced",
            TerminateReason::Halted => "halted",
            TerminateReason::Moved => "moved",
            TerminateReason::Panicked(_) => "panicked",
            TerminateReason::Shutdown => "shutdown",
        }
    }
}

/// The callbacks of one kind of entry.
///
/// A manager runs these on its worker pool. Only `perform` is required.
///
/// # One callback at a time
///
/// `perform`, `call`, `cast` and `init` of one entry never run at the same
/// time. Each gets the payload by `&mut` (or by value for `init` and
/// `terminate`), so no lock guards a payload. Work that arrives while a
/// callback runs waits in a queue of that entry, in arrival order.
///
/// `terminate` runs after the entry's last callback has returned. The entry
/// has already left the store by then. So a new entry under the same id may
/// run its callbacks while the old entry's `terminate` is still running, if
/// a `put` replaced the old entry or a `put` followed its `del`.
///
/// # Panics and cancellation
///
/// A panic in `perform`, `call`, `cast` or `init` is caught by the worker,
/// and the entry then follows the manager's
/// [`PanicPolicy`](crate::PanicPolicy). A panic in `terminate` is caught and
/// logged. At
/// [`shutdown`](crate::Manager::shutdown), a callback still waiting at the
/// end of the grace period is cancelled: its future is dropped at its
/// current `.await`.
///
/// Callbacks run in tasks on the tokio runtime that built the manager. A
/// callback that would block its thread (heavy computation or blocking
/// I/O) should hand that work to [`tokio::task::spawn_blocking`].
///
/// # Example
///
/// ```
/// use keywheel::{Handler, Outcome};
///
/// struct Counter;
///
/// impl Handler for Counter {
///     type Id = u64;
///     type Payload = u64;
///     type Request = ();
///     type Reply = u64;
///     type Message = u64;
///
///     async fn perform(&self, _id: &u64, count: &mut u64) -> Outcome<u64> {
///         *count += 1;
///         Outcome::Continue
///     }
///
///     async fn call(&self, _id: &u64, count: &mut u64, _request: ()) -> (u64, Outcome<u64>) {
///         (*count, Outcome::Continue)
///     }
///
///     async fn cast(&self, _id: &u64, count: &mut u64, add: u64) -> Outcome<u64> {
///         *count += add;
///         Outcome::Continue
///     }
/// }
/// ```
///
/// [`Manager`](crate::Manager#example) shows a handler at work.
pub trait Handler: Send + Sync + Sized + 'static {
    /// The id type; see [`Id`].
    type Id: Id;
    /// The state of one entry.
    ///
    /// It is cloned by `get` (the [`Snapshot`](crate::Snapshot) contains a
    /// copy), before each `init` (to restore it if `init` panics), and by
    /// [`Outcome::Move`].
    type Payload: Clone + Send + 'static;
    /// The request of a `call`.
    type Request: Send + 'static;
    /// The reply of a `call`. `Default` gives the reply of the default `call`.
    type Reply: Default + Send + 'static;
    /// The message of a `cast`.
    type Message: Send + 'static;

    /// Runs the periodic work of one entry when it is due.
    ///
    /// The returned [`Outcome`] decides what happens to the entry. A
    /// perform that runs longer than the overrun factor times its interval
    /// (see [`ManagerBuilder::overrun_factor`](crate::ManagerBuilder::overrun_factor))
    /// is counted and logged, never cancelled.
    fn perform(
        &self,
        id: &Self::Id,
        payload: &mut Self::Payload,
    ) -> impl Future<Output = Outcome<Self::Id>> + Send;

    /// Answers a [`call`](crate::Manager::call). The default replies
    /// `Reply::default()` and continues.
    ///
    /// The reply goes to the caller as soon as this returns, even if the
    /// caller's deadline has passed in the meantime (the caller has then
    /// already received [`Error::Timeout`](crate::Error::Timeout)).
    fn call(
        &self,
        id: &Self::Id,
        payload: &mut Self::Payload,
        request: Self::Request,
    ) -> impl Future<Output = (Self::Reply, Outcome<Self::Id>)> + Send {
        let _ = (id, payload, request);
        ready((Self::Reply::default(), Outcome::Continue))
    }

    /// Handles a [`cast`](crate::Manager::cast). The default ignores the
    /// message and continues.
    fn cast(
        &self,
        id: &Self::Id,
        payload: &mut Self::Payload,
        message: Self::Message,
    ) -> impl Future<Output = Outcome<Self::Id>> + Send {
        let _ = (id, payload, message);
        ready(Outcome::Continue)
    }

    /// Prepares the payload before the entry's first `perform`, `call` or
    /// `cast`. The default returns the payload unchanged.
    ///
    /// It runs on the worker, right before that first callback, not in
    /// `put`: a `get` before any callback has run returns the payload as it
    /// was put, and an entry removed before any callback ran is terminated
    /// without `init`.
    ///
    /// [`PanicPolicy::Reinit`](crate::PanicPolicy::Reinit) runs it again
    /// after a panic, on the payload as the panic left it. If `init` itself
    /// panics, the payload is restored to what it was before `init`, the
    /// callback that needed it does not run (a caller of `call` gets
    /// [`Error::Panicked`](crate::Error::Panicked)), the panic policy
    /// applies, and `init` runs again before the next callback.
    fn init(
        &self,
        id: &Self::Id,
        payload: Self::Payload,
    ) -> impl Future<Output = Self::Payload> + Send {
        let _ = id;
        ready(payload)
    }

    /// Runs once when an entry ends, with its last payload and the reason.
    /// The default does nothing.
    ///
    /// A panic here is caught and logged, and the entry stays removed. No
    /// `terminate` runs for entries that are still in the store when the
    /// last [`Manager`](crate::Manager) handle is dropped without a
    /// `shutdown`, or when
    /// [`ManagerBuilder::terminate_on_shutdown`](crate::ManagerBuilder::terminate_on_shutdown)
    /// is off.
    fn terminate(
        &self,
        id: &Self::Id,
        payload: Self::Payload,
        reason: TerminateReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (id, payload, reason);
        ready(())
    }
}
