//! The engine's Prometheus metrics: the split, the verdicts, long polls and blame, registered
//! into the service's own registry.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, PoisonError, RwLock},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::{
    report::{Report, Split},
    verdict::Verdict,
};

/// Seconds buckets for the split: 100 µs to 30 s, dense where the lessons live (1–500 ms).
pub const SPLIT_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SplitLabels {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    /// `busy`, `on_cpu` (part of busy), `scheduled`, `idle`, `queue` (part of idle).
    pub component: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlameLabels {
    pub victim_method: &'static str,
    /// The culprit request's method, or `task` for a task that is not a request.
    pub culprit_method: &'static str,
}

type SplitHistogram = fn() -> Histogram;

fn split_histogram() -> Histogram {
    Histogram::new(SPLIT_BUCKETS)
}

/// The split's components, in [`MethodSeries::split`] order: the `component` label.
const COMPONENTS: [&str; 5] = ["busy", "on_cpu", "scheduled", "idle", "queue"];

/// A request's value of each of [`COMPONENTS`], in the same order.
fn component_values(s: &Split) -> [u64; COMPONENTS.len()] {
    [s.busy, s.on_cpu, s.scheduled, s.idle_total(), s.queue()]
}

/// One method's series, resolved on its first request and kept. `Family::get_or_create`
/// hashes every label and takes the family's lock: six times on every request before, now
/// once per method. A resolved handle shares its series, so the exposition is unchanged.
#[derive(Debug)]
struct MethodSeries {
    split: [Histogram; COMPONENTS.len()],
    /// Created on a verdict's first request, as before: no zero series for verdicts never seen.
    verdicts: [OnceLock<Counter>; Verdict::ALL.len()],
}

/// Method labels (interned, so the same `&'static str`s for the same method) by address.
type SeriesKey = (usize, usize);

/// Registered once per server; cloning shares the series.
#[derive(Debug, Clone)]
pub struct DiagnoseMetrics {
    split: Family<SplitLabels, Histogram, SplitHistogram>,
    verdicts: Family<VerdictLabels, Counter>,
    long_polls: Family<MethodLabels, Counter>,
    blame: Family<BlameLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Bounded as the method labels are (`intern::MAX_METHODS`).
    resolved: Arc<RwLock<HashMap<SeriesKey, Arc<MethodSeries>>>>,
}

impl DiagnoseMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let split = Family::<_, _, SplitHistogram>::new_with_constructor(split_histogram);
        registry.register_with_unit(
            "holdup_delay",
            "Where each request's time went: busy (polled), on_cpu (the part of busy on the CPU), \
             scheduled (ready, waiting for a worker), idle (parked: I/O, timers, pools; queue \
             included), queue (the part of idle parked in a queue stage)",
            Unit::Seconds,
            split.clone(),
        );
        let verdicts = Family::default();
        registry.register(
            "holdup_verdicts",
            "Requests by the dominant, measured cause of their latency",
            verdicts.clone(),
        );
        let long_polls = Family::default();
        registry.register(
            "holdup_long_polls",
            "Polls of a request that held a runtime worker longer than the long-poll threshold",
            long_polls.clone(),
        );
        let blame = Family::default();
        registry.register_with_unit(
            "holdup_blame",
            "Time requests of victim_method waited for a worker while requests of culprit_method \
             held one (each instant shared among the polls running then)",
            Unit::Seconds,
            blame.clone(),
        );
        Self {
            split,
            verdicts,
            long_polls,
            blame,
            resolved: Arc::default(),
        }
    }

    fn series(&self, method: (&'static str, &'static str)) -> Arc<MethodSeries> {
        let key = (method.0.as_ptr() as usize, method.1.as_ptr() as usize);
        let resolved = self.resolved.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = resolved.get(&key) {
            return Arc::clone(series);
        }
        drop(resolved);
        let split = COMPONENTS.map(|component| {
            self.split
                .get_or_create(&SplitLabels {
                    grpc_service: method.0,
                    grpc_method: method.1,
                    component,
                })
                .clone()
        });
        let fresh = Arc::new(MethodSeries {
            split,
            verdicts: Default::default(),
        });
        let mut resolved = self
            .resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(resolved.entry(key).or_insert(fresh))
    }

    pub fn long_poll(&self, method: (&'static str, &'static str)) {
        self.long_polls
            .get_or_create(&MethodLabels {
                grpc_service: method.0,
                grpc_method: method.1,
            })
            .inc();
    }

    /// Records a finished request of `method`.
    pub fn observe(&self, method: (&'static str, &'static str), report: &Report) {
        let series = self.series(method);
        for (histogram, ns) in series.split.iter().zip(component_values(&report.split)) {
            histogram.observe(ns as f64 / 1e9);
        }
        let verdict = report.verdict();
        let slot = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(0);
        series.verdicts[slot]
            .get_or_init(|| {
                self.verdicts
                    .get_or_create(&VerdictLabels {
                        grpc_service: method.0,
                        grpc_method: method.1,
                        verdict,
                    })
                    .clone()
            })
            .inc();
        for culprit in &report.culprits {
            let culprit_method = culprit.request().map_or("task", |c| {
                super::intern::unverified_labels(c.full_method()).1
            });
            self.blame
                .get_or_create(&BlameLabels {
                    victim_method: method.1,
                    culprit_method,
                })
                .inc_by(culprit.share as f64 / 1e9);
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::identity::Identity;

    fn report(total_ms: u64, scheduled_ms: u64) -> Report {
        Report {
            identity: Identity::untraced("/test.metrics.Svc/Method"),
            started: 1,
            split: Split {
                total: total_ms * 1_000_000,
                scheduled: scheduled_ms * 1_000_000,
                ..Split::default()
            },
            waits: Vec::new(),
            culprits: Vec::new(),
            events: Vec::new(),
            events_dropped: 0,
            arrival: None,
        }
    }

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn resolved_series_are_the_registered_ones() {
        let mut registry = Registry::default();
        let metrics = DiagnoseMetrics::register(&mut registry);
        let method = ("test.metrics.Svc", "Method");
        metrics.observe(method, &report(0, 0));
        metrics.observe(method, &report(10, 9));
        // A clone (as each server layer holds) records into the same series.
        metrics.clone().observe(method, &report(20, 19));
        let text = exposition(&registry);
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no {start} in\n{text}"))
                .to_owned()
        };
        let labels = r#"grpc_service="test.metrics.Svc",grpc_method="Method""#;
        for component in COMPONENTS {
            assert_eq!(
                line(&format!(
                    "holdup_delay_seconds_count{{{labels},component=\"{component}\"}}"
                ))
                .rsplit(' ')
                .next(),
                Some("3")
            );
        }
        let scheduled: f64 = line(&format!(
            "holdup_delay_seconds_sum{{{labels},component=\"scheduled\"}}"
        ))
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
        assert!((scheduled - 0.028).abs() < 1e-9, "{scheduled}");
        assert!(
            line(&format!(
                "holdup_verdicts_total{{{labels},verdict=\"none\"}}"
            ))
            .ends_with(" 1")
        );
        assert!(
            line(&format!(
                "holdup_verdicts_total{{{labels},verdict=\"runtime-contention\"}}"
            ))
            .ends_with(" 2")
        );
        assert!(
            !text.contains("verdict=\"backend\""),
            "a verdict never seen has no series:\n{text}"
        );
    }
}
