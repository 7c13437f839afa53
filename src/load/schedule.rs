//! When calls are sent: an open loop (a fixed arrival rate, whatever the server does) or a
//! closed loop (a fixed number of callers, each sending its next call when the last returns),
//! and the clock both share.
//!
//! The difference matters. A closed loop slows down with the server, so a stall delays only
//! the few calls in flight and the percentiles barely move: the stall shows as a drop in
//! rate. An open loop keeps the arrivals coming, so every call that *should* have been sent
//! during a stall is measured from the time it was due (coordinated omission corrected).

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Seed of the Poisson arrivals: the same run sends at the same moments every time, so two
/// runs differ by what the server did, not by the dice.
pub const POISSON_SEED: u64 = 0x686f_6c64_7570;

/// How calls are sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `rate` calls per second at intended times set in advance. At most `max_in_flight` are
    /// outstanding: when the cap is reached, later calls are sent as soon as a slot frees and
    /// their latency still counts from their intended time; calls still unsent at the end are
    /// counted, never queued without bound.
    Open {
        rate: f64,
        max_in_flight: u32,
        #[serde(default)]
        arrivals: Arrivals,
    },
    /// `concurrency` callers, each sending its next call when the previous one returns.
    Closed { concurrency: u32 },
}

/// How an open loop spaces its calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Evenly spaced, `1 / rate` apart: the most repeatable.
    #[default]
    Uniform,
    /// Exponentially distributed gaps with mean `1 / rate`, as independent clients arrive:
    /// calls sometimes overlap even when the mean load is low.
    Poisson,
}

impl Schedule {
    /// An open loop of evenly spaced calls.
    pub fn open(rate: f64, max_in_flight: u32) -> Self {
        Self::Open {
            rate,
            max_in_flight,
            arrivals: Arrivals::Uniform,
        }
    }

    pub fn offered_rate(&self) -> Option<f64> {
        match self {
            Self::Open { rate, .. } => Some(*rate),
            Self::Closed { .. } => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Open {
                rate,
                max_in_flight,
                arrivals,
            } => {
                let kind = match arrivals {
                    Arrivals::Uniform => "",
                    Arrivals::Poisson => " Poisson",
                };
                format!("open loop {rate}/s{kind}, max {max_in_flight} in flight")
            }
            Self::Closed { concurrency } => format!("closed loop, {concurrency} concurrent"),
        }
    }
}

/// A run's time line: calls due before `window_start` are warm-up and not recorded; no call
/// is started at or after `end`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    pub window_start: Instant,
    pub end: Instant,
}

impl Clock {
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Self {
        let window_start = start + warmup;
        Self {
            start,
            window_start,
            end: window_start + duration,
        }
    }

    /// Whether a call due (open loop) or started (closed loop) at `at` is measured.
    pub fn measures(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.end
    }

    pub fn window(&self) -> Duration {
        self.end - self.window_start
    }
}

/// The intended send times of an open loop, in order.
#[derive(Debug, Clone)]
pub struct Ticks {
    start: Instant,
    rate: f64,
    arrivals: Arrivals,
    /// Calls produced so far.
    n: u64,
    /// Seconds from `start` to the next call.
    next_s: f64,
    rng: StdRng,
}

impl Ticks {
    pub fn new(start: Instant, rate: f64, arrivals: Arrivals) -> Self {
        let mut ticks = Self {
            start,
            rate,
            arrivals,
            n: 0,
            next_s: 0.0,
            rng: StdRng::seed_from_u64(POISSON_SEED),
        };
        if arrivals == Arrivals::Poisson {
            ticks.next_s = ticks.gap();
        }
        ticks
    }

    /// An exponentially distributed gap with mean `1 / rate`.
    fn gap(&mut self) -> f64 {
        let u: f64 = self.rng.random();
        -(1.0 - u).ln() / self.rate
    }
}

impl Iterator for Ticks {
    type Item = Instant;

    fn next(&mut self) -> Option<Instant> {
        let offset = Duration::try_from_secs_f64(self.next_s).ok()?;
        let at = self.start.checked_add(offset)?;
        self.n += 1;
        self.next_s = match self.arrivals {
            // Computed from n rather than summed, so that rounding never accumulates.
            // Call counts stay far below 2^53, so the conversion is exact.
            Arrivals::Uniform => self.n as f64 / self.rate,
            Arrivals::Poisson => self.next_s + self.gap(),
        };
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_ticks_are_evenly_spaced() {
        let start = Instant::now();
        let ticks: Vec<Instant> = Ticks::new(start, 100.0, Arrivals::Uniform)
            .take_while(|t| *t < start + Duration::from_millis(1_100))
            .collect();
        assert_eq!(ticks.len(), 110);
        assert_eq!(ticks[0], start);
        assert_eq!(ticks[50] - start, Duration::from_millis(500));
    }

    #[test]
    fn poisson_ticks_keep_the_mean_rate_and_are_reproducible() {
        let start = Instant::now();
        let end = start + Duration::from_secs(100);
        let count = Ticks::new(start, 50.0, Arrivals::Poisson)
            .take_while(|t| *t < end)
            .count();
        // 5000 expected; a Poisson count's standard deviation is ~71.
        assert!((4_700..=5_300).contains(&count), "{count}");
        let a: Vec<Instant> = Ticks::new(start, 50.0, Arrivals::Poisson)
            .take(10)
            .collect();
        let b: Vec<Instant> = Ticks::new(start, 50.0, Arrivals::Poisson)
            .take(10)
            .collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn the_clock_measures_only_its_window() {
        let start = Instant::now();
        let clock = Clock::new(start, Duration::from_secs(1), Duration::from_secs(2));
        assert!(!clock.measures(start));
        assert!(clock.measures(start + Duration::from_secs(1)));
        assert!(!clock.measures(start + Duration::from_secs(3)));
        assert_eq!(clock.window(), Duration::from_secs(2));
    }
}
