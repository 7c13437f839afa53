//! Everything one stream of calls records while it runs: latencies, outcomes by status,
//! completions over time (so a stall shows as a dip in rate), the send lag of the open loop,
//! and the sums of the delay splits the replies carried.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    histogram::Latencies,
    report::{SlowestRequest, SplitMeans, SplitSummary, Stats, Timeline},
    rpc::{Outcome, code_name},
    schedule::{Clock, Schedule},
};
use crate::proto::Diagnostics;

/// Width of one bucket of the throughput time line: short enough to show a 100 ms stall,
/// long enough to hold several calls at modest rates.
pub const TIMELINE_BUCKET: Duration = Duration::from_millis(100);

/// A recorder shared by the tasks of one stream.
pub type Shared = Arc<Mutex<Recorder>>;

/// Locks a shared recorder. A task that panicked while holding the lock left at worst one
/// call half-recorded, so the data is still worth reporting.
pub fn lock(shared: &Shared) -> MutexGuard<'_, Recorder> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug)]
pub struct Recorder {
    clock: Clock,
    latencies: Latencies,
    ok: u64,
    errors: BTreeMap<&'static str, u64>,
    sent: u64,
    /// Open loop: calls due in the window that were never sent (the in-flight cap held them
    /// until the run ended).
    unsent: u64,
    /// Open loop: calls due in the window, sent or not.
    due: u64,
    /// Open loop: the longest a due call waited for an in-flight slot.
    max_send_lag: Duration,
    /// Completions per [`TIMELINE_BUCKET`] of the window.
    buckets: Vec<u64>,
    /// The latest completion seen, and the longest stretch without one.
    last_done: Instant,
    longest_gap: Duration,
    split: SplitSums,
    /// Calls completed so far, warm-up included: what the progress bar shows.
    progress: u64,
}

/// Running sums of the delay splits of OK replies, in microseconds.
#[derive(Debug, Default)]
struct SplitSums {
    replies: u64,
    /// The client-side latency of those same replies, to tell time outside the handler.
    client_us: u128,
    total_us: u128,
    busy_us: u128,
    scheduled_us: u128,
    idle_us: u128,
    queue_us: u128,
    verdicts: BTreeMap<String, u64>,
    /// Culprits' shares of the waits, by culprit method (`task` for other tasks).
    blame_us: BTreeMap<String, u128>,
    /// Replies whose verdict is `runtime-contention`, by their largest culprit's method.
    contention_by: BTreeMap<String, u64>,
    /// The slowest reply that carried its timeline.
    slowest: Option<Diagnostics>,
}

impl Recorder {
    pub fn new(clock: Clock) -> Self {
        let buckets = clock
            .window()
            .as_millis()
            .div_ceil(TIMELINE_BUCKET.as_millis());
        Self {
            clock,
            latencies: Latencies::new(),
            ok: 0,
            errors: BTreeMap::new(),
            sent: 0,
            unsent: 0,
            due: 0,
            max_send_lag: Duration::ZERO,
            buckets: vec![0; usize::try_from(buckets).unwrap_or(0)],
            last_done: clock.window_start,
            longest_gap: Duration::ZERO,
            split: SplitSums::default(),
            progress: 0,
        }
    }

    pub fn shared(clock: Clock) -> Shared {
        Arc::new(Mutex::new(Self::new(clock)))
    }

    /// A measured call was sent `lag` after it was due.
    pub fn sent(&mut self, lag: Duration) {
        self.sent += 1;
        self.max_send_lag = self.max_send_lag.max(lag);
    }

    /// Open loop, at the end: `due` calls were due in the window.
    pub fn set_due(&mut self, due: u64) {
        self.due = due;
        self.unsent = due.saturating_sub(self.sent);
    }

    /// Counts a completion for the progress bar, measured or not.
    pub fn tick_progress(&mut self) {
        self.progress += 1;
    }

    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// Records a measured call that was due (or started) at `from` and ended at `done`.
    pub fn record(&mut self, outcome: &Outcome, from: Instant, done: Instant) {
        let latency = done.saturating_duration_since(from);
        self.latencies.record(latency);
        match outcome {
            Outcome::Ok(diagnostics) => {
                self.ok += 1;
                if let Some(d) = diagnostics {
                    self.split.add(d, latency);
                }
            }
            Outcome::Failed(code) => *self.errors.entry(code_name(*code)).or_default() += 1,
        }
        if done >= self.clock.window_start && done < self.clock.end {
            let since = done - self.clock.window_start;
            let index = since.as_millis() / TIMELINE_BUCKET.as_millis();
            if let Some(bucket) = usize::try_from(index)
                .ok()
                .and_then(|i| self.buckets.get_mut(i))
            {
                *bucket += 1;
            }
        }
        if done > self.last_done {
            self.longest_gap = self.longest_gap.max(done - self.last_done);
            self.last_done = done;
        }
    }

    /// The stream's statistics, for a run whose measured window ended at the clock's end and
    /// whose stragglers were waited for.
    pub fn finish(&self, label: &str, rpc: String, schedule: &Schedule) -> Stats {
        let clock = self.clock;
        // Throughput counts every OK reply of the window over the time it took to get them
        // all, stragglers included: a server that answers late achieves less.
        let measured_until = self.last_done.max(clock.end);
        let window_s = (measured_until - clock.window_start).as_secs_f64();
        let completed = self.ok + self.errors.values().sum::<u64>();
        let gap_to_end = clock.end.saturating_duration_since(self.last_done);
        let mut stats = Stats {
            label: label.to_owned(),
            rpc,
            schedule: schedule.describe(),
            offered_rate: schedule.offered_rate(),
            window_s,
            due: self.due,
            sent: self.sent,
            unsent: self.unsent,
            max_send_lag_ms: self.max_send_lag.as_secs_f64() * 1_000.0,
            completed,
            ok: self.ok,
            errors: self
                .errors
                .iter()
                .map(|(code, n)| ((*code).to_owned(), *n))
                .collect(),
            throughput: if window_s > 0.0 {
                self.ok as f64 / window_s
            } else {
                0.0
            },
            latency: self.latencies.summary(),
            curve: self.latencies.curve(),
            timeline: self.timeline(self.longest_gap.max(gap_to_end)),
            split: self.split.summary(),
            warnings: Vec::new(),
        };
        stats.warnings = stats.compute_warnings();
        stats
    }

    fn timeline(&self, longest_gap: Duration) -> Timeline {
        let bucket_s = TIMELINE_BUCKET.as_secs_f64();
        let rates: Vec<f64> = self.buckets.iter().map(|&n| n as f64 / bucket_s).collect();
        // The last bucket may be cut short by the window's end; judge only whole buckets.
        let whole = self.clock.window().as_millis() / TIMELINE_BUCKET.as_millis();
        let whole = usize::try_from(whole)
            .unwrap_or(rates.len())
            .min(rates.len());
        let min_rate = rates
            .iter()
            .take(whole.max(1))
            .copied()
            .reduce(f64::min)
            .unwrap_or(0.0);
        Timeline {
            bucket_ms: TIMELINE_BUCKET.as_secs_f64() * 1_000.0,
            whole,
            rates,
            min_rate,
            longest_gap_ms: longest_gap.as_secs_f64() * 1_000.0,
        }
    }
}

impl SplitSums {
    fn add(&mut self, d: &Diagnostics, client: Duration) {
        self.replies += 1;
        self.client_us += client.as_micros();
        self.total_us += u128::from(d.total_us);
        self.busy_us += u128::from(d.busy_us);
        self.scheduled_us += u128::from(d.scheduled_us);
        self.idle_us += u128::from(d.idle_us);
        self.queue_us += u128::from(d.queue_us);
        if !d.verdict.is_empty() {
            *self.verdicts.entry(d.verdict.clone()).or_default() += 1;
        }
        let method = |c: &crate::proto::Culprit| {
            if c.rpc.is_empty() {
                "task".to_owned()
            } else {
                c.rpc.clone()
            }
        };
        for culprit in &d.culprits {
            *self.blame_us.entry(method(culprit)).or_default() += u128::from(culprit.share_us);
        }
        if d.verdict == crate::diagnose::Verdict::RuntimeContention.as_str()
            && let Some(top) = d.culprits.iter().max_by_key(|c| c.share_us)
        {
            *self.contention_by.entry(method(top)).or_default() += 1;
        }
        let slower = self
            .slowest
            .as_ref()
            .is_none_or(|s| d.total_us > s.total_us);
        if !d.timeline.is_empty() && slower {
            self.slowest = Some(d.clone());
        }
    }

    fn summary(&self) -> Option<SplitSummary> {
        if self.replies == 0 {
            return None;
        }
        let mean = |sum: u128| sum as f64 / self.replies as f64 / 1_000.0;
        let blame = self
            .blame_us
            .iter()
            .map(|(method, us)| (method.clone(), *us as f64 / self.scheduled_us.max(1) as f64))
            .collect();
        let mut summary = SplitSummary::new(
            self.replies,
            SplitMeans {
                total_ms: mean(self.total_us),
                busy_ms: mean(self.busy_us),
                scheduled_ms: mean(self.scheduled_us),
                // The reply's idle, queue included, as everywhere else.
                idle_ms: mean(self.idle_us),
                queue_ms: mean(self.queue_us),
                outside_ms: mean(self.client_us.saturating_sub(self.total_us)),
            },
            self.verdicts.clone(),
        );
        summary.blame = blame;
        summary.contention_by = self.contention_by.clone();
        summary.slowest = self.slowest.as_ref().map(SlowestRequest::from_reply);
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::SplitComponent;
    use tonic::Code;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn records_outcomes_rates_and_gaps() {
        let start = Instant::now();
        let clock = Clock::new(start, ms(0), ms(1_000));
        let mut recorder = Recorder::new(clock);
        let diagnostics = Diagnostics {
            total_us: 2_000,
            scheduled_us: 1_500,
            busy_us: 100,
            idle_us: 400,
            queue_us: 100,
            verdict: "runtime-contention".into(),
            ..Diagnostics::default()
        };
        // Ten replies in the first 100 ms, then nothing until 900 ms.
        for i in 0..10 {
            let at = start + ms(i * 10);
            recorder.sent(Duration::ZERO);
            recorder.record(&Outcome::Ok(Some(diagnostics.clone())), at, at + ms(3));
        }
        recorder.sent(Duration::ZERO);
        recorder.record(
            &Outcome::Failed(Code::DeadlineExceeded),
            start + ms(100),
            start + ms(900),
        );
        let stats = recorder.finish("main", "Fast".into(), &Schedule::Closed { concurrency: 1 });
        assert_eq!(stats.timeline.whole, 10);
        assert_eq!(stats.ok, 10);
        assert_eq!(stats.errors.get("DEADLINE_EXCEEDED"), Some(&1));
        assert_eq!(stats.completed, 11);
        assert_eq!(stats.timeline.rates.len(), 10);
        assert!((stats.timeline.rates[0] - 100.0).abs() < 1e-9, "{stats:?}");
        assert_eq!(stats.timeline.min_rate, 0.0);
        assert!(
            (stats.timeline.longest_gap_ms - 807.0).abs() < 1.0,
            "{stats:?}"
        );
        let split = stats.split.expect("replies carried diagnostics");
        assert_eq!(split.dominant, SplitComponent::Scheduled);
        assert_eq!(split.verdict, "runtime-contention");
        assert!((split.means.scheduled_ms - 1.5).abs() < 1e-9);
        assert!((split.means.outside_ms - 1.0).abs() < 1e-9);
        // Idle as the reply defines it: the queue is part of it.
        assert!((split.means.idle_ms - 0.4).abs() < 1e-9, "{split:?}");
        assert!((split.means.queue_ms - 0.1).abs() < 1e-9, "{split:?}");
        assert!((stats.throughput - 10.0).abs() < 1e-9);
    }
}
