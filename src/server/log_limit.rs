//! Rate limiting for log lines that can repeat once per entry and per perform.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one line through per period and counts the lines it holds back.
///
/// Workers of the pool call [`allow`](LogLimiter::allow) concurrently, so the
/// state is two atomics instead of a lock: a compare-and-swap on the time of
/// the last line picks the one caller that may write.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    period: Duration,
    origin: Instant,
    /// Milliseconds from `origin` to the last line written, plus one. Zero
    /// means that no line was written yet.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// Returns a limiter that lets one line through per `period`.
    pub(crate) fn new(period: Duration) -> Self {
        LogLimiter {
            period,
            origin: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns `Some(suppressed)` when a line may be written now, with the
    /// number of lines held back since the previous one, and otherwise
    /// counts one more held-back line.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let period = u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX);

        let last = self.last.load(Ordering::Relaxed);
        let too_soon = last != 0 && now.saturating_sub(last) < period;
        if too_soon
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_passes_then_repeats_are_counted() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));

        assert_eq!(limiter.allow(), Some(0), "the first line must pass");
        assert_eq!(limiter.allow(), None, "a second line within the period");
        assert_eq!(limiter.allow(), None, "a third line within the period");
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn line_after_period_reports_suppressed_count() {
        let limiter = LogLimiter::new(Duration::from_millis(20));

        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        std::thread::sleep(Duration::from_millis(30));

        assert_eq!(
            limiter.allow(),
            Some(1),
            "the next line carries the count of held-back lines"
        );
    }
}
