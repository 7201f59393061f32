//! Typed errors: each names the value and the rule, and says what to do.

use std::time::Duration;

use crate::options::MAX_INTERVAL;

/// An invalid [`EntryOptions`](crate::EntryOptions) value.
///
/// # Example
///
/// ```
/// use keywheel::{EntryOptions, FirstRun, OptionsError};
/// use std::time::Duration;
///
/// let late = EntryOptions::every(Duration::from_secs(1))
///     .first_run(FirstRun::After(Duration::from_secs(400 * 24 * 3600)));
/// match late.validate() {
///     Err(OptionsError::TooLong { field, .. }) => assert_eq!(field, "first_run"),
///     other => panic!("expected TooLong, got {other:?}"),
/// }
/// ```
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
///
/// The message names the id, where there is one, and the next step to
/// take. Match on the variants, or use the `is_*` methods for the cases a
/// caller usually handles.
///
/// # Example
///
/// ```
/// # use keywheel::{Handler, Outcome};
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Id = u64;
/// #     type Payload = ();
/// #     type Request = ();
/// #     type Reply = ();
/// #     type Message = ();
/// #     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
/// #         Outcome::Continue
/// #     }
/// # }
/// use keywheel::{Error, Manager};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Noop).build()?;
///
/// let error = manager.call(&7, ()).await.unwrap_err();
/// assert!(error.is_not_found());
/// assert!(matches!(error, Error::NotFound { .. }));
/// assert_eq!(error.to_string(), "entry not found: no entry has id 7");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No entry has this id.
    #[error("entry not found: no entry has id {id}")]
    NotFound {
        /// The id, formatted with `Debug`.
        id: String,
    },
    /// The deadline of a `call` or `get` passed before the operation
    /// finished. A call that had not started by then never runs; one that
    /// had started runs to the end and its outcome applies.
    #[error("timed out after {waited:?} waiting for entry {id}: its callbacks are slow or the worker pool is saturated; raise the deadline or the pool size")]
    Timeout {
        /// The id, formatted with `Debug`.
        id: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The callback of a `call` (or the `init` before it) panicked.
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
    /// The command queue of the id's shard is full (only from the `try_`
    /// operations); see
    /// [`ManagerBuilder::command_capacity`](crate::ManagerBuilder::command_capacity).
    #[error("manager is overloaded: the queue of shard {shard} is full; retry later or use the waiting variant")]
    Overloaded {
        /// The shard whose queue is full.
        shard: usize,
    },
    /// [`call_routed`](crate::Manager::call_routed) on a manager built without routing.
    #[error("routed calls are off: build the manager with ManagerBuilder::routing(true)")]
    RoutingOff,
    /// [`call_routed`](crate::Manager::call_routed) found no entry to route to.
    #[error("no entry to route to: the manager has no entries")]
    NoRoute,
    /// The options of a `put` or `put_many` are invalid; nothing changed.
    #[error(transparent)]
    InvalidOptions(#[from] OptionsError),
    /// The manager's [`Codec`](crate::Codec) could not encode an id or
    /// payload of a `put` or `put_many`; nothing changed.
    #[error("cannot store entry {id}: the codec refused it ({detail}); nothing changed")]
    Codec {
        /// The id, formatted with `Debug`.
        id: String,
        /// The codec's message.
        detail: String,
    },
    /// The store failed to commit a write. The change is applied in memory
    /// but may be gone after a restart, and the manager commits no further
    /// writes. Fix the cause the detail names (disk space, permissions, a
    /// failing disk) and restart the program.
    #[error("store write failed, so the change may not survive a restart: {detail}; no further writes are committed until the program restarts")]
    Store {
        /// The store's error message.
        detail: String,
    },
}

impl Error {
    /// Returns true for [`Error::NotFound`].
    ///
    /// The [type's example](Error#example) shows it.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Returns true for [`Error::Timeout`].
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::{EntryOptions, Handler, Manager, Outcome};
    /// use std::time::Duration;
    ///
    /// struct Slow;
    ///
    /// impl Handler for Slow {
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
    ///     async fn call(&self, _id: &u64, _payload: &mut (), _request: ()) -> ((), Outcome<u64>) {
    ///         tokio::time::sleep(Duration::from_secs(10)).await;
    ///         ((), Outcome::Continue)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Slow).build()?;
    /// manager.put(1, (), EntryOptions::never()).await?;
    ///
    /// let result = manager.call_timeout(&1, (), Duration::from_secs(1)).await;
    /// assert!(result.unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Returns true for [`Error::Overloaded`].
    ///
    /// [`Manager::try_put`](crate::Manager::try_put) shows it.
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
///
/// The payload comes back when the put was rejected before it reached a
/// shard: invalid options, a full queue (`try_` operations), or a manager
/// already shutting down. It is `None` when the shard received the put and
/// then rejected it because shutdown had begun in the meantime.
///
/// `PutError<P>` implements [`std::error::Error`] when `P: Debug`. For other
/// payloads, keep the [`error`](PutError::error) field, as in
/// `put(...).await.map_err(|failed| failed.error)?`.
///
/// # Example
///
/// ```
/// # use keywheel::{Handler, Outcome};
/// # struct Notes;
/// # impl Handler for Notes {
/// #     type Id = u64;
/// #     type Payload = String;
/// #     type Request = ();
/// #     type Reply = ();
/// #     type Message = ();
/// #     async fn perform(&self, _id: &u64, _note: &mut String) -> Outcome<u64> {
/// #         Outcome::Continue
/// #     }
/// # }
/// use keywheel::{EntryOptions, Error, Manager};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Notes).build()?;
///
/// let zero = EntryOptions::every(Duration::ZERO);
/// let failed = manager.put(1, "call back".to_string(), zero).await.unwrap_err();
/// assert!(matches!(failed.error, Error::InvalidOptions(_)));
/// assert_eq!(failed.payload.as_deref(), Some("call back"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PutError<P> {
    /// Why the put failed.
    pub error: Error,
    /// The payload of the failed put, if it was not consumed.
    pub payload: Option<P>,
}

/// An invalid manager setting, from [`ManagerBuilder::build`](crate::ManagerBuilder::build).
///
/// # Example
///
/// ```
/// # use keywheel::{Handler, Outcome};
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Id = u64;
/// #     type Payload = ();
/// #     type Request = ();
/// #     type Reply = ();
/// #     type Message = ();
/// #     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
/// #         Outcome::Continue
/// #     }
/// # }
/// use keywheel::{ConfigError, Manager};
///
/// match Manager::builder(Noop).shards(0).build() {
///     Err(ConfigError::OutOfRange { setting, .. }) => assert_eq!(setting, "shards"),
///     _ => panic!("expected OutOfRange"),
/// }
/// ```
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
    /// [`ManagerBuilder::build`](crate::ManagerBuilder::build) was called
    /// with persistence set.
    #[error("a manager with persistence must read its store before it starts: call ManagerBuilder::open().await instead of build()")]
    NeedsOpen,
}

/// Why [`ManagerBuilder::open`](crate::ManagerBuilder::open) failed. Nothing
/// keeps running after it.
///
/// # Example
///
/// ```
/// use keywheel::{ConfigError, OpenError};
///
/// let error = OpenError::from(ConfigError::NeedsOpen);
/// assert!(error.to_string().contains("open"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be read back.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Loading the initial entries into the empty store failed.
    #[error("loading the initial entries failed: {0}")]
    Initial(Error),
}
