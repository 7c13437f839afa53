//! What the listeners count: connections open, refused at the cap, closed by a limit, requests
//! ended because their message stopped arriving, and accept back-offs at descriptor
//! exhaustion. One set per registry, labelled by listener (`grpc`, `metrics`, `simulator`).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub listener: &'static str,
    /// `handshake`, `idle`, `reply_send` or `shutdown`: the limit that closed it.
    pub reason: &'static str,
}

/// The transport metrics of one registry; cheap to clone (the families are shared).
#[derive(Debug, Clone, Default)]
pub struct TransportMetrics {
    open: Family<ListenerLabels, Gauge>,
    refused: Family<ListenerLabels, Counter>,
    closed: Family<CloseLabels, Counter>,
    backoffs: Family<ListenerLabels, Counter>,
    request_body_timeouts: Family<ListenerLabels, Counter>,
    requests_refused: Family<ListenerLabels, Counter>,
}

impl TransportMetrics {
    /// Creates the metrics and registers them under `holdup_transport_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("holdup_transport");
        sub.register(
            "connections",
            "Connections open, by listener",
            metrics.open.clone(),
        );
        sub.register(
            "connections_refused",
            "Connections closed on accept because the listener was at --max-connections",
            metrics.refused.clone(),
        );
        sub.register(
            "connections_closed",
            "Connections closed by a limit (handshake, idle, reply_send) or at the end of the shutdown grace",
            metrics.closed.clone(),
        );
        sub.register(
            "accept_backoffs",
            "Pauses of the accept loop because the process ran out of descriptors or memory",
            metrics.backoffs.clone(),
        );
        sub.register(
            "request_body_timeouts",
            "Requests ended (DEADLINE_EXCEEDED) because their message stopped arriving for --request-body-timeout-ms",
            metrics.request_body_timeouts.clone(),
        );
        sub.register(
            "requests_refused",
            "Requests refused at once because the listener had --max-open-requests open",
            metrics.requests_refused.clone(),
        );
        metrics
    }

    pub(crate) fn request_refused(&self, listener: &'static str) {
        self.requests_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    pub(crate) fn request_body_timed_out(&self, listener: &'static str) {
        self.request_body_timeouts
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    pub(crate) fn opened(&self, listener: &'static str) {
        self.open.get_or_create(&ListenerLabels { listener }).inc();
    }

    pub(crate) fn dropped(&self, listener: &'static str) {
        self.open.get_or_create(&ListenerLabels { listener }).dec();
    }

    pub(crate) fn refused(&self, listener: &'static str) {
        self.refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    pub(crate) fn closed(&self, listener: &'static str, reason: &'static str) {
        self.closed
            .get_or_create(&CloseLabels { listener, reason })
            .inc();
    }

    pub(crate) fn backed_off(&self, listener: &'static str) {
        self.backoffs
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }
}
