//! Exponential backoff with full jitter, bounded by the caller's deadline.

use std::time::Duration;

use rand::Rng;

/// First retry waits up to this long; each further retry doubles it.
pub const BASE: Duration = Duration::from_millis(50);
/// No single backoff exceeds this, however many retries came before.
pub const CAP: Duration = Duration::from_secs(2);
/// An attempt with less time than this left before the deadline is not worth starting.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(5);

/// The backoff before retry number `retry` (1-based): uniform in `0..=min(CAP, BASE·2^(retry-1))`.
/// Full jitter spreads retries of many callers apart, so a recovering upstream is not hit by
/// all of them at the same instant.
pub fn backoff(retry: u32, rng: &mut impl Rng) -> Duration {
    if retry == 0 {
        return Duration::ZERO;
    }
    let ceiling = BASE
        .checked_mul(1u32 << (retry - 1).min(16))
        .unwrap_or(CAP)
        .min(CAP);
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rng.random_range(0..=micros))
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    /// The smallest and largest of many backoffs before retry `retry`.
    fn range(retry: u32, rng: &mut StdRng) -> (Duration, Duration) {
        let samples: Vec<Duration> = (0..1_000).map(|_| backoff(retry, rng)).collect();
        let min = samples.iter().copied().min().unwrap_or_default();
        let max = samples.iter().copied().max().unwrap_or_default();
        (min, max)
    }

    #[test]
    fn full_jitter_fills_a_ceiling_that_doubles_then_caps() {
        // Seeded: the same 1,000 draws every run, so the bounds below cannot flake.
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(range(0, &mut rng), (Duration::ZERO, Duration::ZERO));
        for (retry, ceiling) in [(1, BASE), (2, BASE * 2), (3, BASE * 4), (30, CAP)] {
            let (min, max) = range(retry, &mut rng);
            assert!(max <= ceiling, "retry {retry}: {max:?} over {ceiling:?}");
            // Full jitter: the draws reach across the whole range, near zero and near the
            // ceiling, so the waits of many callers spread apart.
            assert!(
                min < ceiling / 20,
                "retry {retry}: none near zero ({min:?})"
            );
            assert!(
                max > ceiling * 19 / 20,
                "retry {retry}: none near {ceiling:?} ({max:?})"
            );
        }
    }
}
