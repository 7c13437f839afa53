//! Latency histograms (HdrHistogram, microsecond resolution) and the percentile summaries and
//! curves the reports and plots are made of.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest latency recorded, in microseconds: loopback gRPC calls are never faster.
const LOWEST_US: u64 = 1;
/// Highest latency recorded without saturating: one hour, far past any deadline we send.
const HIGHEST_US: u64 = 3_600_000_000;
/// Three significant figures: 0.1 % error, the usual HdrHistogram setting.
const SIGFIG: u8 = 3;
/// The latency curve has this many points per decade of "nines" (90 %, 99 %, 99.9 % …).
const CURVE_POINTS_PER_NINE: u32 = 10;
/// The curve stops at 99.99 %: four nines, as far as a run of a few thousand calls can see.
const CURVE_NINES: u32 = 4;

/// One run's latencies.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
        // sigfig <= 5), so construction cannot fail.
        let histogram = Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
            .expect("constant histogram bounds are valid");
        Self { histogram }
    }

    /// Records one latency; values past an hour count as an hour.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(LOWEST_US, HIGHEST_US);
        self.histogram.saturating_record(us);
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The latency at `quantile` (0.0..=1.0) in milliseconds; 0 when nothing was recorded.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        us_to_ms(self.histogram.value_at_quantile(quantile))
    }

    pub fn summary(&self) -> Percentiles {
        let mean = if self.histogram.is_empty() {
            0.0
        } else {
            self.histogram.mean() / 1_000.0
        };
        Percentiles {
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: if self.histogram.is_empty() {
                0.0
            } else {
                us_to_ms(self.histogram.max())
            },
            mean_ms: mean,
        }
    }

    /// Latency by percentile, evenly spaced on the "nines" axis (0 %, …, 90 %, …, 99 %, …,
    /// 99.99 %), then the maximum at 100 %: the classic HdrHistogram plot.
    pub fn curve(&self) -> Vec<[f64; 2]> {
        if self.histogram.is_empty() {
            return Vec::new();
        }
        let steps = CURVE_POINTS_PER_NINE * CURVE_NINES;
        let mut points: Vec<[f64; 2]> = (0..=steps)
            .map(|k| {
                let nines = f64::from(k) / f64::from(CURVE_POINTS_PER_NINE);
                let quantile = 1.0 - 10f64.powf(-nines);
                [quantile * 100.0, self.quantile_ms(quantile)]
            })
            .collect();
        points.push([100.0, us_to_ms(self.histogram.max())]);
        points
    }
}

fn us_to_ms(us: u64) -> f64 {
    // Latencies stay far below 2^53 µs, so the conversion is exact.
    us as f64 / 1_000.0
}

/// The usual latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut latencies = Latencies::new();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        let summary = latencies.summary();
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
        assert!((summary.mean_ms - 50.5).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn curve_rises_and_ends_at_the_maximum() {
        let mut latencies = Latencies::new();
        for ms in 1..=1_000 {
            latencies.record(Duration::from_micros(ms * 100));
        }
        let curve = latencies.curve();
        assert_eq!(curve.len(), 42);
        assert!(curve.windows(2).all(|w| w[0][1] <= w[1][1]));
        assert_eq!(curve.last().map(|p| p[0]), Some(100.0));
        assert!((curve[10][0] - 90.0).abs() < 1e-9);
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        let latencies = Latencies::new();
        assert_eq!(latencies.summary(), Percentiles::default());
        assert!(latencies.curve().is_empty());
    }
}
