//! The kernel stamps received bytes with `CLOCK_REALTIME`; the engine counts in monotonic
//! nanoseconds ([`crate::clock::now_ns`]). One realtime reading paired with one monotonic
//! reading converts between them. The pair is renewed every [`REPAIR_EVERY`], so that a step of
//! the wall clock (NTP, an operator) misleads conversions for at most that long; a stamp that
//! a step pushed past its read is clamped to the read.

use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::clock;

/// How often the realtime/monotonic pair is renewed: a clock step misleads conversions for at
/// most this long, and one renewal (two clock reads) per second costs nothing measurable.
pub(crate) const REPAIR_EVERY: Duration = Duration::from_secs(1);

/// One realtime reading and one engine reading taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pair {
    /// Nanoseconds since the Unix epoch.
    pub realtime: u64,
    /// Engine nanoseconds.
    pub engine: u64,
}

impl Pair {
    /// Realtime minus engine time: what the pair says, kept in one atomic.
    fn offset(self) -> i64 {
        i64::try_from(i128::from(self.realtime) - i128::from(self.engine)).unwrap_or(i64::MAX)
    }
}

/// The engine time of the realtime stamp `stamp` (ns since the Unix epoch), by `offset`
/// (realtime minus engine), never after `read_at`: a stamp in the future of its read can only
/// be a clock step. `None` for a stamp from before the engine's epoch.
pub(crate) fn to_engine(stamp: u64, offset: i64, read_at: u64) -> Option<u64> {
    let engine = i128::from(stamp) - i128::from(offset);
    let engine = u64::try_from(engine).ok().filter(|&ns| ns > 0)?;
    Some(engine.min(read_at))
}

/// Nanoseconds since the Unix epoch of a `timespec`; `None` for an empty or negative one.
pub(crate) fn timespec_ns(secs: i64, nanos: i64) -> Option<u64> {
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(ns).ok().filter(|&ns| ns > 0)
}

/// The pair's offset (realtime minus engine), shared by every connection.
static OFFSET: AtomicI64 = AtomicI64::new(0);
/// Engine time of the last pairing; 0 before the first.
static PAIRED_AT: AtomicU64 = AtomicU64::new(0);

/// Tries at pairing the clocks: the tightest of them is kept.
const PAIR_TRIES: usize = 3;

/// Reads the two clocks now; the engine reading is the midpoint of two around the realtime
/// one, so the pair's error is at most half the time between them. A thread preempted between
/// the reads would make that milliseconds, so the tightest of [`PAIR_TRIES`] is kept.
fn pair_now() -> Pair {
    let mut best = read_pair();
    for _ in 1..PAIR_TRIES {
        let next = read_pair();
        if next.0 < best.0 {
            best = next;
        }
    }
    best.1
}

/// One pairing: the time between its two engine readings, and the pair.
fn read_pair() -> (u64, Pair) {
    let before = clock::now_ns();
    let realtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, clock::nanos);
    let after = clock::now_ns();
    let window = after.saturating_sub(before);
    (
        window,
        Pair {
            realtime,
            engine: before + window / 2,
        },
    )
}

/// The offset to convert with at engine time `now`, renewed when older than [`REPAIR_EVERY`].
/// Two threads renewing at once both store a valid offset: no lock needed.
pub(crate) fn offset(now: u64) -> i64 {
    let paired_at = PAIRED_AT.load(Ordering::Acquire);
    if paired_at == 0 || now.saturating_sub(paired_at) >= clock::nanos(REPAIR_EVERY) {
        let pair = pair_now();
        OFFSET.store(pair.offset(), Ordering::Relaxed);
        PAIRED_AT.store(pair.engine, Ordering::Release);
        return pair.offset();
    }
    OFFSET.load(Ordering::Relaxed)
}

/// The engine time of the kernel's realtime `stamp` for a read at engine time `read_at`.
pub(crate) fn stamp_to_engine(stamp: u64, read_at: u64) -> Option<u64> {
    to_engine(stamp, offset(read_at), read_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn pair() -> Pair {
        Pair {
            realtime: 1_800_000_000 * S,
            engine: 50 * S,
        }
    }

    #[test]
    fn a_stamp_converts_by_the_pair() {
        let offset = pair().offset();
        let stamp = pair().realtime + 2 * S - 30 * MS;
        assert_eq!(
            to_engine(stamp, offset, 60 * S),
            Some(52 * S - 30 * MS),
            "a stamp 30 ms before the 2 s mark"
        );
        assert_eq!(
            to_engine(pair().realtime - 10 * S, offset, 60 * S),
            Some(40 * S)
        );
    }

    #[test]
    fn a_stamp_after_its_read_is_clamped_to_the_read() {
        let offset = pair().offset();
        let read_at = 52 * S;
        let stepped = pair().realtime + 5 * S;
        assert_eq!(to_engine(stepped, offset, read_at), Some(read_at));
    }

    #[test]
    fn a_stamp_before_the_engine_epoch_is_refused() {
        let offset = pair().offset();
        assert_eq!(to_engine(pair().realtime - 51 * S, offset, 60 * S), None);
        assert_eq!(to_engine(0, offset, 60 * S), None);
    }

    #[test]
    fn timespecs_convert_and_empty_ones_are_none() {
        assert_eq!(timespec_ns(2, 5), Some(2 * S + 5));
        assert_eq!(timespec_ns(0, 0), None);
        assert_eq!(timespec_ns(-1, 0), None);
    }

    #[test]
    fn the_live_pair_agrees_with_the_wall_clock() {
        let now = clock::now_ns();
        let realtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(clock::nanos)
            .unwrap_or(0);
        let converted = stamp_to_engine(realtime, u64::MAX).unwrap_or(0);
        assert!(
            converted.abs_diff(now) < 100 * MS,
            "now {now}, realtime converted {converted}"
        );
    }
}
