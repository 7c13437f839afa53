//! The engine's Prometheus metrics: the split, the verdicts, long polls and blame, registered
//! into the service's own registry.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::{report::Report, verdict::Verdict};

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

/// Registered once per server; cloning shares the series.
#[derive(Debug, Clone)]
pub struct DiagnoseMetrics {
    split: Family<SplitLabels, Histogram, SplitHistogram>,
    verdicts: Family<VerdictLabels, Counter>,
    long_polls: Family<MethodLabels, Counter>,
    blame: Family<BlameLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
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
        }
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
        let s = &report.split;
        for (component, ns) in [
            ("busy", s.busy),
            ("on_cpu", s.on_cpu),
            ("scheduled", s.scheduled),
            ("idle", s.idle_total()),
            ("queue", s.queue()),
        ] {
            self.split
                .get_or_create(&SplitLabels {
                    grpc_service: method.0,
                    grpc_method: method.1,
                    component,
                })
                .observe(ns as f64 / 1e9);
        }
        self.verdicts
            .get_or_create(&VerdictLabels {
                grpc_service: method.0,
                grpc_method: method.1,
                verdict: report.verdict(),
            })
            .inc();
        for culprit in &report.culprits {
            let culprit_method = culprit
                .request()
                .map_or("task", |c| super::intern::labels(c.full_method()).1);
            self.blame
                .get_or_create(&BlameLabels {
                    victim_method: method.1,
                    culprit_method,
                })
                .inc_by(culprit.share as f64 / 1e9);
        }
    }
}
