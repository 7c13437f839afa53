//! The delay split, the verdicts and the long polls in Prometheus: `holdup_delay_seconds`,
//! `holdup_verdicts_total`, `holdup_long_polls_total`. The request runner (`lab/mod.rs`) and
//! the long-poll watchdog record into these families directly.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::metrics::{LatencyHistogram, latency_histogram};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SplitLabels {
    pub grpc_method: &'static str,
    /// busy, scheduled, idle or queue.
    pub component: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub grpc_method: &'static str,
    pub verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub grpc_method: &'static str,
}

/// Where each request's time went, and what its verdict and long polls were.
#[derive(Debug, Clone)]
pub struct DelayMetrics {
    pub(crate) split: Family<SplitLabels, Histogram, LatencyHistogram>,
    pub(crate) verdicts: Family<VerdictLabels, Counter>,
    pub(crate) long_polls: Family<MethodLabels, Counter>,
}

impl DelayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let split: Family<_, _, LatencyHistogram> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "holdup_delay",
            "Where each request's time went: busy (polled), scheduled (waiting for a worker), \
             idle (waiting on I/O, timers, pools), queue (part of idle spent queued for a bounded resource)",
            Unit::Seconds,
            split.clone(),
        );
        let verdicts = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "holdup_verdicts",
            "Requests by the dominant cause of their latency",
            verdicts.clone(),
        );
        let long_polls = Family::<MethodLabels, Counter>::default();
        registry.register(
            "holdup_long_polls",
            "Polls of a handler that held a runtime worker longer than the long-poll threshold",
            long_polls.clone(),
        );
        Self {
            split,
            verdicts,
            long_polls,
        }
    }
}
