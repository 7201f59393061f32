//! The measurements of a demo run and their printed form.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{HumanBytes, HumanCount};

/// How many violations a summary quotes; the rest are only counted.
const QUOTED_VIOLATIONS: usize = 10;

/// The result of one demo run.
///
/// Counts are of keys (ids) unless their name contains requests or alerts.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// Keys the demo tried to register (`--keys`).
    pub keys: u64,
    /// Keys whose registration returned 201.
    pub registered: u64,
    /// Alert interval of every key, in whole milliseconds.
    pub interval: Duration,
    /// Keys whose completion returned 200.
    pub completed: u64,
    /// Completed keys whose completion reported alerts (must be 0).
    pub completed_alerted: u64,
    /// Completed keys that a later GET found gone (404).
    pub completed_gone: u64,
    /// Keys registered and left pending, so expected to go overdue.
    pub overdue: u64,
    /// Pending keys whose GET after their first due time reported at least one alert.
    pub overdue_alerted: u64,
    /// Sum of the alert counts that those GETs reported.
    pub overdue_alerts_seen: u64,
    /// Rise of the server's alert counter over the run.
    pub alerts: u64,
    /// `keywheel_watchdog_alerts_total` scraped from `GET /metrics` after the
    /// read-back: cumulative over the process, `None` when the scrape failed.
    pub exported_alerts: Option<u64>,
    /// Performs the server's manager finished.
    pub performs: u64,
    /// HTTP requests sent, failed ones included.
    pub http_requests: u64,
    /// Time from the start to the last registration's response.
    pub registration_elapsed: Duration,
    /// HTTP requests sent during the registration and completion phase.
    pub requests_during_load: u64,
    /// Time from the start to the end of the registration and completion phase.
    pub load_elapsed: Duration,
    /// Maximum time from sending a registration to its completion's response.
    pub max_completion_delay: Duration,
    /// Maximum time from a completion's planned moment to its response,
    /// which shows how far the client fell behind its schedule.
    pub max_completion_lag: Duration,
    /// Perform lateness (start minus due time) over every perform of the run.
    pub lateness: Lateness,
    /// Resident memory of the process at the end of the run.
    pub memory: MemoryUsage,
    /// Time of the whole run, server start and stop included.
    pub elapsed: Duration,
    /// Number of violations of the check.
    pub violations: u64,
    /// The first violations, as messages.
    pub first_violations: Vec<String>,
    /// Whether the check passed: no violation at all.
    pub passed: bool,
}

impl DemoSummary {
    /// Returns completed keys as a fraction of all keys.
    pub fn completion_rate(&self) -> f64 {
        ratio(self.completed, self.keys)
    }

    /// Returns registrations per second, from the start to the last registration.
    pub fn registrations_per_second(&self) -> f64 {
        per_second(self.registered, self.registration_elapsed)
    }

    /// Returns HTTP requests per second during the registration and completion phase.
    pub fn load_requests_per_second(&self) -> f64 {
        per_second(self.requests_during_load, self.load_elapsed)
    }

    /// Returns HTTP requests per second over the whole run.
    pub fn requests_per_second(&self) -> f64 {
        per_second(self.http_requests, self.elapsed)
    }
}

impl fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "keywheel demo summary")?;
        writeln!(
            f,
            "  keys               {} registered of {}, alert interval {}",
            HumanCount(self.registered),
            HumanCount(self.keys),
            humantime::format_duration(self.interval),
        )?;
        writeln!(
            f,
            "  completed          {} ({:.1} %), {} of them alerted, {} gone afterwards",
            HumanCount(self.completed),
            self.completion_rate() * 100.0,
            HumanCount(self.completed_alerted),
            HumanCount(self.completed_gone),
        )?;
        writeln!(
            f,
            "  overdue            {} left pending, {} alerted ({} alerts reported)",
            HumanCount(self.overdue),
            HumanCount(self.overdue_alerted),
            HumanCount(self.overdue_alerts_seen),
        )?;
        write!(
            f,
            "  alerts             {} fired by the server, {} performs",
            HumanCount(self.alerts),
            HumanCount(self.performs),
        )?;
        match self.exported_alerts {
            Some(exported) => writeln!(f, ", {} in /metrics", HumanCount(exported))?,
            None => writeln!(f, ", none in /metrics")?,
        }
        writeln!(
            f,
            "  HTTP registration  {} PUT in {:.1} s: {} requests/s",
            HumanCount(self.registered),
            self.registration_elapsed.as_secs_f64(),
            HumanCount(self.registrations_per_second().round() as u64),
        )?;
        writeln!(
            f,
            "  HTTP load phase    {} requests in {:.1} s: {} requests/s \
             (registrations and completions)",
            HumanCount(self.requests_during_load),
            self.load_elapsed.as_secs_f64(),
            HumanCount(self.load_requests_per_second().round() as u64),
        )?;
        writeln!(
            f,
            "  HTTP overall       {} requests in {:.1} s: {} requests/s",
            HumanCount(self.http_requests),
            self.elapsed.as_secs_f64(),
            HumanCount(self.requests_per_second().round() as u64),
        )?;
        writeln!(
            f,
            "  completions        at most {:.2} s after the registration was sent, \
             at most {:.1} ms behind schedule",
            self.max_completion_delay.as_secs_f64(),
            millis(self.max_completion_lag),
        )?;
        writeln!(f, "  perform lateness   {}", self.lateness)?;
        writeln!(f, "  memory (RSS)       {}", self.memory)?;
        writeln!(
            f,
            "  elapsed            {:.1} s",
            self.elapsed.as_secs_f64()
        )?;

        if self.passed {
            return write!(f, "CHECK PASSED");
        }
        write!(f, "CHECK FAILED: {} violations", self.violations)?;
        if !self.first_violations.is_empty() {
            write!(f, ", the first {}:", self.first_violations.len())?;
        }
        for violation in &self.first_violations {
            write!(f, "\n  - {violation}")?;
        }
        Ok(())
    }
}

/// Percentiles of perform lateness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lateness {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Maximum.
    pub max: Duration,
    /// Number of performs measured.
    pub samples: u64,
}

impl Lateness {
    /// Reads the percentiles from a histogram in microseconds, as
    /// [`Manager::lateness`](crate::Manager::lateness) returns.
    pub fn from_histogram(histogram: &hdrhistogram::Histogram<u64>) -> Lateness {
        if histogram.is_empty() {
            return Lateness::default();
        }
        Lateness {
            p50: Duration::from_micros(histogram.value_at_quantile(0.5)),
            p99: Duration::from_micros(histogram.value_at_quantile(0.99)),
            max: Duration::from_micros(histogram.max()),
            samples: histogram.len(),
        }
    }
}

impl fmt::Display for Lateness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.samples == 0 {
            return write!(f, "no performs measured");
        }
        write!(
            f,
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} performs",
            millis(self.p50),
            millis(self.p99),
            millis(self.max),
            HumanCount(self.samples),
        )
    }
}

/// Resident set size of the process, from `/proc/self/status` (Linux only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Current resident set size (`VmRSS`), in bytes.
    pub current_bytes: Option<u64>,
    /// Peak resident set size (`VmHWM`), in bytes.
    pub peak_bytes: Option<u64>,
}

impl MemoryUsage {
    /// Reads the current and peak resident set size; both are `None` where
    /// `/proc/self/status` cannot be read.
    pub fn read() -> MemoryUsage {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return MemoryUsage::default();
        };
        MemoryUsage {
            current_bytes: status_kib(&status, "VmRSS:").map(|kib| kib * 1024),
            peak_bytes: status_kib(&status, "VmHWM:").map(|kib| kib * 1024),
        }
    }
}

impl fmt::Display for MemoryUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.current_bytes, self.peak_bytes) {
            (Some(current), Some(peak)) => write!(
                f,
                "current {}, peak {}",
                HumanBytes(current),
                HumanBytes(peak)
            ),
            _ => write!(f, "not available (no /proc/self/status)"),
        }
    }
}

/// Returns the value of a `/proc/self/status` line such as `VmRSS:  1234 kB`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(field))?;
    let value = line[field.len()..].trim().strip_suffix("kB")?;
    value.trim().parse().ok()
}

/// Violations of the check, recorded by concurrent requests.
#[derive(Default)]
pub(super) struct Violations {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Violations {
    pub(super) fn record(&self, message: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if first.len() < QUOTED_VIOLATIONS {
            first.push(message);
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(super) fn first(&self) -> Vec<String> {
        self.first
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 / whole as f64
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds == 0.0 {
        return 0.0;
    }
    count as f64 / seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_kib_reads_rss_lines() {
        let status = "Name:\tkeywheel\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }
}
