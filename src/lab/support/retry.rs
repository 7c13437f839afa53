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
    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut rng = rand::rng();
        for _ in 0..200 {
            assert_eq!(backoff(0, &mut rng), Duration::ZERO);
            assert!(backoff(1, &mut rng) <= BASE);
            assert!(backoff(3, &mut rng) <= BASE * 4);
            assert!(backoff(30, &mut rng) <= CAP);
        }
    }
}
