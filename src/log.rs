//! Rate limiting for warnings that can repeat once per entry.

use std::time::{Duration, Instant};

/// Minimum time between two lines of one kind from one shard.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Lets one line through per [`LOG_EVERY`] and counts the rest.
pub(crate) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new() -> Self {
        LogLimiter {
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(suppressed)` when a line may be written now, with the
    /// number of lines dropped since the last one; otherwise counts a drop.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}
