//! `keywheel demo`: the watchdog end to end on one machine.
//!
//! The demo starts the HTTP server in-process on a loopback port and drives
//! it through a real HTTP client over TCP, as a client of the watchdog would:
//!
//! 1. It registers `--keys` pending requests (`PUT /v1/keys/{id}`), each
//!    with `every` set to `--interval`.
//! 2. While registering, it completes `--complete-ratio` of them
//!    (`POST /v1/keys/{id}/complete`), each at a random moment within the
//!    first 60 % of its interval, so before its first due time. Every
//!    completion must report zero alerts.
//! 3. It waits until the first due time of every request left pending has
//!    passed by `--margin`, then reads every id back (`GET /v1/keys/{id}`):
//!    each pending one must have been alerted at least once and each
//!    completed one must be gone (404). The server's alert counter must
//!    account for every alert seen.
//! 4. It prints what it measured (request rates, perform lateness, memory)
//!    and whether the check passed, then stops the server.
//!
//! The random choices come from a seeded generator (`--seed`), so two runs
//! with the same flags complete the same ids with the same delays.

mod client;
mod load;
mod progress;
mod summary;
mod verify;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::server::{alerts_total, ServeConfig, Server};

use self::client::WatchdogClient;
use self::progress::Progress;
pub use self::summary::DemoSummary;
use self::summary::{Lateness, MemoryUsage, Violations};

/// Default number of pending requests to register.
pub const DEFAULT_KEYS: u64 = 100_000;

/// Largest `--keys` accepted. The demo keeps one byte of state per key and
/// the server a few hundred bytes (an estimate from resident memory at
/// 100,000 keys), so this bound keeps a run within a few GiB.
pub const MAX_KEYS: u64 = 10_000_000;

/// Default alert interval. A run lasts the registration, one interval, the
/// margin and the read-back. Registration and read-back take seconds at the
/// default key count, so the default run takes about a minute.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(45);

/// Shortest `--interval` accepted. Completions land within 60 % of the
/// interval and need some slack before the due time, which a shorter
/// interval would not leave on a loaded machine.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Default fraction of the requests that are completed in time.
pub const DEFAULT_COMPLETE_RATIO: f64 = 0.9;

/// Default number of HTTP requests in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Largest `--concurrency` accepted. Each request in flight may hold its own
/// loopback connection, which takes two file descriptors in this process
/// (client and server side), and 1,024 is a common default limit of open
/// files per process.
pub const MAX_CONCURRENCY: usize = 400;

/// Default seed of the completion plan.
pub const DEFAULT_SEED: u64 = 1;

/// Default time to wait past the last first due time before checking alerts.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(2);

/// Fraction of the interval within which completions are scheduled: each
/// completed request is completed at a uniformly random moment between
/// sending its registration and this fraction of its interval later.
const COMPLETION_WINDOW: f64 = 0.6;

/// How long the server gets to drain after the check.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `keywheel demo`.
///
/// # Example
///
/// ```
/// use keywheel::demo::DemoArgs;
/// use std::time::Duration;
///
/// let args = DemoArgs {
///     keys: 2_000,
///     interval: Duration::from_secs(2),
///     ..DemoArgs::default()
/// };
/// assert_eq!(args.complete_ratio, 0.9);
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of pending requests to register (1 to 10,000,000).
    #[arg(long, default_value_t = DEFAULT_KEYS)]
    pub keys: u64,

    /// Alert interval of each request (`every`), such as "45s" or "1m".
    /// A request not completed within it gets an overdue alert.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Fraction of the requests to complete before their first due time (0 to 1).
    #[arg(long, default_value_t = DEFAULT_COMPLETE_RATIO)]
    pub complete_ratio: f64,

    /// Maximum number of HTTP requests in flight at once (1 to 400).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,

    /// Seed of the random choice of which requests to complete and when.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,

    /// Time to wait past the last first due time of a pending request before
    /// checking its alerts, such as "2s".
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub margin: Duration,

    /// Number of shards of the in-process server (default: the server's default).
    #[arg(long)]
    pub shards: Option<usize>,

    /// Number of workers of the in-process server (default: the server's default).
    #[arg(long)]
    pub workers: Option<usize>,

    /// Hide the progress bars (they are also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            keys: DEFAULT_KEYS,
            interval: DEFAULT_INTERVAL,
            complete_ratio: DEFAULT_COMPLETE_RATIO,
            concurrency: DEFAULT_CONCURRENCY,
            seed: DEFAULT_SEED,
            margin: DEFAULT_MARGIN,
            shards: None,
            workers: None,
            quiet: false,
        }
    }
}

impl DemoArgs {
    /// Checks every flag against its documented range.
    ///
    /// # Errors
    ///
    /// Returns an error naming the first invalid flag, its value and the
    /// accepted range.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_KEYS).contains(&self.keys) {
            bail!("invalid --keys {}: must be from 1 to {MAX_KEYS}", self.keys);
        }
        if !(0.0..=1.0).contains(&self.complete_ratio) {
            bail!(
                "invalid --complete-ratio {}: must be a number from 0 to 1",
                self.complete_ratio
            );
        }
        if self.interval < MIN_INTERVAL || self.interval > crate::MAX_INTERVAL {
            bail!(
                "invalid --interval {}: must be from {} to {} days",
                humantime::format_duration(self.interval),
                humantime::format_duration(MIN_INTERVAL),
                crate::MAX_INTERVAL.as_secs() / (24 * 60 * 60),
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            bail!(
                "invalid --concurrency {}: must be from 1 to {MAX_CONCURRENCY}",
                self.concurrency
            );
        }
        Ok(())
    }
}

/// Runs the demo, prints its summary to stdout and fails unless the check passed.
///
/// # Errors
///
/// Returns an error for an invalid flag, when the server cannot start or
/// stop, or when the check failed (the summary lists the first violations).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let summary = run_with(args).await?;
    println!("{summary}");

    if !summary.passed {
        bail!(
            "demo check failed with {} violations (see the summary above)",
            summary.violations
        );
    }
    Ok(())
}

/// Runs the demo and returns what it measured, without printing a summary.
///
/// A failed check is not an error here: it shows in
/// [`DemoSummary::passed`] and [`DemoSummary::first_violations`].
///
/// # Errors
///
/// Returns an error for an invalid flag, or when the in-process server
/// cannot start, fails while serving or does not stop within 30 s.
pub async fn run_with(args: DemoArgs) -> anyhow::Result<DemoSummary> {
    args.validate()?;
    let started = Instant::now();

    // The demo's watches are throwaway: it keeps nothing on disk.
    let mut config = ServeConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        data_dir: None,
        ..ServeConfig::default()
    };
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    let server = Server::bind(config)
        .await
        .context("failed to start the in-process server")?;
    let address = server.local_addr();
    let manager = server.manager().clone();
    let alerts_before = alerts_total();

    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        // A dropped sender also stops the server.
        let _ = stopped.await;
    }));

    let checked = check(&args, address, started).await;
    let lateness = Lateness::from_histogram(&manager.lateness());
    let performs = manager.performs();
    let memory = MemoryUsage::read();

    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, serving).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => return Err(error.context("the in-process server failed")),
        Ok(Err(join_error)) => bail!("the in-process server task failed: {join_error}"),
        Err(_) => bail!(
            "the in-process server did not stop within {}",
            humantime::format_duration(SHUTDOWN_TIMEOUT)
        ),
    }

    let checked = checked?;
    let alerts = alerts_total().saturating_sub(alerts_before);
    Ok(checked.into_summary(alerts, lateness, performs, memory, started.elapsed()))
}

/// Results of the client side of one run.
struct Checked {
    run: Arc<DemoRun>,
    registration_elapsed: Duration,
    requests_during_load: u64,
    load_elapsed: Duration,
    exported_alerts: Option<u64>,
}

impl Checked {
    fn into_summary(
        self,
        alerts: u64,
        lateness: Lateness,
        performs: u64,
        memory: MemoryUsage,
        elapsed: Duration,
    ) -> DemoSummary {
        let run = &self.run;
        let counters = &run.counters;
        let overdue = counters.overdue.load(Ordering::Relaxed);
        let alerts_seen = counters.overdue_alerts_seen.load(Ordering::Relaxed);

        // Every pending key must have raised at least one alert.
        if alerts < overdue {
            run.violations.record(format!(
                "the server's alert counter rose by {alerts}, \
                 fewer than the {overdue} requests left pending"
            ));
        }
        // The counter is read after the last GET, so it must also cover
        // every alert those GETs reported.
        if alerts < alerts_seen {
            run.violations.record(format!(
                "the server's alert counter rose by {alerts}, \
                 but the pending requests reported {alerts_seen} alerts"
            ));
        }

        DemoSummary {
            keys: run.args.keys,
            registered: counters.registered.load(Ordering::Relaxed),
            interval: run.interval,
            completed: counters.completed.load(Ordering::Relaxed),
            completed_alerted: counters.completed_alerted.load(Ordering::Relaxed),
            completed_gone: counters.completed_gone.load(Ordering::Relaxed),
            overdue,
            overdue_alerted: counters.overdue_alerted.load(Ordering::Relaxed),
            overdue_alerts_seen: alerts_seen,
            alerts,
            exported_alerts: self.exported_alerts,
            performs,
            http_requests: run.client.requests(),
            registration_elapsed: self.registration_elapsed,
            requests_during_load: self.requests_during_load,
            load_elapsed: self.load_elapsed,
            max_completion_delay: Duration::from_micros(
                counters.max_completion_delay_us.load(Ordering::Relaxed),
            ),
            max_completion_lag: Duration::from_micros(
                counters.max_completion_lag_us.load(Ordering::Relaxed),
            ),
            lateness,
            memory,
            elapsed,
            violations: run.violations.count(),
            first_violations: run.violations.first(),
            passed: run.violations.count() == 0,
        }
    }
}

/// Drives the client side: load, wait, verify.
async fn check(args: &DemoArgs, address: SocketAddr, started: Instant) -> anyhow::Result<Checked> {
    let client = WatchdogClient::new(address, args.concurrency)?;
    let run = Arc::new(DemoRun::new(args.clone(), client, started));

    let registration_elapsed = load::register_and_complete(&run).await?;
    let requests_during_load = run.client.requests();
    let load_elapsed = started.elapsed();

    verify::wait_for_due_times(&run).await;
    verify::read_back(&run).await;
    let exported_alerts = verify::check_exported_alerts(&run).await;

    Ok(Checked {
        run,
        registration_elapsed,
        requests_during_load,
        load_elapsed,
        exported_alerts,
    })
}

/// Stage of one key in the demo, stored per key as a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum KeyState {
    /// Not registered yet, or its registration failed.
    Unregistered = 0,
    /// Registered and left pending, so it must go overdue.
    Pending = 1,
    /// Registered and waiting for its planned completion.
    Completing = 2,
    /// Completed with a 200.
    Completed = 3,
    /// Its completion failed (already recorded as a violation).
    Failed = 4,
}

impl KeyState {
    fn from_byte(byte: u8) -> KeyState {
        match byte {
            1 => KeyState::Pending,
            2 => KeyState::Completing,
            3 => KeyState::Completed,
            4 => KeyState::Failed,
            _ => KeyState::Unregistered,
        }
    }
}

/// Counts of what happened to the keys, updated by the concurrent requests.
#[derive(Default)]
struct Counters {
    registered: AtomicU64,
    completed: AtomicU64,
    /// Completions whose response reported alerts.
    completed_alerted: AtomicU64,
    /// Completed keys that a later GET found gone (404).
    completed_gone: AtomicU64,
    /// Keys registered and left pending.
    overdue: AtomicU64,
    /// Pending keys whose GET reported at least one alert.
    overdue_alerted: AtomicU64,
    /// Sum of the alerts that the GETs of pending keys reported.
    overdue_alerts_seen: AtomicU64,
    /// Maximum time from sending a registration to its completion's response, in microseconds.
    max_completion_delay_us: AtomicU64,
    /// Maximum lag of a completion's response behind its planned time, in microseconds.
    max_completion_lag_us: AtomicU64,
    /// Latest registration of a pending key, in microseconds since the demo started.
    last_pending_registered_us: AtomicU64,
}

/// State shared by the concurrent requests of one demo run.
struct DemoRun {
    args: DemoArgs,
    /// Interval sent as `every`, rounded up to whole milliseconds like the server's tick.
    interval: Duration,
    client: WatchdogClient,
    states: Vec<AtomicU8>,
    counters: Counters,
    violations: Violations,
    progress: Progress,
    started: Instant,
}

impl DemoRun {
    fn new(args: DemoArgs, client: WatchdogClient, started: Instant) -> DemoRun {
        let whole_millis = args.interval.as_nanos().div_ceil(1_000_000);
        let interval = Duration::from_millis(u64::try_from(whole_millis).unwrap_or(u64::MAX));
        let keys = usize::try_from(args.keys).expect("--keys is at most 10,000,000");
        let states = (0..keys).map(|_| AtomicU8::new(0)).collect();
        let progress = Progress::new(args.quiet);

        DemoRun {
            args,
            interval,
            client,
            states,
            counters: Counters::default(),
            violations: Violations::default(),
            progress,
            started,
        }
    }

    fn state(&self, index: u64) -> KeyState {
        KeyState::from_byte(self.states[index as usize].load(Ordering::Acquire))
    }

    fn set_state(&self, index: u64, state: KeyState) {
        self.states[index as usize].store(state as u8, Ordering::Release);
    }

    /// Returns the first due time of the latest registered pending key.
    fn last_pending_due(&self) -> Option<Instant> {
        if self.counters.overdue.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let registered_us = self
            .counters
            .last_pending_registered_us
            .load(Ordering::Relaxed);
        Some(self.started + Duration::from_micros(registered_us) + self.interval)
    }
}

/// Returns the id of the request with this index, such as `req-000123`.
fn key_id(index: u64) -> String {
    format!("req-{index:06}")
}

/// Returns the duration in whole microseconds, saturating at `u64::MAX`.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
