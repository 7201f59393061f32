//! Progress bars of the demo phases, drawn to stderr.
//!
//! indicatif draws nothing when stderr is not a terminal, and `--quiet`
//! hides the bars everywhere.

use std::time::Duration;

use indicatif::{
    HumanCount, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};

const COUNT_TEMPLATE: &str =
    "{prefix:>26} [{wide_bar:.cyan/blue}] {human_pos}/{human_len} ({rate}, {elapsed})";
const WAIT_TEMPLATE: &str = "{prefix:>26} [{wide_bar:.yellow/blue}] {msg:>12}";

/// One bar per phase, each added below the previous one when its phase starts.
pub(super) struct Progress {
    bars: MultiProgress,
    pub(super) registering: ProgressBar,
    pub(super) completing: ProgressBar,
    pub(super) waiting: ProgressBar,
    pub(super) verifying: ProgressBar,
}

impl Progress {
    pub(super) fn new(quiet: bool) -> Progress {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Progress {
            bars: MultiProgress::with_draw_target(target),
            registering: counting_bar("registering"),
            completing: counting_bar("completing"),
            waiting: waiting_bar(),
            verifying: counting_bar("verifying"),
        }
    }

    pub(super) fn start_registering(&self, keys: u64) {
        self.start(&self.registering, keys);
    }

    pub(super) fn finish_registering(&self) {
        self.registering.finish();
    }

    pub(super) fn start_completing(&self, completions: u64) {
        self.start(&self.completing, completions);
    }

    pub(super) fn finish_completing(&self) {
        self.completing.finish();
    }

    /// Starts the wait bar, measured in milliseconds.
    pub(super) fn start_waiting(&self, total: Duration) {
        self.start(&self.waiting, millis(total));
    }

    pub(super) fn update_waiting(&self, left: Duration) {
        let total = self.waiting.length().unwrap_or(0);
        self.waiting
            .set_position(total.saturating_sub(millis(left)));
        self.waiting
            .set_message(format!("{:.1} s left", left.as_secs_f64()));
    }

    pub(super) fn finish_waiting(&self) {
        self.waiting.finish_with_message("done");
    }

    pub(super) fn start_verifying(&self, keys: u64) {
        self.start(&self.verifying, keys);
    }

    pub(super) fn finish_verifying(&self) {
        self.verifying.finish();
    }

    fn start(&self, bar: &ProgressBar, length: u64) {
        bar.set_length(length);
        self.bars.add(bar.clone());
        bar.reset_elapsed();
    }
}

fn counting_bar(phase: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template(COUNT_TEMPLATE)
        .expect("the count template is valid")
        .with_key("rate", write_rate)
        .progress_chars("=> ");
    ProgressBar::hidden().with_style(style).with_prefix(phase)
}

fn waiting_bar() -> ProgressBar {
    let style = ProgressStyle::with_template(WAIT_TEMPLATE)
        .expect("the wait template is valid")
        .progress_chars("=> ");
    ProgressBar::hidden()
        .with_style(style)
        .with_prefix("waiting for overdue alerts")
}

/// Writes the rate of a bar in whole steps per second, such as `12,345/s`.
fn write_rate(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    // A failed write only loses this field of one frame.
    let _ = write!(out, "{}/s", HumanCount(state.per_sec().round() as u64));
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
