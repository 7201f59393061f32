//! The builder of a [`Manager`]: settings, initial entries, start.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, PanicPolicy, MAX_SHARDS, MAX_WORKERS};
use crate::error::{ConfigError, OpenError, OptionsError};
use crate::handler::Handler;
use crate::manager::Manager;
use crate::options::EntryOptions;
use crate::persist::Persistence;

/// Configures and starts a [`Manager`]; made by [`Manager::builder`].
///
/// Every setting has a default, so `Manager::builder(handler).build()` is a
/// working manager. [`build`](ManagerBuilder::build) checks the settings.
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
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Noop)
///     .name("probes")
///     .shards(8)
///     .workers(16)
///     .batch_size(128)
///     .command_capacity(4096)
///     .pool_capacity(64)
///     .call_timeout(Duration::from_secs(2))
///     .panic_policy(PanicPolicy::Resume)
///     .overrun_factor(2.0)
///     .gauge_interval(Duration::from_secs(5))
///     .seed(7)
///     .build()?;
/// manager.ready().await;
/// assert_eq!(manager.name(), "probes");
/// # Ok(())
/// # }
/// ```
pub struct ManagerBuilder<H: Handler> {
    pub(crate) handler: H,
    pub(crate) config: Config,
    pub(crate) initial: Vec<(H::Id, H::Payload, EntryOptions)>,
    pub(crate) persistence: Option<Persistence<H::Id, H::Payload>>,
}

impl<H: Handler> ManagerBuilder<H> {
    pub(crate) fn new(handler: H) -> Self {
        ManagerBuilder {
            handler,
            config: Config::default(),
            initial: Vec::new(),
            persistence: None,
        }
    }

    /// Sets the name in the `manager` label of every metric (default
    /// `default`); [`Manager::name`] returns it. Give each manager of a
    /// process its own name, or their metrics add up.
    ///
    /// The [type's example](ManagerBuilder#example) shows it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Sets the number of shards, from 1 to [`MAX_SHARDS`] (default
    /// [`DEFAULT_SHARDS`](crate::DEFAULT_SHARDS)).
    ///
    /// Each shard is one task with its own timer wheel, slab and id index.
    /// The [type's example](ManagerBuilder#example) shows it.
    pub fn shards(mut self, shards: usize) -> Self {
        self.config.shards = shards;
        self
    }

    /// Sets the size of the worker pool, from 1 to 65,536 (default
    /// [`DEFAULT_WORKERS`](crate::DEFAULT_WORKERS)).
    ///
    /// It bounds how many callbacks can wait (on I/O, say) at the same
    /// time. The [type's example](ManagerBuilder#example) shows it.
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers;
        self
    }

    /// Sets the maximum number of jobs in one hand-off from a shard to the
    /// pool, from 1 to 65,536 (default
    /// [`DEFAULT_BATCH_SIZE`](crate::DEFAULT_BATCH_SIZE)).
    ///
    /// The [type's example](ManagerBuilder#example) shows it.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.config.batch_size = batch_size;
        self
    }

    /// Sets the capacity of each shard's command queue, from 1 to 2^24
    /// (default 1024). When it is full, operations wait, and `try_`
    /// operations return [`Error::Overloaded`](crate::Error::Overloaded).
    ///
    /// [`Manager::try_put`](crate::Manager::try_put) shows a full queue.
    pub fn command_capacity(mut self, capacity: usize) -> Self {
        self.config.command_capacity = capacity;
        self
    }

    /// Sets the capacity of the worker pool's queue, in batches, from 1 to
    /// 2^24 (default 256). When it is full, a shard waits for room before
    /// it takes more commands or due timers.
    ///
    /// The [type's example](ManagerBuilder#example) shows it.
    pub fn pool_capacity(mut self, capacity: usize) -> Self {
        self.config.pool_capacity = capacity;
        self
    }

    /// Sets the deadline of [`call`](Manager::call), `try_call`,
    /// `call_routed` and [`get`](Manager::get) (default 5 s; must be
    /// positive). [`Manager::call_timeout`] sets one per call.
    ///
    /// The [type's example](ManagerBuilder#example) shows it.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// Sets what happens after a callback panics (default [`PanicPolicy::Remove`]).
    ///
    /// [`PanicPolicy`](PanicPolicy#example) shows it.
    pub fn panic_policy(mut self, policy: PanicPolicy) -> Self {
        self.config.panic_policy = policy;
        self
    }

    /// Removes an entry that panics more than `max_panics` times within
    /// `window`, whatever the panic policy (default 3 within 5 s).
    ///
    /// The window opens at an entry's first panic; the first panic after it
    /// has closed opens a new one and starts the count again. The limit only
    /// matters for [`PanicPolicy::Resume`] and [`PanicPolicy::Reinit`],
    /// because [`PanicPolicy::Remove`] removes an entry at its first panic.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::{EntryOptions, Handler, Manager, Outcome, PanicPolicy};
    /// use std::time::Duration;
    ///
    /// struct Broken;
    ///
    /// impl Handler for Broken {
    ///     type Id = u64;
    ///     type Payload = ();
    ///     type Request = ();
    ///     type Reply = ();
    ///     type Message = ();
    ///
    ///     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
    ///         panic!("always fails");
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Broken)
    ///     .panic_policy(PanicPolicy::Resume)
    ///     .restart_limit(2, Duration::from_secs(10))
    ///     .build()?;
    /// manager.put(1, (), EntryOptions::every(Duration::from_secs(1))).await?;
    ///
    /// // Panics at 1 s and 2 s are resumed; the third, at 3 s, removes the entry.
    /// tokio::time::sleep(Duration::from_millis(2500)).await;
    /// assert!(manager.contains(&1).await?);
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// assert!(!manager.contains(&1).await?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn restart_limit(mut self, max_panics: u32, window: Duration) -> Self {
        self.config.max_restarts = max_panics;
        self.config.restart_window = window;
        self
    }

    /// Sets the overrun factor (default 1.1; must be positive and finite).
    ///
    /// A perform that runs longer than `factor` times its interval is
    /// counted in `keywheel_overruns_total` and logged at `warn` (at most
    /// one line per second per shard). It is never cancelled. The
    /// [type's example](ManagerBuilder#example) shows it.
    pub fn overrun_factor(mut self, factor: f64) -> Self {
        self.config.overrun_factor = factor;
        self
    }

    /// Sets whether [`shutdown`](Manager::shutdown) runs `terminate` for
    /// every entry (default true). Turn it off for very large stores whose
    /// entries need no farewell. Entries removed before the shutdown still
    /// get their `terminate`.
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
    /// use keywheel::{EntryOptions, Manager};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = Manager::builder(Noop).terminate_on_shutdown(false).build()?;
    /// manager.put_many((0..1000).map(|id| (id, (), EntryOptions::never()))).await?;
    ///
    /// let report = manager.shutdown(Duration::from_secs(1)).await;
    /// assert_eq!(report.terminated, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn terminate_on_shutdown(mut self, enabled: bool) -> Self {
        self.config.terminate_on_shutdown = enabled;
        self
    }

    /// Sets whether shard timer wheels start staggered (default true).
    /// Only benchmarks that measure the effect should turn this off.
    ///
    /// Staggered shards create their long-lived wheels at different moments
    /// within the first 4.096 s, so the wheels' periodic bulk moves of
    /// timers between levels do not hit every shard at once.
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
    /// use keywheel::Manager;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A benchmark's baseline: every shard's wheel starts at the same moment.
    /// let baseline = Manager::builder(Noop).stagger_shards(false).build()?;
    /// # baseline.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stagger_shards(mut self, enabled: bool) -> Self {
        self.config.stagger = enabled;
        self
    }

    /// Sets the seed of the jitter of first due times (default: a fixed
    /// value, so runs with the same puts draw the same jitter).
    ///
    /// The [type's example](ManagerBuilder#example) shows it.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Sets how often the manager's gauges, such as `keywheel_entries`, are
    /// refreshed (default 1 s; must be positive).
    ///
    /// The [type's example](ManagerBuilder#example) shows it.
    pub fn gauge_interval(mut self, interval: Duration) -> Self {
        self.config.gauge_interval = interval;
        self
    }

    /// Turns on routed calls ([`Manager::call_routed`] and
    /// [`Manager::route`]): a consistent-hash ring over the current ids, kept
    /// up to date by the shards (default off).
    ///
    /// Each id puts [`POINTS_PER_ID`](crate::POINTS_PER_ID) points on the
    /// ring, each with its own clone of the id. Measured with a counting
    /// allocator, that is about 1.8 KiB more per `u64` id and about 4 KiB
    /// per 11-byte `String` id, so use it for pools of up to some thousands
    /// of ids, not millions.
    ///
    /// [`Manager::call_routed`](Manager::call_routed) shows it.
    pub fn routing(mut self, enabled: bool) -> Self {
        self.config.routing = enabled;
        self
    }

    /// Adds entries loaded at start with `put_new` semantics (of two
    /// entries with the same id, the first wins); [`Manager::ready`]
    /// resolves once they are in. [`build`](ManagerBuilder::build) checks
    /// their options.
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
    /// use keywheel::{EntryOptions, Manager, State};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let every = EntryOptions::every(Duration::from_secs(60));
    /// let manager = Manager::builder(Noop)
    ///     .initial_entries((0..100).map(|id| (id, (), every)))
    ///     .build()?;
    ///
    /// manager.ready().await;
    /// assert_eq!(manager.state(), State::Ready);
    /// assert_eq!(manager.len(), 100);
    /// # Ok(())
    /// # }
    /// ```
    pub fn initial_entries(
        mut self,
        entries: impl IntoIterator<Item = (H::Id, H::Payload, EntryOptions)>,
    ) -> Self {
        self.initial.extend(entries);
        self
    }

    /// Keeps the entries in a store, so they survive restarts (default: in
    /// memory only). A manager with a store starts with
    /// [`open`](ManagerBuilder::open), which reads the store back first;
    /// [`build`](ManagerBuilder::build) refuses it.
    ///
    /// [`Persistence`](crate::Persistence#example) shows it.
    pub fn persistence(mut self, persistence: Persistence<H::Id, H::Payload>) -> Self {
        self.persistence = Some(persistence);
        self
    }

    /// Checks the settings, starts the manager and, with
    /// [`persistence`](ManagerBuilder::persistence), reads every stored
    /// entry back before it returns. Initial entries are loaded only when
    /// the store is empty (or there is no store). The manager is
    /// [`State::Ready`](crate::State::Ready) when this returns.
    ///
    /// [`Persistence`](crate::Persistence#example) shows it.
    ///
    /// # Errors
    ///
    /// [`OpenError::Config`] for settings [`build`](ManagerBuilder::build)
    /// would refuse; [`OpenError::Store`] when the store cannot be read or
    /// holds a record that does not decode (it names the record, and
    /// nothing is changed or deleted); [`OpenError::Initial`] when loading
    /// the initial entries failed. Nothing keeps running after an error.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub async fn open(self) -> Result<Manager<H>, OpenError> {
        self.check()?;
        let ManagerBuilder {
            handler,
            config,
            initial,
            persistence,
        } = self;
        match persistence {
            Some(persistence) => {
                Manager::open(Arc::new(handler), config, initial, persistence).await
            }
            None => {
                let manager = Manager::start(Arc::new(handler), config, initial);
                manager.ready().await;
                Ok(manager)
            }
        }
    }

    /// Checks the settings and starts the manager's tasks (shards, workers,
    /// gauges and the initial load) on the current tokio runtime.
    ///
    /// The manager is in [`State::Starting`](crate::State::Starting) until
    /// its initial entries are loaded; operations are accepted at once.
    /// The [type's example](ManagerBuilder#example) shows it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] names the setting and its allowed range
    /// (shards, workers, batch size, capacities, call timeout, overrun
    /// factor, gauge interval). [`ConfigError::InitialEntry`] names the
    /// initial entry whose options are invalid.
    /// [`ConfigError::NeedsOpen`] says that a manager with a store starts
    /// with [`open`](ManagerBuilder::open). Nothing starts in any case.
    ///
    /// # Panics
    ///
    /// Panics if the settings are valid and it is called outside a tokio
    /// runtime.
    pub fn build(self) -> Result<Manager<H>, ConfigError> {
        self.check()?;
        if self.persistence.is_some() {
            return Err(ConfigError::NeedsOpen);
        }
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
            ("workers", config.workers, 1, MAX_WORKERS),
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
        if config.gauge_interval.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "gauge_interval",
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
        if let Some(persistence) = &self.persistence {
            let durations = [
                (
                    "flush_interval",
                    persistence.flush_interval,
                    Duration::from_millis(10),
                ),
                (
                    "recovery_spread",
                    persistence.recovery_spread,
                    Duration::ZERO,
                ),
            ];
            for (setting, value, min) in durations {
                let max = Duration::from_secs(3600);
                if value < min || value > max {
                    return Err(ConfigError::OutOfRange {
                        setting,
                        value: format!("{value:?}"),
                        rule: format!("must be between {min:?} and {max:?}"),
                    });
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Outcome;

    struct Noop;

    impl Handler for Noop {
        type Id = u64;
        type Payload = ();
        type Request = ();
        type Reply = ();
        type Message = ();

        async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
            Outcome::Continue
        }
    }

    #[test]
    fn zero_gauge_interval_is_rejected() {
        let result = Manager::builder(Noop)
            .gauge_interval(Duration::ZERO)
            .build();

        match result {
            Err(ConfigError::OutOfRange { setting, .. }) => {
                assert_eq!(setting, "gauge_interval", "the error names the setting");
            }
            Err(other) => panic!("expected OutOfRange for gauge_interval, got {other}"),
            Ok(_) => panic!("a zero gauge interval was accepted"),
        }
    }
}
