//! What a load run found, as data: the statistics of each stream (the main load and the
//! `Fast` probe beside it), serialisable to JSON, and the warnings computed from them that make
//! a stall or a drop in rate impossible to miss.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::histogram::Percentiles;

/// Achieved below this share of the offered rate, an open loop says the server fell behind.
pub const FELL_BEHIND_SHARE: f64 = 0.9;
/// A 100 ms bucket below this share of the mean rate counts as a drop in rate.
pub const RATE_DROP_SHARE: f64 = 0.25;
/// A drop in rate is only judged with at least this many whole buckets...
const RATE_DROP_MIN_BUCKETS: usize = 3;
/// ...and at least this many replies per bucket on average, so that an empty bucket is not
/// just the natural gap between two calls of a slow RPC.
const RATE_DROP_MIN_PER_BUCKET: f64 = 4.0;

/// The whole report of `holdup load`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// The server loaded: its URL, and whether holdup started it in-process.
    pub target: String,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub connections: usize,
    pub main: Stats,
    /// The `Fast` probe's view, when `--probe-rate` was given.
    pub probe: Option<Stats>,
}

/// One stream of calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// `main` or `probe`.
    pub label: String,
    /// The RPC and its parameters, e.g. `CpuBound INLINE work_ms=50`.
    pub rpc: String,
    pub schedule: String,
    /// Open loop: the arrival rate asked for.
    pub offered_rate: Option<f64>,
    /// Seconds from the end of warm-up until the last measured reply (at least the duration).
    pub window_s: f64,
    /// Open loop: calls due during the window.
    pub due: u64,
    /// Calls sent during the window.
    pub sent: u64,
    /// Open loop: calls due but never sent because the in-flight cap was reached until the end.
    pub unsent: u64,
    /// Open loop: the longest a due call waited for an in-flight slot (it counts in latency).
    pub max_send_lag_ms: f64,
    /// Calls that ended, OK or not.
    pub completed: u64,
    pub ok: u64,
    /// Failed calls by gRPC status (`DEADLINE_EXCEEDED`, …).
    pub errors: BTreeMap<String, u64>,
    /// OK replies per second over `window_s`.
    pub throughput: f64,
    /// Latency of every completed call, from its intended send time (open loop) or its actual
    /// send time (closed loop).
    pub latency: Percentiles,
    /// `[percentile, ms]` points for plotting.
    pub curve: Vec<[f64; 2]>,
    pub timeline: Timeline,
    /// Mean delay split of the OK replies; `None` when no reply carried one.
    pub split: Option<SplitSummary>,
    /// Plain-language alarms: fell behind, rate drop, unsent calls, errors.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Replies per second over time, in fixed buckets of the measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_ms: f64,
    pub rates: Vec<f64>,
    /// Buckets at the start of `rates` that span a full `bucket_ms` (the last may be cut
    /// short by the end of the window).
    pub whole: usize,
    /// The slowest whole bucket.
    pub min_rate: f64,
    /// The longest stretch of the window without any reply.
    pub longest_gap_ms: f64,
}

/// The mean of each part of the replies' delay split, in milliseconds. The names and meanings
/// are the reply's `Diagnostics`: `idle` includes `queue`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitMeans {
    /// Handler wall time.
    pub total_ms: f64,
    /// Polled on a lab worker.
    pub busy_ms: f64,
    /// Ready, waiting for a lab worker.
    pub scheduled_ms: f64,
    /// Parked: on I/O, timers, offloaded work, or queued for a bounded resource.
    pub idle_ms: f64,
    /// The part of `idle_ms` spent queued for a bounded resource (pool connection, compute
    /// slot).
    pub queue_ms: f64,
    /// Client latency minus handler time: transport, network, the client itself.
    pub outside_ms: f64,
}

/// One of the disjoint parts a reply's latency splits into, which together make the whole
/// client latency: `idle` is `queue` + `waiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitComponent {
    Busy,
    Scheduled,
    /// Idle, queued for a bounded resource.
    Queue,
    /// Idle, but not in a queue: awaiting I/O, a timer, offloaded work.
    Waiting,
    Outside,
}

impl SplitComponent {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Scheduled => "scheduled",
            Self::Queue => "queue",
            Self::Waiting => "waiting",
            Self::Outside => "outside",
        }
    }
}

impl std::fmt::Display for SplitComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the replies' own time went, on average, and the verdicts they gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitSummary {
    pub replies: u64,
    #[serde(flatten)]
    pub means: SplitMeans,
    /// The largest of the disjoint components (see [`SplitComponent`]).
    pub dominant: SplitComponent,
    /// How many replies gave each verdict.
    pub verdicts: BTreeMap<String, u64>,
    /// The most frequent verdict.
    pub verdict: String,
    /// Of all the replies' scheduled time, the share blamed on each culprit method (`task` for
    /// a task that is not a request): how precisely the waits were explained.
    #[serde(default)]
    pub blame: BTreeMap<String, f64>,
    /// Replies that said `runtime-contention`, by the method of their largest culprit.
    #[serde(default)]
    pub contention_by: BTreeMap<String, u64>,
    /// The slowest reply that carried its timeline (streams that asked for timelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slowest: Option<SlowestRequest>,
}

/// One request's timeline, as the report draws it: microseconds from its start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlowestRequest {
    pub trace_id: String,
    pub total_us: u64,
    pub verdict: String,
    /// Its polls (`poll`), waits for a worker (`scheduled`) and parked stretches (`idle`).
    pub stretches: Vec<Stretch>,
    /// Who held the workers while it waited, with their polls during the waits.
    pub culprits: Vec<CulpritPolls>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stretch {
    pub kind: String,
    pub from_us: i64,
    pub to_us: i64,
    #[serde(default)]
    pub on_cpu_us: u64,
    /// For an idle stretch: the stage span it was parked in.
    #[serde(default)]
    pub stage: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CulpritPolls {
    /// `<method> <short trace id>`, or the task's description.
    pub name: String,
    pub share_us: u64,
    pub polls: Vec<(i64, i64)>,
}

impl SlowestRequest {
    pub fn from_reply(d: &crate::proto::Diagnostics) -> Self {
        use crate::proto::timeline_event::Kind;
        Self {
            trace_id: d.trace_id.clone(),
            total_us: d.total_us,
            verdict: d.verdict.clone(),
            stretches: d
                .timeline
                .iter()
                .map(|e| Stretch {
                    kind: match e.kind() {
                        Kind::Poll => "poll",
                        Kind::Scheduled => "scheduled",
                        Kind::Idle => "idle",
                        Kind::Unspecified => "?",
                    }
                    .to_owned(),
                    from_us: e.from_us,
                    to_us: e.to_us,
                    on_cpu_us: e.on_cpu_us,
                    stage: e.stage.clone(),
                })
                .collect(),
            culprits: d
                .culprits
                .iter()
                .map(|c| CulpritPolls {
                    name: if c.rpc.is_empty() {
                        c.task.clone()
                    } else {
                        format!("{} {}", c.rpc, c.trace_id.get(..8).unwrap_or(""))
                    },
                    share_us: c.share_us,
                    polls: c.polls.iter().map(|p| (p.from_us, p.to_us)).collect(),
                })
                .collect(),
        }
    }
}

impl SplitSummary {
    pub fn new(replies: u64, means: SplitMeans, verdicts: BTreeMap<String, u64>) -> Self {
        let waiting = (means.idle_ms - means.queue_ms).max(0.0);
        let dominant = [
            (SplitComponent::Busy, means.busy_ms),
            (SplitComponent::Scheduled, means.scheduled_ms),
            (SplitComponent::Queue, means.queue_ms),
            (SplitComponent::Waiting, waiting),
            (SplitComponent::Outside, means.outside_ms),
        ]
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(SplitComponent::Outside, |(component, _)| component);
        let verdict = verdicts
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or_else(|| "none".to_owned(), |(v, _)| v.clone());
        Self {
            replies,
            means,
            dominant,
            verdicts,
            verdict,
            blame: BTreeMap::new(),
            contention_by: BTreeMap::new(),
            slowest: None,
        }
    }
}

impl Stats {
    /// Achieved over offered rate, for an open loop.
    pub fn achieved_share(&self) -> Option<f64> {
        self.offered_rate
            .filter(|r| *r > 0.0)
            .map(|r| self.throughput / r)
    }

    /// The mean of the whole buckets of the time line.
    pub fn mean_bucket_rate(&self) -> f64 {
        let whole = self.whole_buckets();
        if whole.is_empty() {
            return 0.0;
        }
        whole.iter().sum::<f64>() / whole.len() as f64
    }

    fn whole_buckets(&self) -> &[f64] {
        let rates = &self.timeline.rates;
        &rates[..self.timeline.whole.min(rates.len())]
    }

    /// Whether the replies stopped or nearly stopped for at least one bucket.
    pub fn rate_dropped(&self) -> bool {
        let whole = self.whole_buckets();
        let mean = self.mean_bucket_rate();
        let per_bucket = mean * self.timeline.bucket_ms / 1_000.0;
        whole.len() >= RATE_DROP_MIN_BUCKETS
            && per_bucket >= RATE_DROP_MIN_PER_BUCKET
            && self.timeline.min_rate < mean * RATE_DROP_SHARE
    }

    /// Computes [`Stats::warnings`].
    pub fn compute_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let (Some(share), Some(offered)) = (self.achieved_share(), self.offered_rate)
            && share < FELL_BEHIND_SHARE
        {
            warnings.push(format!(
                "achieved {:.1}/s of {offered}/s offered ({:.0}%): the server (or this generator) could not keep up",
                self.throughput,
                share * 100.0
            ));
        }
        if self.unsent > 0 {
            warnings.push(format!(
                "{} of {} calls due were never sent: the in-flight cap was full until the end",
                self.unsent, self.due
            ));
        }
        if self.max_send_lag_ms >= 10.0 {
            warnings.push(format!(
                "calls went out up to {:.0} ms after they were due (in-flight cap full, or the generator itself starved of CPU); their latency counts from when they were due",
                self.max_send_lag_ms
            ));
        }
        if self.rate_dropped() {
            warnings.push(format!(
                "replies fell to {:.0}/s in the slowest {:.0} ms (mean {:.0}/s); longest gap without a reply {:.0} ms",
                self.timeline.min_rate,
                self.timeline.bucket_ms,
                self.mean_bucket_rate(),
                self.timeline.longest_gap_ms
            ));
        }
        let failed: u64 = self.errors.values().sum();
        if failed > 0 {
            let by_code: Vec<String> = self
                .errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            warnings.push(format!(
                "{failed} of {} calls failed ({})",
                self.completed,
                by_code.join(", ")
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rates: Vec<f64>, offered: Option<f64>, throughput: f64) -> Stats {
        let min_rate = rates.iter().copied().reduce(f64::min).unwrap_or(0.0);
        Stats {
            label: "main".into(),
            rpc: "Fast".into(),
            schedule: String::new(),
            offered_rate: offered,
            window_s: rates.len() as f64 / 10.0,
            due: 0,
            sent: 0,
            unsent: 0,
            max_send_lag_ms: 0.0,
            completed: 0,
            ok: 0,
            errors: BTreeMap::new(),
            throughput,
            latency: Percentiles::default(),
            curve: Vec::new(),
            timeline: Timeline {
                bucket_ms: 100.0,
                whole: rates.len(),
                rates,
                min_rate,
                longest_gap_ms: 0.0,
            },
            split: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_stall_in_a_closed_loop_shows_as_a_rate_drop() {
        let steady = stats(vec![1_000.0; 10], None, 1_000.0);
        assert!(!steady.rate_dropped());
        let mut rates = vec![1_000.0; 10];
        rates[4] = 0.0;
        rates[5] = 0.0;
        let stalled = stats(rates, None, 800.0);
        assert!(stalled.rate_dropped());
        assert!(
            stalled.compute_warnings()[0].contains("fell to 0/s"),
            "{:?}",
            stalled.compute_warnings()
        );
    }

    #[test]
    fn a_slow_rpc_is_not_a_rate_drop() {
        // Two replies a second: most buckets are empty by nature.
        let slow = stats(vec![10.0, 0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0], None, 2.0);
        assert!(!slow.rate_dropped());
    }

    #[test]
    fn an_open_loop_that_falls_behind_says_so() {
        let behind = stats(vec![50.0; 10], Some(100.0), 50.0);
        let warnings = behind.compute_warnings();
        assert!(warnings[0].contains("50%"), "{warnings:?}");
        let fine = stats(vec![100.0; 10], Some(100.0), 99.0);
        assert!(fine.compute_warnings().is_empty());
    }

    #[test]
    fn the_dominant_component_and_verdict_are_the_largest() {
        let verdicts = BTreeMap::from([("none".to_owned(), 3), ("resource-queue".to_owned(), 7)]);
        let means = SplitMeans {
            total_ms: 200.3,
            busy_ms: 0.1,
            scheduled_ms: 0.2,
            idle_ms: 200.0,
            queue_ms: 150.0,
            outside_ms: 0.5,
        };
        let split = SplitSummary::new(10, means, verdicts);
        assert_eq!(split.dominant, SplitComponent::Queue);
        assert_eq!(split.verdict, "resource-queue");
        // Idle includes queue: the same idle with less of it queued is mostly waiting.
        let waiting = SplitSummary::new(
            10,
            SplitMeans {
                queue_ms: 50.0,
                ..means
            },
            BTreeMap::new(),
        );
        assert_eq!(waiting.dominant, SplitComponent::Waiting);
    }
}
