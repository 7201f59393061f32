//! Typed errors: each names the value and the rule, and says what to do.

use std::time::Duration;

use crate::options::MAX_INTERVAL;

/// An invalid [`EntryOptions`](crate::EntryOptions) value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// The interval is zero.
    #[error("invalid interval 0: an interval must be at least 1 ms; use Interval::Never for an entry that only serves calls")]
    ZeroInterval,
    /// A duration is over [`MAX_INTERVAL`].
    #[error("invalid {field} {value:?}: the maximum is {max:?} (365 days)", max = MAX_INTERVAL)]
    TooLong {
        /// The option: `interval`, `first_run` or `jitter`.
        field: &'static str,
        /// The value given.
        value: Duration,
    },
}

/// Why an operation on a manager failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No entry has this id.
    #[error("entry not found: no entry has id {id}")]
    NotFound {
        /// The id, formatted with `Debug`.
        id: String,
    },
    /// The deadline passed before the operation ran.
    #[error("timed out after {waited:?} waiting for entry {id}: its callbacks are slow or the worker pool is saturated; raise the deadline or the pool size")]
    Timeout {
        /// The id, formatted with `Debug`.
        id: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The callback panicked.
    #[error("callback of entry {id} panicked: {message}")]
    Panicked {
        /// The id, formatted with `Debug`.
        id: String,
        /// The panic message.
        message: String,
    },
    /// The manager is shutting down or has stopped.
    #[error("manager is shutting down: no new operations are accepted")]
    ShuttingDown,
    /// A bounded queue is full (only from `try_` variants).
    #[error("manager is overloaded: the queue of shard {shard} is full; retry later or use the waiting variant")]
    Overloaded {
        /// The shard whose queue is full.
        shard: usize,
    },
    /// `call_routed` on a manager built without routing.
    #[error("routed calls are off: build the manager with ManagerBuilder::routing(true)")]
    RoutingOff,
    /// `call_routed` found no entry to route to.
    #[error("no entry to route to: the manager has no entries")]
    NoRoute,
    /// The options of a `put` are invalid.
    #[error(transparent)]
    InvalidOptions(#[from] OptionsError),
}

impl Error {
    /// Returns true for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Returns true for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Returns true for [`Error::Overloaded`].
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Error::Overloaded { .. })
    }

    pub(crate) fn not_found(id: &impl std::fmt::Debug) -> Self {
        Error::NotFound {
            id: format!("{id:?}"),
        }
    }
}

/// A failed `put`: the error, and the payload handed back where it could be.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PutError<P> {
    /// Why the put failed.
    pub error: Error,
    /// The payload of the failed put, if it was not consumed.
    pub payload: Option<P>,
}

/// An invalid manager setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A setting is outside its allowed range.
    #[error("invalid {setting} {value}: {rule}")]
    OutOfRange {
        /// The builder method or setting.
        setting: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        rule: String,
    },
    /// An initial entry has invalid options.
    #[error("invalid initial entry {id}: {error}")]
    InitialEntry {
        /// The id, formatted with `Debug`.
        id: String,
        /// What is wrong with its options.
        error: OptionsError,
    },
}
