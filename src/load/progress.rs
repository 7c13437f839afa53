//! A progress bar for a load run, drawn on stderr only when stderr is a terminal: piped or
//! captured output (CI, `--json > file`) stays clean.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar is redrawn.
pub const REFRESH: Duration = Duration::from_millis(200);

/// A bar over the run's total time (warm-up included), or nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    total: Duration,
}

impl Progress {
    /// A bar when `wanted` and stderr is a terminal; otherwise a no-op.
    pub fn new(total: Duration, wanted: bool) -> Self {
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total.as_millis().try_into().unwrap_or(u64::MAX)),
                ProgressDrawTarget::stderr(),
            );
            // The template is a constant known to parse; fall back to the default otherwise.
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            total,
        }
    }

    /// A bar that never draws.
    pub fn hidden() -> Self {
        Self::new(Duration::ZERO, false)
    }

    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }

    /// Moves the bar to the current time and shows `completed` calls.
    pub fn update(&self, completed: u64) {
        if let Some(bar) = &self.bar {
            let elapsed = self.started.elapsed().min(self.total);
            bar.set_position(elapsed.as_millis().try_into().unwrap_or(u64::MAX));
            let rate = completed as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{completed} calls, {rate:.0}/s"));
        }
    }

    /// Shown while waiting for the last calls in flight.
    pub fn draining(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message("waiting for calls in flight");
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
