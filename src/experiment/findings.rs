//! What one experiment found: the headline numbers (probe alone and under pressure, the
//! pressure's own latency and delay split), the full statistics behind them, and a one-line
//! conclusion computed from those numbers, never written in advance.

use serde::{Deserialize, Serialize};

use super::catalogue::{Experiment, Role};
use crate::{
    diagnose::Verdict,
    load::{
        report::{SplitComponent, Stats},
        table::ms,
    },
};

/// A probe p99 below this is treated as this when dividing: a factor against a few
/// microseconds would only measure noise.
pub const P99_FLOOR_MS: f64 = 0.1;
/// The probe's p99 must grow by at least this factor *and* [`STALL_MIN_MS`] for the
/// conclusion to say the pressure stalls everyone.
pub const STALL_FACTOR: f64 = 5.0;
pub const STALL_MIN_MS: f64 = 10.0;
/// Below this factor (or below [`SLOWS_MIN_MS`] of added p99) the probe is unaffected: on a
/// small shared machine a few milliseconds of p99 come and go with the scheduler's mood.
pub const SLOWS_FACTOR: f64 = 2.0;
pub const SLOWS_MIN_MS: f64 = 5.0;

/// One experiment's result.
/// The shortest wait for a worker the engine blames by default, in ms.
const BLAMED_FROM_MS: f64 = crate::diagnose::DEFAULT_BLAME_FROM.as_secs_f64() * 1e3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub group: String,
    pub role: Role,
    pub title: String,
    pub question: String,
    pub fixes: Option<String>,
    /// The pressure RPC and its schedule.
    pub pressure_rpc: String,
    pub pressure_schedule: String,

    pub probe_alone_p50_ms: f64,
    pub probe_alone_p99_ms: f64,
    pub probe_p50_ms: f64,
    pub probe_p99_ms: f64,
    /// Probe p99 under pressure over probe p99 alone.
    pub probe_p99_factor: f64,
    /// The probe's mean wait for a lab worker under pressure.
    pub probe_scheduled_ms: f64,
    /// The largest component of the probe's delay split under pressure (`None`: its replies
    /// carried no diagnostics).
    pub probe_dominant: Option<SplitComponent>,

    pub pressure_p50_ms: f64,
    pub pressure_p99_ms: f64,
    pub pressure_throughput: f64,
    pub pressure_errors: u64,
    /// The pressure calls' mean queue time (pool connection, compute slot).
    pub pressure_queue_ms: f64,
    pub pressure_dominant: Option<SplitComponent>,
    pub pressure_verdict: String,

    /// The diagnosis scored against the catalogue's answer key (see
    /// [`Expect`](super::catalogue::Expect)): the share of pressure calls whose measured
    /// verdict is the expected one. A call that mostly waited
    /// behind other pressure calls is right to say so, and counts as right: `runtime-contention`
    /// blamed on the pressure's own RPC where the pressure holds workers (or is `Fast`),
    /// `resource-queue` where it uses a bounded pool of its own (compute threads, connections).
    pub pressure_expected: String,
    pub pressure_verdict_share: f64,
    /// For the probe: the share of late probes (verdict other than `none`) whose verdict is
    /// the expected one, or, where it is `none`, the share of probes that were not late.
    pub probe_expected: String,
    pub probe_verdict_share: f64,
    /// The share of the probe's scheduled time blamed on the pressure's RPC (`None`: the probe
    /// never waited for a worker).
    pub blame_precision: Option<f64>,
    /// Of what the server measured of the probe under pressure, its wait for a worker was
    /// the largest part: where blame precision is scored. The time outside the server's
    /// measure (the reply, ready, waiting for its connection task to write it: on one runtime
    /// with its workers held, often the larger part of the client's wait) is left out, as
    /// nothing blames it. And only where that wait averaged [`BLAMED_FROM_MS`] or more: the
    /// engine blames no shorter wait.
    pub probe_scheduled_dominates: bool,

    pub conclusion: String,

    pub probe_alone: Stats,
    pub probe: Stats,
    pub pressure: Stats,
}

impl Finding {
    /// Assembles a finding from the three measured streams; the conclusion is filled in by
    /// [`conclude`] once the whole catalogue has run (a fix is compared with its cause).
    pub fn new(experiment: &Experiment, probe_alone: Stats, probe: Stats, pressure: Stats) -> Self {
        let alone_p99 = probe_alone.latency.p99_ms;
        let probe_p99 = probe.latency.p99_ms;
        let component = |stats: &Stats| stats.split.as_ref().map(|s| s.dominant);
        Self {
            id: experiment.id.to_owned(),
            group: experiment.group.to_owned(),
            role: experiment.role,
            title: experiment.title.to_owned(),
            question: experiment.question.to_owned(),
            fixes: experiment.fixes.map(str::to_owned),
            pressure_rpc: pressure.rpc.clone(),
            pressure_schedule: pressure.schedule.clone(),
            probe_alone_p50_ms: probe_alone.latency.p50_ms,
            probe_alone_p99_ms: alone_p99,
            probe_p50_ms: probe.latency.p50_ms,
            probe_p99_ms: probe_p99,
            probe_p99_factor: probe_p99 / alone_p99.max(P99_FLOOR_MS),
            probe_scheduled_ms: probe.split.as_ref().map_or(0.0, |s| s.means.scheduled_ms),
            probe_dominant: component(&probe),
            pressure_p50_ms: pressure.latency.p50_ms,
            pressure_p99_ms: pressure.latency.p99_ms,
            pressure_throughput: pressure.throughput,
            pressure_errors: pressure.errors.values().sum(),
            pressure_queue_ms: pressure.split.as_ref().map_or(0.0, |s| s.means.queue_ms),
            pressure_dominant: component(&pressure),
            pressure_verdict: pressure
                .split
                .as_ref()
                .map_or_else(|| "-".to_owned(), |s| s.verdict.clone()),
            pressure_expected: experiment.expect.pressure.to_string(),
            pressure_verdict_share: pressure_share(&pressure, experiment.expect.pressure),
            probe_expected: experiment.expect.probe.to_string(),
            probe_verdict_share: verdict_share(&probe, experiment.expect.probe, true),
            blame_precision: probe.split.as_ref().and_then(|s| {
                // The pressure's description starts with its method: `CpuBound INLINE …`.
                let method = pressure.rpc.split_whitespace().next().unwrap_or_default();
                (s.means.scheduled_ms > 0.0).then(|| s.blame.get(method).copied().unwrap_or(0.0))
            }),
            probe_scheduled_dominates: probe.split.as_ref().is_some_and(|s| {
                let m = &s.means;
                let waiting = (m.idle_ms - m.queue_ms).max(0.0);
                m.scheduled_ms >= BLAMED_FROM_MS
                    && m.scheduled_ms >= m.busy_ms.max(m.queue_ms).max(waiting)
            }),
            conclusion: String::new(),
            probe_alone,
            probe,
            pressure,
        }
    }

    /// How the pressure affected the probe, in three grades.
    pub fn effect(&self) -> Effect {
        let added = self.probe_p99_ms - self.probe_alone_p99_ms;
        if self.probe_p99_factor >= STALL_FACTOR && added >= STALL_MIN_MS {
            Effect::Stalls
        } else if self.probe_p99_factor >= SLOWS_FACTOR && added >= SLOWS_MIN_MS {
            Effect::Slows
        } else {
            Effect::Unaffected
        }
    }
}

/// The share of pressure replies diagnosed right: see [`Finding::pressure_verdict_share`].
fn pressure_share(stats: &Stats, expected: Verdict) -> f64 {
    let Some(split) = &stats.split else {
        return 0.0;
    };
    let all: u64 = split.verdicts.values().sum();
    if all == 0 {
        return 1.0;
    }
    let count = |word: &str| split.verdicts.get(word).copied().unwrap_or(0);
    let method = stats.rpc.split_whitespace().next().unwrap_or_default();
    let behind_itself = match expected {
        // Calls that hold workers (or do nothing) can only queue for a worker: right when the
        // largest culprit was a call of their own kind.
        Verdict::OwnCpu | Verdict::BlockingCall | Verdict::None => {
            split.contention_by.get(method).copied().unwrap_or(0)
        }
        // Calls that use a bounded pool of their own (compute threads, connections) queue for it.
        Verdict::OffloadedCpu | Verdict::Backend => count(Verdict::ResourceQueue.as_str()),
        _ => 0,
    };
    (count(expected.as_str()) + behind_itself) as f64 / all as f64
}

/// The share of `stats`' replies whose verdict is `expected`. For a probe (`late_only`), only
/// late replies count unless `expected` is `none`: a probe is expected to be late only now and
/// then, and then for the expected reason.
fn verdict_share(stats: &Stats, expected: Verdict, late_only: bool) -> f64 {
    let Some(split) = &stats.split else {
        return 0.0;
    };
    let count = |word: &str| split.verdicts.get(word).copied().unwrap_or(0);
    let all: u64 = split.verdicts.values().sum();
    let considered = if late_only && expected != Verdict::None {
        all - count(Verdict::None.as_str())
    } else {
        all
    };
    if considered == 0 {
        return 1.0;
    }
    count(expected.as_str()) as f64 / considered as f64
}

/// What the pressure did to the bystander.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Stalls,
    Slows,
    Unaffected,
}

/// Why the probe waited, in words, from its dominant delay component.
fn waiting_for(component: Option<SplitComponent>) -> &'static str {
    match component {
        Some(SplitComponent::Scheduled) => {
            "waiting for a lab worker another request held (scheduled time)"
        }
        Some(SplitComponent::Outside) => {
            "outside its handler (transport, network, CPU shared with the load)"
        }
        Some(SplitComponent::Busy) => "in its own handler's polls",
        Some(SplitComponent::Queue) => "queued for a bounded resource",
        Some(SplitComponent::Waiting) => "parked on I/O or timers",
        None => "for no measured reason",
    }
}

/// The one-line conclusion of `finding`, compared with `cause` when it is a fix.
pub fn conclude(finding: &Finding, cause: Option<&Finding>) -> String {
    let (a, b) = (finding.probe_alone_p99_ms, finding.probe_p99_ms);
    let mut line = match finding.effect() {
        Effect::Stalls => format!(
            "Fast p99 x{:.0} ({} -> {} ms), {}",
            finding.probe_p99_factor,
            ms(a),
            ms(b),
            waiting_for(finding.probe_dominant)
        ),
        Effect::Slows => format!(
            "Fast p99 x{:.1} ({} -> {} ms), mostly {}",
            finding.probe_p99_factor,
            ms(a),
            ms(b),
            waiting_for(finding.probe_dominant)
        ),
        Effect::Unaffected => format!("Fast unaffected (p99 {} -> {} ms)", ms(a), ms(b)),
    };
    // Own calls are said to queue when queueing is their dominant component.
    if finding.pressure_dominant == Some(SplitComponent::Queue) {
        line.push_str(&format!(
            "; own calls queue {} ms on average (p50 {} ms) for a pool slot",
            ms(finding.pressure_queue_ms),
            ms(finding.pressure_p50_ms)
        ));
    }
    let completed = finding.pressure.completed.max(1);
    if finding.pressure_errors * 100 >= completed {
        let codes: Vec<String> = finding.pressure.errors.keys().cloned().collect();
        line.push_str(&format!(
            "; {:.0}% of own calls failed ({})",
            finding.pressure_errors as f64 * 100.0 / completed as f64,
            codes.join(", ")
        ));
    }
    if let Some(cause) = cause {
        line.push_str(&format!(
            "; vs {}: Fast p99 {} -> {} ms, own p50 {} -> {} ms, own p99 {} -> {} ms",
            cause.id,
            ms(cause.probe_p99_ms),
            ms(b),
            ms(cause.pressure_p50_ms),
            ms(finding.pressure_p50_ms),
            ms(cause.pressure_p99_ms),
            ms(finding.pressure_p99_ms)
        ));
    }
    line
}

/// Fills in every finding's conclusion, comparing each fix with its cause.
pub fn conclude_all(findings: &mut [Finding]) {
    let lines: Vec<String> = findings
        .iter()
        .map(|f| {
            let cause = f
                .fixes
                .as_deref()
                .and_then(|id| findings.iter().find(|c| c.id == id));
            conclude(f, cause)
        })
        .collect();
    for (finding, line) in findings.iter_mut().zip(lines) {
        finding.conclusion = line;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::load::{
        histogram::Percentiles,
        report::{SplitMeans, SplitSummary, Timeline},
    };

    fn stats(p50: f64, p99: f64, dominant: SplitComponent) -> Stats {
        let mut means = SplitMeans {
            total_ms: p50,
            ..SplitMeans::default()
        };
        match dominant {
            SplitComponent::Busy => means.busy_ms = p50,
            SplitComponent::Scheduled => means.scheduled_ms = p50,
            SplitComponent::Queue => (means.idle_ms, means.queue_ms) = (p50, p50),
            SplitComponent::Waiting => means.idle_ms = p50,
            SplitComponent::Outside => means.outside_ms = p50,
        }
        Stats {
            label: "x".into(),
            rpc: "Fast".into(),
            schedule: "open".into(),
            offered_rate: Some(100.0),
            window_s: 1.0,
            due: 100,
            sent: 100,
            unsent: 0,
            max_send_lag_ms: 0.0,
            completed: 100,
            ok: 100,
            errors: BTreeMap::new(),
            throughput: 100.0,
            latency: Percentiles {
                p50_ms: p50,
                p99_ms: p99,
                ..Percentiles::default()
            },
            curve: Vec::new(),
            timeline: Timeline {
                bucket_ms: 100.0,
                rates: Vec::new(),
                whole: 0,
                min_rate: 0.0,
                longest_gap_ms: 0.0,
            },
            split: Some(SplitSummary::new(100, means, BTreeMap::new())),
            warnings: Vec::new(),
        }
    }

    fn experiment(id: &'static str, fixes: Option<&'static str>) -> Experiment {
        Experiment {
            id,
            group: "cpu",
            role: if fixes.is_some() {
                Role::Fix
            } else {
                Role::Cause
            },
            title: "t",
            question: "q",
            fixes,
            server: None,
            pressure: |s| super::super::catalogue::probe(s),
            expect: super::super::catalogue::Expect {
                pressure: Verdict::OwnCpu,
                probe: Verdict::RuntimeContention,
            },
        }
    }

    #[test]
    fn a_blocked_runtime_is_called_a_stall_and_its_fix_is_compared() {
        let inline = Finding::new(
            &experiment("cpu-inline", None),
            stats(0.3, 0.5, SplitComponent::Outside),
            stats(20.0, 50.0, SplitComponent::Scheduled),
            stats(50.0, 100.0, SplitComponent::Busy),
        );
        assert_eq!(inline.effect(), Effect::Stalls);
        let line = conclude(&inline, None);
        assert!(
            line.starts_with("Fast p99 x100 (0.50 -> 50.0 ms), waiting for a lab worker"),
            "{line}"
        );

        let pool = Finding::new(
            &experiment("cpu-compute-pool", Some("cpu-inline")),
            stats(0.3, 0.5, SplitComponent::Outside),
            stats(0.4, 0.6, SplitComponent::Outside),
            stats(50.0, 60.0, SplitComponent::Waiting),
        );
        assert_eq!(pool.effect(), Effect::Unaffected);
        let mut both = vec![inline, pool];
        conclude_all(&mut both);
        assert!(
            both[1]
                .conclusion
                .contains("vs cpu-inline: Fast p99 50.0 -> 0.60 ms"),
            "{}",
            both[1].conclusion
        );
    }

    #[test]
    fn queueing_pressure_says_so() {
        let pool = Finding::new(
            &experiment("pool-size-1", None),
            stats(0.3, 0.5, SplitComponent::Outside),
            stats(0.3, 0.6, SplitComponent::Outside),
            stats(150.0, 200.0, SplitComponent::Queue),
        );
        assert!(conclude(&pool, None).contains("own calls queue 150 ms"));
    }
}
