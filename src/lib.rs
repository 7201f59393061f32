//! keywheel runs millions of keyed, periodic workers at a cost of bytes per key.
//!
//! It is the model of Elixir's `Tarearbol.DynamicManager` (one supervised
//! process per id, with a payload, a periodic `perform`, routed `call`s and
//! a store-like API) without a task per id: a sharded timer wheel
//! (tokio-util `DelayQueue`) keeps the due times, a slab keeps the entries,
//! and a fixed worker pool runs the due performs and the calls.
//!
//! - [`Handler`]: the callbacks of one kind of entry, and the [`Outcome`]
//!   that decides an entry's fate after each callback.
//! - [`Manager`]: the store API (`put`, `get`, `del`, `call`, `cast`, ...),
//!   configured and started by a [`ManagerBuilder`].
//! - [`EntryOptions`]: interval, first run, jitter and cadence of an entry.
//!
//! # Example
//!
//! ```
//! use keywheel::{EntryOptions, Handler, Manager, Outcome};
//! use std::time::Duration;
//!
//! struct Reminder;
//!
//! impl Handler for Reminder {
//!     type Id = u64;
//!     type Payload = String;
//!     type Request = ();
//!     type Reply = ();
//!     type Message = ();
//!
//!     async fn perform(&self, id: &u64, text: &mut String) -> Outcome<u64> {
//!         println!("reminder {id}: {text}");
//!         Outcome::Continue
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = Manager::builder(Reminder).build()?;
//! manager
//!     .put(7, "water the plants".into(), EntryOptions::every(Duration::from_secs(3600)))
//!     .await?;
//! assert_eq!(manager.len(), 1);
//! manager.shutdown(Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Timing
//!
//! Each entry's [`EntryOptions`] set when it performs.
//!
//! - **Interval.** An entry with [`Interval::Every`] performs again and
//!   again. One with [`Interval::Never`] only serves calls and casts.
//! - **First run.** The first perform is due one interval after the `put`
//!   ([`FirstRun::AfterInterval`], the default), at once
//!   ([`FirstRun::Immediately`]), or after a given delay ([`FirstRun::After`]).
//! - **Jitter.** [`EntryOptions::jitter`] adds a random delay in
//!   `[0, jitter)` to the first due time only, so that entries loaded
//!   together spread out. [`ManagerBuilder::seed`] seeds the draw.
//! - **Cadence.** With [`Cadence::FixedDelay`] (the default), the next
//!   perform is due one interval after the previous one ended, so a slow
//!   perform pushes the schedule back. With [`Cadence::FixedRate`], due
//!   times stay on the grid of the first due time plus whole intervals, and
//!   slots missed while a perform ran late are skipped. Neither runs missed
//!   performs in a burst; [`Cadence`](Cadence#example) compares the two.
//! - **Tick.** Timers have a resolution of 1 ms ([`TICK`]). Intervals are
//!   rounded up to whole milliseconds, and those over about 24.8 days to
//!   whole seconds.
//! - **Limits.** `put` rejects an interval of zero or over [`MAX_INTERVAL`]
//!   (365 days), and a first-run delay or jitter over it, with
//!   [`Error::InvalidOptions`]. The limit keeps every deadline inside the
//!   horizon of tokio-util's timer wheel, which panics past 2^36 ms. An
//!   [`Outcome::Reschedule`] to such a value is clamped into range instead
//!   and counted in `keywheel_clamped_intervals_total`.
//! - **Clock.** Schedules use tokio's monotonic clock, so wall-clock changes
//!   move nothing, and a paused test clock drives them, as in these examples.
//!
//! A perform starts when its timer fires and a worker is free. When the
//! worker pool is saturated, due performs wait and their lateness (start
//! minus due time) grows, but none is dropped while its entry exists and
//! the manager runs. [`Manager::lateness`] and the metric
//! `keywheel_perform_lateness_seconds` show the lateness. A perform that
//! runs longer than its interval times the
//! [overrun factor](ManagerBuilder::overrun_factor) is counted and logged,
//! never cancelled.
//!
//! # Failures
//!
//! A panic in `perform`, `call`, `cast` or `init` is caught by the worker
//! that ran it. It is logged at `warn` with the id (at most one line per
//! second per shard) and counted in `keywheel_panics_total`, and the caller
//! of a `call` gets [`Error::Panicked`]. The entry then follows the
//! manager's [`PanicPolicy`]:
//!
//! - [`PanicPolicy::Remove`] (the default) removes the entry, and
//!   `terminate` runs with [`TerminateReason::Panicked`].
//! - [`PanicPolicy::Resume`] keeps the payload as the panic left it and
//!   continues the schedule.
//! - [`PanicPolicy::Reinit`] runs [`Handler::init`] on the payload before
//!   the next callback.
//!
//! Whatever the policy, an entry that panics more often than the
//! [restart limit](ManagerBuilder::restart_limit) allows (by default more
//! than 3 times within 5 s) is removed. A panic in `init` restores the
//! payload from before `init`, which then runs again before the next
//! callback. A panic in `terminate` is caught and logged, and the entry
//! stays removed.
//!
//! The store has no orphans: every entry that can perform can be found
//! with `get` and removed with `del`, and a removed entry starts no further
//! callback. Each timer and job carries its entry's slot and generation, so
//! the timer of a deleted or replaced entry never touches the entry that
//! reuses its slot. A job still queued in the worker pool when its entry is
//! removed is skipped. A callback already running finishes, but its outcome
//! is discarded and `terminate` runs after it.
//!
//! Operations wait while a shard's command queue is full; their `try_`
//! forms, such as [`Manager::try_put`], return [`Error::Overloaded`]
//! instead. Each [`Error`] message names what failed, the id where there
//! is one, and the next step to take.
//!
//! # Ordering
//!
//! - **Per id, in order.** Operations on one id are applied in the order a
//!   caller issued them: each returned future resolves once its operation
//!   has taken effect, so an operation awaited before the next one is
//!   applied first. Operations from different tasks are applied in the
//!   order their shard receives them. Different ids have no order.
//! - **One callback at a time.** `perform`, `call`, `cast` and `init` of one
//!   entry never overlap. Work that arrives while a callback runs, including
//!   a perform that falls due, waits in a FIFO queue of that entry. A call
//!   still queued at its deadline never runs.
//! - **`get` is ordered like a call.** [`Manager::get`] waits for the
//!   in-flight callback and the work queued before it, so its snapshot shows
//!   their effect. [`Manager::contains`] and [`Manager::len`] do not wait.
//! - **`cast` returns once queued.** Its message runs in FIFO order with the
//!   entry's calls, or is dropped if the entry is removed first.
//! - **`terminate` comes last.** It runs after the entry's last callback. A
//!   new entry under the same id may already run callbacks while the old
//!   entry's `terminate` runs; see [`Handler`](Handler#one-callback-at-a-time).
//!
//! # Shutdown
//!
//! [`Manager::shutdown`] stops a manager in order. From
//! [`State::Draining`] on, no perform starts and new operations fail with
//! [`Error::ShuttingDown`]. Running callbacks get a grace period and are
//! then cancelled. Then `terminate` runs once per entry with
//! [`TerminateReason::Shutdown`] (very large stores can skip it with
//! [`ManagerBuilder::terminate_on_shutdown`]), every task ends, and the state
//! becomes [`State::Stopped`]. The [`ShutdownReport`] counts the callbacks
//! that completed or were cancelled and the `terminate` callbacks that ran.
//! Dropping the last [`Manager`] handle instead stops the tasks without any
//! `terminate`.
//!
//! # Routed calls
//!
//! With [`ManagerBuilder::routing`] on, a manager keeps a consistent-hash
//! ring over its ids, and [`Manager::call_routed`] sends a `call` to the
//! entry that owns a routing key, such as a user or tenant id. The same key
//! reaches the same entry while the ids stay the same, and adding or
//! removing one of n ids moves only about 1/n of the keys.
//! [`Manager::route`] returns the owner without calling it. Each id puts
//! [`POINTS_PER_ID`] points on the ring, about 1.8 KiB per `u64` id, so
//! routing suits pools of up to some thousands of entries.
//!
//! # Memory
//!
//! An entry with a `u64` id costs about 100 bytes beyond its payload: a
//! 32-byte slab entry, its timer in the shard's `DelayQueue` (a 56-byte
//! slot), its slot in the id index (4 bytes plus a control byte, in a table
//! whose size is a power of two), and the spare capacity these tables keep
//! as they grow. A `put_many` sizes the tables for everything it brings, so
//! a bulk load leaves no doubled capacity behind. Loading 1,000,000 `u64`
//! ids with a `()` payload and intervals of 1 to 60 s into a default
//! manager with one `put_many` added 101 bytes of live heap per key (100
//! at 5,000,000 keys, 111 at 100,000, where the manager's fixed few MB
//! weigh more), measured with a counting global allocator on x86-64 Linux
//! with tokio 1.54 and tokio-util 0.7.20.
//!
//! The payload lives inline in the slab entry, so it adds its own size and
//! any heap it owns. An id is stored once, in the slab entry, so a `String`
//! id adds its heap bytes. Routed calls add about 1.8 KiB per `u64` id.
//!
//! # Metrics
//!
//! The library records through the [`metrics`](::metrics) facade under the
//! names listed in the [`metrics`] module, each with a `manager` label set
//! by [`ManagerBuilder::name`], and never installs a recorder. The
//! module's docs say what the program that installs one has to configure.

#![warn(missing_docs)]
#![warn(rustdoc::broken_intra_doc_links)]

mod builder;
mod config;
#[cfg(feature = "server")]
pub mod demo;
mod error;
mod gauges;
mod handler;
mod id;
mod log;
mod manager;
pub mod metrics;
mod options;
pub mod persist;
mod pool;
mod routing;
#[cfg(feature = "server")]
pub mod server;
mod shard;
#[cfg(feature = "server")]
pub mod sizing;
mod stats;
pub mod store;

pub use builder::ManagerBuilder;
pub use config::{
    PanicPolicy, DEFAULT_BATCH_SIZE, DEFAULT_SHARDS, DEFAULT_WORKERS, MAX_SHARDS, MAX_WORKERS,
};
pub use error::{ConfigError, Error, OpenError, OptionsError, PutError};
pub use handler::{Handler, Outcome, OutcomeKind, TerminateReason};
pub use id::Id;
pub use manager::{BulkPut, Manager, PutResult, ShutdownReport, Snapshot, State};
pub use options::{Cadence, EntryOptions, FirstRun, Interval, MAX_INTERVAL, TICK};
#[cfg(feature = "store")]
pub use persist::JsonCodec;
pub use persist::{Codec, CodecError, Persistence};
pub use routing::POINTS_PER_ID;
