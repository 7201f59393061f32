//! Per-entry options and the limits every interval must respect.

use std::time::Duration;

use crate::error::OptionsError;

/// The maximum interval, first-run delay or jitter that `put` accepts: 365 days.
///
/// The tokio-util wheel under each shard panics on a deadline more than
/// 2^36 ms (about 795 days) after its queue was created. A shard starts a
/// fresh queue once the current one is 400 days old, and no deadline is ever
/// set more than this maximum ahead (a first due time of `first_run` plus
/// `jitter` is capped at it), so every deadline stays within 765 days of its
/// queue's start.
///
/// # Example
///
/// ```
/// use keywheel::{EntryOptions, MAX_INTERVAL};
/// use std::time::Duration;
///
/// assert!(EntryOptions::every(MAX_INTERVAL).validate().is_ok());
/// assert!(EntryOptions::every(MAX_INTERVAL + Duration::from_secs(1)).validate().is_err());
/// ```
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The wheel's tick: 1 ms.
///
/// Timers fire with this resolution, and intervals are rounded up to a
/// whole number of ticks. Intervals over 2^31 ms (about 24.8 days) are
/// stored in whole seconds, so they are rounded up to the next second.
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
/// use keywheel::{EntryOptions, Interval, Manager, TICK};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = Manager::builder(Noop).build()?;
/// manager.put(1, (), EntryOptions::every(Duration::from_micros(1500))).await?;
///
/// let snapshot = manager.get(&1).await?.expect("the entry exists");
/// assert_eq!(snapshot.interval, Interval::Every(2 * TICK));
/// # Ok(())
/// # }
/// ```
pub const TICK: Duration = Duration::from_millis(1);

/// How often an entry performs.
///
/// # Example
///
/// ```
/// use keywheel::{EntryOptions, Interval};
/// use std::time::Duration;
///
/// let every = EntryOptions::every(Duration::from_secs(30));
/// assert_eq!(every.interval, Interval::Every(Duration::from_secs(30)));
/// assert_eq!(EntryOptions::never().interval, Interval::Never);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Performs every given duration (rounded up to the 1 ms [`TICK`]).
    Every(Duration),
    /// Never performs on its own: the entry only serves calls and casts
    /// (and performs once if [`FirstRun::Immediately`] or [`FirstRun::After`] is set).
    Never,
}

/// When the first perform of a new entry is due.
///
/// The entry's [`jitter`](EntryOptions::jitter) is added to each of these.
///
/// # Example
///
/// ```
/// use keywheel::{EntryOptions, FirstRun};
/// use std::time::Duration;
///
/// // Performs at once, then every minute.
/// let options = EntryOptions::every(Duration::from_secs(60)).first_run(FirstRun::Immediately);
/// assert_eq!(options.first_run, FirstRun::Immediately);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstRun {
    /// One interval after the `put` (the default). An entry with
    /// [`Interval::Never`] then never performs.
    #[default]
    AfterInterval,
    /// At once.
    Immediately,
    /// The given duration after the `put`, at most [`MAX_INTERVAL`].
    After(Duration),
}

/// The rule that sets the due time after a perform.
///
/// Neither cadence ever runs missed performs in a burst. A `call` or `cast`
/// never moves the schedule, unless it returns
/// [`Outcome::Reschedule`](crate::Outcome::Reschedule), which moves a
/// scheduled perform to the new interval from that moment.
///
/// # Example
///
/// A perform that takes 40 ms, every 100 ms, for about a second:
///
/// ```
/// use keywheel::{Cadence, EntryOptions, Handler, Manager, Outcome};
/// use std::time::Duration;
///
/// struct Slow;
///
/// impl Handler for Slow {
///     type Id = u64;
///     type Payload = ();
///     type Request = ();
///     type Reply = ();
///     type Message = ();
///
///     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
///         tokio::time::sleep(Duration::from_millis(40)).await;
///         Outcome::Continue
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let every = EntryOptions::every(Duration::from_millis(100));
/// let delay = Manager::builder(Slow).build()?;
/// let rate = Manager::builder(Slow).build()?;
/// delay.put(1, (), every.cadence(Cadence::FixedDelay)).await?;
/// rate.put(1, (), every.cadence(Cadence::FixedRate)).await?;
///
/// tokio::time::sleep(Duration::from_millis(1050)).await;
/// // Shutting down publishes every worker's count at once.
/// delay.shutdown(Duration::from_secs(1)).await;
/// rate.shutdown(Duration::from_secs(1)).await;
/// // Fixed delay: due at 100, 240, 380, ... ms (each perform's end plus 100 ms).
/// assert_eq!(delay.performs(), 7);
/// // Fixed rate: due at 100, 200, 300, ... ms.
/// assert_eq!(rate.performs(), 10);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cadence {
    /// The next due time is the end of the previous perform plus the
    /// interval, so a late or slow perform pushes every later one back (the
    /// default, as in Tarearbol).
    #[default]
    FixedDelay,
    /// Due times stay on the grid `first due + k × interval`, where the
    /// first due time includes any jitter. Slots missed while a perform ran
    /// late are skipped: the next perform is due at the first grid point
    /// not in the past.
    FixedRate,
}

/// The options of one entry: its interval, first run, jitter and cadence.
///
/// [`Manager::put`](crate::Manager::put) checks them with
/// [`validate`](EntryOptions::validate) and rejects invalid ones.
///
/// # Example
///
/// ```
/// use keywheel::{Cadence, EntryOptions, FirstRun};
/// use std::time::Duration;
///
/// let options = EntryOptions::every(Duration::from_secs(30))
///     .first_run(FirstRun::Immediately)
///     .jitter(Duration::from_secs(5))
///     .cadence(Cadence::FixedRate);
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryOptions {
    /// How often the entry performs.
    pub interval: Interval,
    /// When the first perform is due.
    pub first_run: FirstRun,
    /// The upper bound of a random delay added to the first due time, so
    /// that entries loaded together do not all fire together.
    ///
    /// The delay is a whole number of milliseconds in `[0, jitter)`, drawn
    /// from a generator seeded by
    /// [`ManagerBuilder::seed`](crate::ManagerBuilder::seed). Later due
    /// times follow the cadence and get no jitter. The first due time,
    /// jitter included, is at most [`MAX_INTERVAL`] after the `put`.
    pub jitter: Duration,
    /// The rule for later due times.
    pub cadence: Cadence,
}

impl EntryOptions {
    /// Returns options for an entry that performs every `interval`, first
    /// one interval after the `put`, with no jitter and a fixed delay.
    pub fn every(interval: Duration) -> Self {
        EntryOptions {
            interval: Interval::Every(interval),
            first_run: FirstRun::AfterInterval,
            jitter: Duration::ZERO,
            cadence: Cadence::FixedDelay,
        }
    }

    /// Returns options for an entry that only serves calls and casts.
    ///
    /// With [`first_run`](EntryOptions::first_run) set to
    /// [`FirstRun::Immediately`] or [`FirstRun::After`], it performs once.
    pub fn never() -> Self {
        EntryOptions {
            interval: Interval::Never,
            ..EntryOptions::every(Duration::from_secs(1))
        }
    }

    /// Sets when the first perform is due.
    pub fn first_run(mut self, first_run: FirstRun) -> Self {
        self.first_run = first_run;
        self
    }

    /// Sets the [`jitter`](EntryOptions#structfield.jitter) of the first due time.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the cadence.
    pub fn cadence(mut self, cadence: Cadence) -> Self {
        self.cadence = cadence;
        self
    }

    /// Checks every duration against its rule.
    ///
    /// # Errors
    ///
    /// [`OptionsError`] names the field, the value and the allowed range: an
    /// interval of zero or over [`MAX_INTERVAL`], or a first-run delay or
    /// jitter over [`MAX_INTERVAL`]. An interval under 1 ms is valid and
    /// rounded up to 1 ms.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::{EntryOptions, OptionsError};
    /// use std::time::Duration;
    ///
    /// let zero = EntryOptions::every(Duration::ZERO);
    /// assert_eq!(zero.validate(), Err(OptionsError::ZeroInterval));
    /// assert!(EntryOptions::every(Duration::from_micros(1)).validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), OptionsError> {
        if let Interval::Every(every) = self.interval {
            if every.is_zero() {
                return Err(OptionsError::ZeroInterval);
            }
            if every > MAX_INTERVAL {
                return Err(OptionsError::TooLong {
                    field: "interval",
                    value: every,
                });
            }
        }
        if let FirstRun::After(after) = self.first_run {
            if after > MAX_INTERVAL {
                return Err(OptionsError::TooLong {
                    field: "first_run",
                    value: after,
                });
            }
        }
        if self.jitter > MAX_INTERVAL {
            return Err(OptionsError::TooLong {
                field: "jitter",
                value: self.jitter,
            });
        }
        Ok(())
    }
}

/// Rounds a duration up to whole milliseconds, as the wheel does.
pub(crate) fn ceil_millis(duration: Duration) -> u64 {
    let millis = duration.as_millis();
    let rounded = if duration.subsec_nanos().is_multiple_of(1_000_000) {
        millis
    } else {
        millis + 1
    };
    u64::try_from(rounded).unwrap_or(u64::MAX)
}

/// Clamps a rescheduled interval into `[TICK, MAX_INTERVAL]`; returns the
/// value and whether it had to change.
pub(crate) fn clamp_interval(interval: Duration) -> (Duration, bool) {
    if interval < TICK {
        (TICK, true)
    } else if interval > MAX_INTERVAL {
        (MAX_INTERVAL, true)
    } else {
        (interval, false)
    }
}

/// An interval packed into 4 bytes, so a slab entry stays small.
///
/// Bit 31 chooses the unit: clear means milliseconds (up to 2^31 - 1 ms,
/// about 24.8 days), set means seconds. Longer intervals are therefore
/// rounded up to whole seconds. `NEVER` marks [`Interval::Never`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedInterval(u32);

impl PackedInterval {
    const SECONDS_BIT: u32 = 1 << 31;
    pub(crate) const NEVER: PackedInterval = PackedInterval(u32::MAX);

    pub(crate) fn new(interval: Interval) -> Self {
        match interval {
            Interval::Never => Self::NEVER,
            Interval::Every(every) => Self::from_duration(every),
        }
    }

    /// Packs a duration that is already in `[TICK, MAX_INTERVAL]`.
    pub(crate) fn from_duration(every: Duration) -> Self {
        let millis = ceil_millis(every).max(1);
        if millis < u64::from(Self::SECONDS_BIT) {
            return PackedInterval(millis as u32);
        }
        let seconds = millis.div_ceil(1000);
        // MAX_INTERVAL is 31,536,000 s, far below 2^31 - 1 (the NEVER marker).
        PackedInterval(Self::SECONDS_BIT | seconds.min(u64::from(Self::SECONDS_BIT - 2)) as u32)
    }

    pub(crate) fn get(self) -> Option<Duration> {
        if self == Self::NEVER {
            None
        } else if self.0 & Self::SECONDS_BIT == 0 {
            Some(Duration::from_millis(u64::from(self.0)))
        } else {
            Some(Duration::from_secs(u64::from(self.0 & !Self::SECONDS_BIT)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_interval_round_trips() {
        for millis in [1u64, 250, 30_000, 86_400_000, (1 << 31) - 1] {
            let packed = PackedInterval::from_duration(Duration::from_millis(millis));
            assert_eq!(
                packed.get(),
                Some(Duration::from_millis(millis)),
                "{millis} ms"
            );
        }
    }

    #[test]
    fn packed_interval_rounds_long_ones_to_seconds() {
        let packed = PackedInterval::from_duration(Duration::from_millis(40 * 86_400_000 + 1));
        assert_eq!(packed.get(), Some(Duration::from_secs(40 * 86_400 + 1)));

        let max = PackedInterval::from_duration(MAX_INTERVAL);
        assert_eq!(max.get(), Some(MAX_INTERVAL));
    }

    #[test]
    fn sub_millisecond_rounds_up() {
        assert_eq!(ceil_millis(Duration::from_micros(1)), 1);
        assert_eq!(ceil_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ceil_millis(Duration::from_millis(7)), 7);
    }

    #[test]
    fn validate_rejects_zero_and_huge() {
        assert_eq!(
            EntryOptions::every(Duration::ZERO).validate(),
            Err(OptionsError::ZeroInterval)
        );
        assert!(EntryOptions::every(Duration::MAX).validate().is_err());
        assert!(EntryOptions::every(MAX_INTERVAL).validate().is_ok());
        assert!(EntryOptions::never().validate().is_ok());
    }
}
