//! keywheel runs millions of keyed, periodic workers at a cost of bytes per key.
//!
//! It is the model of Elixir's `Tarearbol.DynamicManager` (one supervised
//! process per id, with a payload, a periodic `perform`, routed `call`s and
//! a store-like API) without a task per id: a sharded timer wheel
//! (tokio-util `DelayQueue`) keeps the due times, a slab keeps the entries,
//! and a fixed worker pool runs the due performs and the calls.
//!
//! - [`Handler`]: the callbacks of one kind of entry.
//! - [`Manager`]: the store API (`put`, `get`, `del`, `call`, `cast`, ...).
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
//! # Metrics
//!
//! The library records through the [`metrics`](::metrics) facade under the
//! names in [`metrics`](crate::metrics) and never installs a recorder.

#![warn(missing_docs)]

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
mod pool;
mod routing;
#[cfg(feature = "server")]
pub mod server;
mod shard;
mod stats;

pub use builder::ManagerBuilder;
pub use config::{PanicPolicy, DEFAULT_BATCH_SIZE, DEFAULT_SHARDS, DEFAULT_WORKERS, MAX_SHARDS};
pub use error::{ConfigError, Error, OptionsError, PutError};
pub use handler::{Handler, Outcome, OutcomeKind, TerminateReason};
pub use id::Id;
pub use manager::{BulkPut, Manager, PutResult, ShutdownReport, Snapshot, State};
pub use routing::POINTS_PER_ID;
pub use options::{Cadence, EntryOptions, FirstRun, Interval, MAX_INTERVAL, TICK};
