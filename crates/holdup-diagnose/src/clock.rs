//! The engine's clocks: a monotonic nanosecond clock that fits in an atomic, and what the worker
//! thread's scheduler accounting says about a poll: how long the thread was on the CPU, and how
//! long it was runnable but waiting for a CPU the machine gave to someone else.
//!
//! The CPU clock (`CLOCK_THREAD_CPUTIME_ID`) is a system call, not a vDSO read (1.2 µs here
//! against 31 ns for the monotonic clock), and the runqueue wait (`/proc/thread-self/schedstat`,
//! Linux) is a read of a proc file. Doing both around every poll would cost more than a whole
//! `Fast` request, so they are read at the end of polls long enough to matter
//! ([`CPU_SPLIT_FROM`]) and, at poll starts, at most once per [`CPU_MARK_EVERY`] of a thread's
//! time. A long poll is measured from the thread's last mark, which over-counts its CPU by at
//! most what the thread used in the [`CPU_MARK_EVERY`] before the poll began.
//!
//! Why the runqueue wait: a poll that held its worker for 700 ms while the machine's cores were
//! busy with other processes was on the CPU for only part of it, yet it blocked nothing; it
//! computed, slowly. Only time the thread was neither running nor runnable is a blocking call.
//! And a blocking call always switches the thread out: when the thread's count of times it was
//! put on a CPU (schedstat's third field) did not change during a poll, any time the poll was
//! not on the CPU was taken by the machine (a virtual CPU the hypervisor descheduled: measured
//! here as 4 ms stretches with no switch and no runqueue wait), not by the handler.

use std::{
    cell::{Cell, RefCell},
    fs::File,
    sync::OnceLock,
    time::{Duration, Instant},
};

/// How many times longer the engine's code takes than on the machine itself: 1, except in the
/// build that `tests/bench/instructions.sh` counts under valgrind (`--cfg
/// holdup_under_valgrind`), where every call runs about 50 times slower. The rules below that
/// fire on wall time would fire 50 times as often per call there as at full speed (measured:
/// 5 136 schedstat reads per 10 000 calls, against 208 at full speed), and the count would be
/// of a path no call takes; scaled, it is 152.
pub(crate) const SLOWDOWN: u64 = if cfg!(holdup_under_valgrind) { 50 } else { 1 };

/// Polls shorter than this count as on-CPU without reading the clocks: a blocking call this
/// short is not what makes a request late.
pub(crate) const CPU_SPLIT_FROM: Duration = Duration::from_millis(SLOWDOWN);
/// At most one clock read per this much of a thread's wall time at poll starts: bounds the error
/// on a long poll's on-CPU time (and CPU wait) to this, and the cost to one system call and one
/// proc read per 2 ms of a busy worker. At 500 µs, and read afresh after every park, the reads
/// were a third of `holdup serve`'s system calls under the benchmark's load; the polls this
/// split matters for (a blocking call against computing) last tens of milliseconds.
pub(crate) const CPU_MARK_EVERY: Duration = Duration::from_millis(2 * SLOWDOWN);

/// The engine's epoch: an `Instant` and the monotonic clock's reading at (nearly) the same
/// moment, so that engine time converts to and from `Instant`s.
#[derive(Clone, Copy)]
struct Epoch {
    instant: Instant,
    /// `CLOCK_MONOTONIC` at `instant`, in ns (Linux; 0 elsewhere, where `Instant` is read).
    mono: u64,
}

static EPOCH: OnceLock<Epoch> = OnceLock::new();

fn epoch() -> Epoch {
    *EPOCH.get_or_init(|| Epoch {
        instant: Instant::now(),
        mono: monotonic_ns().unwrap_or(0),
    })
}

/// `CLOCK_MONOTONIC` in ns, which `Instant` reads on Linux: one vDSO call, without the
/// `Instant` arithmetic (measured: that arithmetic was most of the clock's instructions, and
/// the engine reads the clock several times per poll).
fn monotonic_ns() -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let secs = u64::try_from(t.tv_sec).ok()?;
        let nanos = u64::try_from(t.tv_nsec).ok()?;
        Some(secs * 1_000_000_000 + nanos)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

/// Nanoseconds since the engine's epoch; never 0, which atomics use for "unset".
pub fn now_ns() -> u64 {
    let epoch = epoch();
    match monotonic_ns() {
        Some(now) => now.saturating_sub(epoch.mono).max(1),
        None => ns_at(Instant::now()),
    }
}

/// The instant at engine time `ns`, the inverse of [`ns_at`].
pub fn instant_at(ns: u64) -> Instant {
    epoch().instant + std::time::Duration::from_nanos(ns)
}

/// The engine time of `instant`.
pub fn ns_at(instant: Instant) -> u64 {
    u64::try_from(
        instant
            .saturating_duration_since(epoch().instant)
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
    .max(1)
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// This thread's CPU time, or `None` where the platform has no thread CPU clock.
fn thread_cpu_ns() -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let secs = u64::try_from(t.tv_sec).ok()?;
        let nanos = u64::try_from(t.tv_nsec).ok()?;
        Some(secs * 1_000_000_000 + nanos)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
    {
        None
    }
}

thread_local! {
    /// This thread's `/proc/thread-self/schedstat`, kept open (`None` where there is none).
    static SCHEDSTAT: RefCell<Option<Option<File>>> = const { RefCell::new(None) };
}

/// Time this thread has spent runnable but waiting for a CPU, and how many times it was put on
/// a CPU (the second and third schedstat fields).
fn thread_schedstat() -> Option<(u64, u64)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::FileExt;
        SCHEDSTAT.with(|file| {
            let mut file = file.borrow_mut();
            let file = file
                .get_or_insert_with(|| File::open("/proc/thread-self/schedstat").ok())
                .as_ref()?;
            let mut buf = [0u8; 96];
            let n = file.read_at(&mut buf, 0).ok()?;
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            let mut fields = text.split_ascii_whitespace().skip(1);
            let run_delay = fields.next()?.parse().ok()?;
            let switches: u64 = fields.next()?.parse().ok()?;
            // A thread that runs was put on a CPU at least once: zeros are a kernel that
            // keeps no scheduler statistics (neither schedstats nor delay accounting), whose
            // unchanging count would book every off-CPU moment as preemption.
            (switches > 0).then_some((run_delay, switches))
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = &SCHEDSTAT;
        None
    }
}

/// A thread's clocks at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMark {
    wall: u64,
    cpu: Option<u64>,
    /// schedstat's run delay and switch-in count.
    sched: Option<(u64, u64)>,
}

impl CpuMark {
    fn read(wall: u64) -> Self {
        Self {
            wall,
            cpu: thread_cpu_ns(),
            sched: thread_schedstat(),
        }
    }
}

thread_local! {
    static LAST_MARK: Cell<CpuMark> = const {
        Cell::new(CpuMark { wall: 0, cpu: None, sched: None })
    };
}

/// The mark a poll starting at `now` measures from: this thread's last reading, or a fresh one
/// if that is older than [`CPU_MARK_EVERY`].
pub fn mark(now: u64) -> CpuMark {
    LAST_MARK.with(|last| {
        let mark = last.get();
        if mark.cpu.is_some() && now.saturating_sub(mark.wall) < nanos(CPU_MARK_EVERY) {
            return mark;
        }
        let fresh = CpuMark::read(now);
        last.set(fresh);
        fresh
    })
}

/// How a poll's wall time divides (ns): on the CPU, runnable but waiting for one, and the
/// rest (blocked: asleep in the kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollCpu {
    pub on_cpu: u64,
    pub cpu_wait: u64,
}

/// How a poll that ran from `start` to `end` on this thread used it, measured from `mark`.
pub fn poll_cpu(mark: CpuMark, start: u64, end: u64) -> PollCpu {
    let wall = end.saturating_sub(start);
    let all_cpu = PollCpu {
        on_cpu: wall,
        cpu_wait: 0,
    };
    if wall < nanos(CPU_SPLIT_FROM) {
        return all_cpu;
    }
    let now = CpuMark::read(end);
    LAST_MARK.with(|last| last.set(now));
    let (Some(before), Some(after)) = (mark.cpu, now.cpu) else {
        return all_cpu;
    };
    let on_cpu = after.saturating_sub(before).min(wall);
    let off_cpu = wall - on_cpu;
    let cpu_wait = match (mark.sched, now.sched) {
        // Never switched out: whatever was not on the CPU, the machine took.
        (Some((_, switches_before)), Some((_, switches_after)))
            if switches_after == switches_before =>
        {
            off_cpu
        }
        (Some((delay_before, _)), Some((delay_after, _))) => {
            delay_after.saturating_sub(delay_before).min(off_cpu)
        }
        _ => 0,
    };
    PollCpu { on_cpu, cpu_wait }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_sleep_is_off_cpu_and_a_spin_is_on() {
        let start = now_ns();
        let m = mark(start);
        std::thread::sleep(Duration::from_millis(20));
        let end = now_ns();
        let slept = poll_cpu(m, start, end);
        assert!(
            slept.on_cpu < nanos(Duration::from_millis(5)),
            "sleep on CPU {slept:?}"
        );
        // The 20 ms asleep are neither on the CPU nor waiting for one (on a loaded machine the
        // thread may wait for a core after it wakes: that part is `cpu_wait`).
        let blocked = end - start - slept.on_cpu - slept.cpu_wait;
        assert!(
            blocked >= nanos(Duration::from_millis(18)),
            "sleep blocked only {blocked} ns: {slept:?}"
        );

        let start = now_ns();
        let m = mark(start);
        let spin_until = Instant::now() + Duration::from_millis(20);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let end = now_ns();
        let spun = poll_cpu(m, start, end);
        // Another process may take the core for part of the spin: then it waits for a CPU,
        // which is not blocking.
        assert!(
            spun.on_cpu + spun.cpu_wait > nanos(Duration::from_millis(15)),
            "spin on or waiting for a CPU: {spun:?}"
        );
    }

    #[test]
    fn short_polls_count_as_on_cpu_without_reading_the_clock() {
        let m = CpuMark::default();
        assert_eq!(
            poll_cpu(m, 1_000, 2_000),
            PollCpu {
                on_cpu: 1_000,
                cpu_wait: 0
            }
        );
    }
}

#[cfg(test)]
mod probe_accounting {
    use super::*;

    #[test]
    #[ignore = "a measurement, not a check"]
    fn slices_on_a_busy_machine() {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut blocked_total = 0u64;
                    let mut wall_total = 0u64;
                    let mut worst = (0u64, PollCpu::default());
                    let stop = Instant::now() + Duration::from_secs(3);
                    while Instant::now() < stop {
                        let start = now_ns();
                        let m = mark(start);
                        let until = Instant::now() + Duration::from_micros(500);
                        let mut x = 0u64;
                        while Instant::now() < until {
                            x = std::hint::black_box(x.wrapping_add(1));
                        }
                        let end = now_ns();
                        let used = poll_cpu(m, start, end);
                        let wall = end - start;
                        if wall >= nanos(CPU_SPLIT_FROM) {
                            let blocked = wall - used.on_cpu - used.cpu_wait;
                            blocked_total += blocked;
                            wall_total += wall;
                            if blocked > worst.0 {
                                worst = (blocked, used);
                            }
                        }
                    }
                    (blocked_total, wall_total, worst)
                })
            })
            .collect();
        for t in threads {
            let (b, w, worst) = t.join().unwrap();
            eprintln!(
                "long polls: wall {} us, blocked {} us, worst blocked {} us ({:?})",
                w / 1000,
                b / 1000,
                worst.0 / 1000,
                worst.1
            );
        }
    }
}
