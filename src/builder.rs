//! The builder of a [`Manager`]: settings, initial entries, start.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, PanicPolicy, MAX_SHARDS};
use crate::error::{ConfigError, OptionsError};
use crate::handler::Handler;
use crate::manager::Manager;
use crate::options::EntryOptions;

/// Configures and starts a [`Manager`].
///
/// # Example
///
/// ```
/// use keywheel::{Handler, Manager, Outcome, PanicPolicy};
/// use std::time::Duration;
///
/// struct Noop;
/// impl Handler for Noop {
///     type Id = u64;
///     type Payload = ();
///     type Request = ();
///     type Reply = ();
///     type Message = ();
///     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
///         Outcome::Continue
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Noop)
///     .name("probes")
///     .shards(8)
///     .workers(16)
///     .panic_policy(PanicPolicy::Resume)
///     .call_timeout(Duration::from_secs(2))
///     .build()?;
/// manager.ready().await;
/// # Ok(())
/// # }
/// ```
pub struct ManagerBuilder<H: Handler> {
    pub(crate) handler: H,
    pub(crate) config: Config,
    pub(crate) initial: Vec<(H::Id, H::Payload, EntryOptions)>,
}

impl<H: Handler> ManagerBuilder<H> {
    pub(crate) fn new(handler: H) -> Self {
        ManagerBuilder {
            handler,
            config: Config::default(),
            initial: Vec::new(),
        }
    }

    /// Sets the name in the `manager` label of every metric (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Sets the number of shards (default [`DEFAULT_SHARDS`](crate::DEFAULT_SHARDS)).
    pub fn shards(mut self, shards: usize) -> Self {
        self.config.shards = shards;
        self
    }

    /// Sets the size of the worker pool (default [`DEFAULT_WORKERS`](crate::DEFAULT_WORKERS)).
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers;
        self
    }

    /// Sets the most jobs in one hand-off to the pool (default 256).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.config.batch_size = batch_size;
        self
    }

    /// Sets the capacity of each shard's command queue (default 1024).
    /// When it is full, operations wait, and `try_` operations return
    /// [`Error::Overloaded`](crate::Error::Overloaded).
    pub fn command_capacity(mut self, capacity: usize) -> Self {
        self.config.command_capacity = capacity;
        self
    }

    /// Sets the capacity of the pool's queue, in batches (default 256).
    pub fn pool_capacity(mut self, capacity: usize) -> Self {
        self.config.pool_capacity = capacity;
        self
    }

    /// Sets the default deadline of `call` and `get` (default 5 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// Sets what happens after a callback panics (default [`PanicPolicy::Remove`]).
    pub fn panic_policy(mut self, policy: PanicPolicy) -> Self {
        self.config.panic_policy = policy;
        self
    }

    /// Removes an entry that panics more than `max_panics` times within
    /// `window`, whatever the panic policy (default 3 within 5 s).
    pub fn restart_limit(mut self, max_panics: u32, window: Duration) -> Self {
        self.config.max_restarts = max_panics;
        self.config.restart_window = window;
        self
    }

    /// Counts and logs a perform that runs longer than `factor` times its
    /// interval (default 1.1).
    pub fn overrun_factor(mut self, factor: f64) -> Self {
        self.config.overrun_factor = factor;
        self
    }

    /// Sets whether `shutdown` runs `terminate` for every entry (default
    /// true). Turn it off for very large stores whose entries need no
    /// farewell.
    pub fn terminate_on_shutdown(mut self, enabled: bool) -> Self {
        self.config.terminate_on_shutdown = enabled;
        self
    }

    /// Sets whether shard timer wheels start staggered (default true).
    /// Only benchmarks that measure the effect should turn this off.
    pub fn stagger_shards(mut self, enabled: bool) -> Self {
        self.config.stagger = enabled;
        self
    }

    /// Sets the seed of the jitter of first due times.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Sets how often the manager's gauges are refreshed (default 1 s).
    pub fn gauge_interval(mut self, interval: Duration) -> Self {
        self.config.gauge_interval = interval;
        self
    }

    /// Turns on routed calls ([`Manager::call_routed`]): a consistent-hash
    /// ring over the current ids, kept up to date by the shards (default
    /// off). Each id costs about 2.5 KiB more, so use it for pools of up to
    /// some thousands of ids.
    pub fn routing(mut self, enabled: bool) -> Self {
        self.config.routing = enabled;
        self
    }

    /// Adds entries loaded at start with `put_new` semantics; `ready()`
    /// resolves once they are in.
    pub fn initial_entries(
        mut self,
        entries: impl IntoIterator<Item = (H::Id, H::Payload, EntryOptions)>,
    ) -> Self {
        self.initial.extend(entries);
        self
    }

    /// Checks the settings and starts the manager's tasks on the current
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] names the setting and its allowed range, or the
    /// initial entry whose options are invalid.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub fn build(self) -> Result<Manager<H>, ConfigError> {
        self.check()?;
        Ok(Manager::start(
            Arc::new(self.handler),
            self.config,
            self.initial,
        ))
    }

    fn check(&self) -> Result<(), ConfigError> {
        let config = &self.config;
        let ranges: [(&'static str, usize, usize, usize); 5] = [
            ("shards", config.shards, 1, MAX_SHARDS),
            ("workers", config.workers, 1, 65_536),
            ("batch_size", config.batch_size, 1, 65_536),
            ("command_capacity", config.command_capacity, 1, 1 << 24),
            ("pool_capacity", config.pool_capacity, 1, 1 << 24),
        ];
        for (setting, value, min, max) in ranges {
            if value < min || value > max {
                return Err(ConfigError::OutOfRange {
                    setting,
                    value: value.to_string(),
                    rule: format!("must be between {min} and {max}"),
                });
            }
        }
        if config.call_timeout.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "call_timeout",
                value: "0s".to_string(),
                rule: "must be positive".to_string(),
            });
        }
        if !(config.overrun_factor.is_finite() && config.overrun_factor > 0.0) {
            return Err(ConfigError::OutOfRange {
                setting: "overrun_factor",
                value: config.overrun_factor.to_string(),
                rule: "must be a positive finite number".to_string(),
            });
        }
        for (id, _, options) in &self.initial {
            options
                .validate()
                .map_err(|error: OptionsError| ConfigError::InitialEntry {
                    id: format!("{id:?}"),
                    error,
                })?;
        }
        Ok(())
    }
}
