//! Manager-wide settings and the builder that checks them.

use std::time::Duration;

/// The treatment of an entry after one of its callbacks panics.
///
/// A panic in `perform`, `call`, `cast` or `init` is caught by the worker,
/// logged at `warn` with the id (at most one line per second per shard) and
/// counted in `keywheel_panics_total`. The caller of a `call` gets
/// [`Error::Panicked`](crate::Error::Panicked). Then the policy decides.
///
/// Whatever the policy, an entry that panics more than
/// [`ManagerBuilder::restart_limit`](crate::ManagerBuilder::restart_limit)
/// times within the window is removed, with `terminate` reason
/// [`Panicked`](crate::TerminateReason::Panicked).
///
/// # Example
///
/// ```
/// use keywheel::{EntryOptions, Handler, Manager, Outcome, PanicPolicy};
/// use std::time::Duration;
///
/// struct Flaky;
///
/// impl Handler for Flaky {
///     type Id = u64;
///     type Payload = u32; // performs so far
///     type Request = ();
///     type Reply = ();
///     type Message = ();
///
///     async fn perform(&self, _id: &u64, runs: &mut u32) -> Outcome<u64> {
///         *runs += 1;
///         if *runs == 2 {
///             panic!("the second run fails");
///         }
///         Outcome::Continue
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Flaky).panic_policy(PanicPolicy::Resume).build()?;
/// manager.put(1, 0, EntryOptions::every(Duration::from_secs(1))).await?;
///
/// tokio::time::sleep(Duration::from_millis(3500)).await;
/// let snapshot = manager.get(&1).await?.expect("Resume keeps the entry");
/// assert_eq!(snapshot.payload, 3);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanicPolicy {
    /// Removes the entry; `terminate` runs with reason `Panicked` (the default).
    #[default]
    Remove,
    /// Keeps the payload as the panic left it and continues the schedule.
    Resume,
    /// Runs [`Handler::init`](crate::Handler::init) on the payload, as the
    /// panic left it, before the next callback, then continues the schedule.
    Reinit,
}

/// Settings fixed when a manager starts.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) shards: usize,
    pub(crate) workers: usize,
    pub(crate) batch_size: usize,
    pub(crate) command_capacity: usize,
    pub(crate) pool_capacity: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) panic_policy: PanicPolicy,
    pub(crate) max_restarts: u32,
    pub(crate) restart_window: Duration,
    pub(crate) overrun_factor: f64,
    pub(crate) terminate_on_shutdown: bool,
    pub(crate) stagger: bool,
    pub(crate) seed: u64,
    pub(crate) gauge_interval: Duration,
    pub(crate) routing: bool,
}

/// Default shard count. On a 2-core machine a prototype of this design
/// measured perform lateness p99 of about 58 ms with 2 shards, 4–10 ms with
/// 8 and 3–4 ms with 32 at a million performs per second: a level-2 wheel
/// cascade moves about 1/S of all keys in one step, so more shards make
/// shorter stalls. Past 32 the gain is small and each shard costs a task
/// and a few KiB.
///
/// [`ManagerBuilder::shards`](crate::ManagerBuilder::shards) changes it.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::DEFAULT_SHARDS, 32);
/// ```
pub const DEFAULT_SHARDS: usize = 32;

/// The maximum shard count that
/// [`ManagerBuilder::build`](crate::ManagerBuilder::build) accepts.
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
/// use keywheel::{Manager, MAX_SHARDS};
///
/// assert!(Manager::builder(Noop).shards(MAX_SHARDS + 1).build().is_err());
/// ```
pub const MAX_SHARDS: usize = 4096;

/// Default worker pool size: callbacks that may wait (on I/O, say) at the
/// same time. Callbacks that finish on their first poll cost a worker only
/// microseconds, so the pool mostly matters for waiting callbacks.
///
/// [`ManagerBuilder::workers`](crate::ManagerBuilder::workers) changes it.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::DEFAULT_WORKERS, 64);
/// ```
pub const DEFAULT_WORKERS: usize = 64;

/// Most workers a manager accepts. Each worker is a tokio task with its own
/// lateness histogram (about 25 KiB), so 4096 workers cost about 100 MiB
/// before any entry.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::MAX_WORKERS, 4096);
/// ```
pub const MAX_WORKERS: usize = 4096;

/// Default maximum number of jobs in one hand-off from a shard to the pool.
/// A prototype measured about twice the throughput with batches of 256
/// against one job at a time; larger batches gained nothing.
///
/// [`ManagerBuilder::batch_size`](crate::ManagerBuilder::batch_size) changes it.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::DEFAULT_BATCH_SIZE, 256);
/// ```
pub const DEFAULT_BATCH_SIZE: usize = 256;

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".to_string(),
            shards: DEFAULT_SHARDS,
            workers: DEFAULT_WORKERS,
            batch_size: DEFAULT_BATCH_SIZE,
            command_capacity: 1024,
            pool_capacity: 256,
            call_timeout: Duration::from_secs(5),
            panic_policy: PanicPolicy::Remove,
            max_restarts: 3,
            restart_window: Duration::from_secs(5),
            overrun_factor: 1.1,
            terminate_on_shutdown: true,
            stagger: true,
            seed: 0x6b65_7977_6865_656c,
            gauge_interval: Duration::from_secs(1),
            routing: false,
        }
    }
}
