//! `keywheel bench`: the footprint and rate figures an operator needs to
//! size a machine, measured on the machine it runs on.
//!
//! Two measurements, each on a fresh manager with default settings unless
//! the flags change them:
//!
//! - Footprint: `--keys` entries with `u64` ids, a unit payload and
//!   intervals spread over 1 to 60 s are loaded with one `put_many`. It
//!   reports the resident memory the process gained per key, and the load
//!   time.
//! - Rates: for each rate of `--rates`, `--keys` entries with the interval
//!   that makes them fall due at that rate and a perform that does nothing;
//!   after a warm-up, the performs per second achieved and the lateness
//!   percentiles (start of a perform minus its due time) over `--window`.
//!   A rate is sustained when at least 95% of it is achieved with a p99
//!   lateness of at most 100 ms.
//!
//! The perform does nothing, so the rates are the scheduling ceiling: real
//! work per perform lowers them. `benches/scheduler.rs` is the full
//! benchmark, with baselines to compare against.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{EntryOptions, FirstRun, Handler, Manager, Outcome};

/// Settings of `keywheel bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Number of entries in each measurement (1,000 to 20,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,

    /// Perform rates to try, per second, comma-separated; `k` and `M`
    /// suffixes are allowed, such as "100k,500k,1M".
    #[arg(long, default_value = "100k,500k,1M,2M", value_parser = parse_rates)]
    pub rates: Rates,

    /// Length of each rate's measurement window, such as "5s" (1 s to 10 min).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub window: Duration,

    /// Number of shards (default: the library's default).
    #[arg(long)]
    pub shards: Option<usize>,

    /// Number of workers (default: the library's default).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// The rates of `--rates`, in performs per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates(pub Vec<f64>);

fn parse_rates(text: &str) -> Result<Rates, String> {
    let mut rates = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (number, factor) = match part.strip_suffix(['k', 'K']) {
            Some(number) => (number, 1e3),
            None => match part.strip_suffix('M') {
                Some(number) => (number, 1e6),
                None => (part, 1.0),
            },
        };
        let rate = number
            .parse::<f64>()
            .ok()
            .map(|value| value * factor)
            .filter(|rate| rate.is_finite() && (1.0..=100e6).contains(rate))
            .ok_or_else(|| {
                format!("invalid rate {part:?}: expected a number from 1 to 100M, such as 500k")
            })?;
        rates.push(rate);
    }
    Ok(Rates(rates))
}

/// Entries that do nothing when due.
struct Idle;

impl Handler for Idle {
    type Id = u64;
    type Payload = ();
    type Request = ();
    type Reply = ();
    type Message = ();

    async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
        Outcome::Continue
    }
}

/// Runs both measurements and prints their tables on stdout.
///
/// # Errors
///
/// Settings out of range, or a manager that fails to start.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !(1_000..=20_000_000).contains(&args.keys) {
        anyhow::bail!(
            "invalid --keys {}: must be between 1,000 and 20,000,000",
            args.keys
        );
    }
    if args.window < Duration::from_secs(1) || args.window > Duration::from_secs(600) {
        anyhow::bail!(
            "invalid --window {}: must be between 1s and 10m",
            humantime::format_duration(args.window)
        );
    }

    println!("keywheel bench: {} keys, no-op perform\n", args.keys);
    let (per_key, load) = footprint(&args).await?;
    println!("| measurement | value |\n|---|---:|");
    println!("| resident memory per key | {per_key:.0} B |");
    println!("| put_many of every key | {:.3} s |", load.as_secs_f64());
    println!();

    println!("| demand /s | achieved /s | p50 ms | p99 ms | p999 ms | max ms | sustained |");
    println!("|---:|---:|---:|---:|---:|---:|---|");
    for &rate in &args.rates.0 {
        let row = sweep(&args, rate).await?;
        println!(
            "| {rate:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            row.achieved,
            row.p50_ms,
            row.p99_ms,
            row.p999_ms,
            row.max_ms,
            if row.sustained() { "yes" } else { "no" }
        );
    }
    Ok(())
}

fn manager(args: &BenchArgs) -> anyhow::Result<Manager<Idle>> {
    let mut builder = Manager::builder(Idle).name("bench");
    if let Some(shards) = args.shards {
        builder = builder.shards(shards);
    }
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    builder.build().context("invalid manager settings")
}

/// Loads every key; returns resident bytes gained per key and the load time.
async fn footprint(args: &BenchArgs) -> anyhow::Result<(f64, Duration)> {
    let before = resident_bytes();
    let manager = manager(args)?;
    let started = Instant::now();
    let entries = (0..args.keys).map(|id| {
        // Intervals of 1 to 60 s, spread by the id.
        let every = Duration::from_millis(1_000 + id % 59_000);
        (id, (), EntryOptions::every(every))
    });
    manager.put_many(entries).await?;
    let load = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let gained = resident_bytes().saturating_sub(before);
    manager.shutdown(Duration::from_secs(5)).await;
    Ok((gained as f64 / args.keys as f64, load))
}

/// One rate's figures.
struct Row {
    demand: f64,
    achieved: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Row {
    fn sustained(&self) -> bool {
        self.achieved >= 0.95 * self.demand && self.p99_ms <= 100.0
    }
}

async fn sweep(args: &BenchArgs, rate: f64) -> anyhow::Result<Row> {
    let manager = manager(args)?;
    // Each key performs once per interval, so keys / interval = rate. The
    // first due times spread evenly over one interval.
    let interval_ms = ((args.keys as f64 / rate) * 1000.0).round().max(1.0) as u64;
    let entries = (0..args.keys).map(|id| {
        let first = Duration::from_millis(id * interval_ms / args.keys);
        let options = EntryOptions::every(Duration::from_millis(interval_ms))
            .first_run(FirstRun::After(first));
        (id, (), options)
    });
    manager.put_many(entries).await?;

    // Warm up for one interval (at least 2 s), so every key has fallen due.
    let warmup = Duration::from_millis(interval_ms).max(Duration::from_secs(2));
    tokio::time::sleep(warmup).await;

    let performs_before = manager.performs();
    let lateness_before = manager.lateness();
    let started = Instant::now();
    tokio::time::sleep(args.window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let performs = manager.performs() - performs_before;
    let mut lateness = manager.lateness();
    // The histogram only grows, so the earlier one is part of it.
    let _ = lateness.subtract(&lateness_before);
    manager.shutdown(Duration::from_secs(5)).await;

    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(Row {
        demand: rate,
        achieved: performs as f64 / elapsed,
        p50_ms: ms(lateness.value_at_quantile(0.50)),
        p99_ms: ms(lateness.value_at_quantile(0.99)),
        p999_ms: ms(lateness.value_at_quantile(0.999)),
        max_ms: ms(lateness.max()),
    })
}

/// Resident memory of this process, from `/proc/self/statm`; 0 where it
/// cannot be read (not Linux).
fn resident_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!(
            parse_rates("100k, 2M,50").unwrap(),
            Rates(vec![100e3, 2e6, 50.0])
        );
        let error = parse_rates("fast").unwrap_err();
        assert!(error.contains("\"fast\""), "{error}");
        assert!(parse_rates("0").is_err(), "a zero rate is refused");
        assert!(parse_rates("200M").is_err(), "over 100M is refused");
    }
}
