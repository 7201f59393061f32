//! The user's side of a manager: callbacks and the outcomes they return.

use std::fmt;
use std::future::{ready, Future};
use std::time::Duration;

use crate::Id;

/// What an entry does after a callback returns.
///
/// # Example
///
/// ```
/// use keywheel::Outcome;
/// use std::time::Duration;
///
/// let slower: Outcome<u64> = Outcome::Reschedule(Duration::from_secs(10));
/// assert!(matches!(slower, Outcome::Reschedule(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<I> {
    /// Keeps the entry and its interval.
    Continue,
    /// Keeps the entry; the interval becomes the given duration from now on.
    ///
    /// A zero duration or one over [`MAX_INTERVAL`](crate::MAX_INTERVAL) is
    /// clamped into range and counted in `keywheel_clamped_intervals_total`.
    Reschedule(Duration),
    /// Removes the entry; `terminate` runs once with [`TerminateReason::Halted`].
    Halt,
    /// Removes this id (`terminate` with [`TerminateReason::Moved`]) and
    /// inserts the new id with the current payload and options, replacing
    /// any entry already there.
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

/// The kind of the last outcome of an entry, as shown in a [`Snapshot`](crate::Snapshot)
/// and in the `outcome` label of `keywheel_performs_total`.
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
    /// All kinds, in the order of their metric label index.
    pub const ALL: [OutcomeKind; 5] = [
        OutcomeKind::Continue,
        OutcomeKind::Reschedule,
        OutcomeKind::Halt,
        OutcomeKind::Move,
        OutcomeKind::Panicked,
    ];

    /// Returns the label value used in metrics and JSON.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminateReason {
    /// Removed by `del` or `del_many`.
    Deleted,
    /// Replaced by a `put` of the same id.
    Replaced,
    /// A callback returned [`Outcome::Halt`].
    Halted,
    /// A callback returned [`Outcome::Move`]; the payload now lives under the new id.
    Moved,
    /// A callback panicked and the panic policy removed the entry. Holds the panic message.
    Panicked(String),
    /// The manager shut down.
    Shutdown,
}

impl TerminateReason {
    /// Returns the label value used in metrics.
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
/// A manager runs these on its worker pool. For one id, `perform`, `call`,
/// `cast`, `init` and `terminate` never run at the same time, and each gets
/// the payload by `&mut` (or by value for `init` and `terminate`), so no
/// lock guards a payload.
///
/// Only `perform` is required. A panic in any callback is caught; see
/// [`PanicPolicy`](crate::PanicPolicy).
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
pub trait Handler: Send + Sync + Sized + 'static {
    /// The id type; see [`Id`].
    type Id: Id;
    /// The state of one entry. `get` returns a clone of it.
    type Payload: Clone + Send + 'static;
    /// The request of a `call`.
    type Request: Send + 'static;
    /// The reply of a `call`. `Default` gives the reply of the default `call`.
    type Reply: Default + Send + 'static;
    /// The message of a `cast`.
    type Message: Send + 'static;

    /// Runs the periodic work of one entry when it is due.
    fn perform(
        &self,
        id: &Self::Id,
        payload: &mut Self::Payload,
    ) -> impl Future<Output = Outcome<Self::Id>> + Send;

    /// Answers a `call`. The default replies `Reply::default()` and continues.
    fn call(
        &self,
        id: &Self::Id,
        payload: &mut Self::Payload,
        request: Self::Request,
    ) -> impl Future<Output = (Self::Reply, Outcome<Self::Id>)> + Send {
        let _ = (id, payload, request);
        ready((Self::Reply::default(), Outcome::Continue))
    }

    /// Handles a `cast`. The default ignores the message and continues.
    fn cast(
        &self,
        id: &Self::Id,
        payload: &mut Self::Payload,
        message: Self::Message,
    ) -> impl Future<Output = Outcome<Self::Id>> + Send {
        let _ = (id, payload, message);
        ready(Outcome::Continue)
    }

    /// Prepares the payload before the entry's first callback, and again when
    /// [`PanicPolicy::Reinit`](crate::PanicPolicy::Reinit) restarts it. The
    /// default returns the payload unchanged.
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
