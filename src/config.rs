//! Manager-wide settings and the builder that checks them.

use std::time::Duration;

/// What happens to an entry after one of its callbacks panics.
///
/// Whatever the policy, an entry that panics more than
/// [`ManagerBuilder::restart_limit`](crate::ManagerBuilder::restart_limit)
/// times within the window is removed, with `terminate` reason
/// [`Panicked`](crate::TerminateReason::Panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanicPolicy {
    /// Removes the entry; `terminate` runs with reason `Panicked` (the default).
    #[default]
    Remove,
    /// Keeps the payload as the panic left it and continues the schedule.
    Resume,
    /// Runs `init` on the payload again before the next callback, then continues.
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
pub const DEFAULT_SHARDS: usize = 32;

/// Most shards a manager accepts.
pub const MAX_SHARDS: usize = 4096;

/// Default worker pool size: callbacks that may wait (on I/O, say) at the
/// same time. Callbacks that finish on their first poll cost a worker only
/// microseconds, so the pool mostly matters for waiting callbacks.
pub const DEFAULT_WORKERS: usize = 64;

/// Most jobs in one hand-off from a shard to the pool. A prototype measured
/// about twice the throughput with batches of 256 against one job at a time;
/// larger batches gained nothing.
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
