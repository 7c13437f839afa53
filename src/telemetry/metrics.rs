//! The Prometheus registry, created once per server and passed down, its two encodings, and
//! what the metrics of every domain share: latency buckets, the trace-id exemplar, the gRPC
//! code names.
//!
//! Each domain has a metrics struct of its own that registers itself into the registry and
//! records through methods: the Lab's RPCs (`lab::support::metrics`), the database pool
//! (`lab::backend`), the compute pool (`lab::support::compute_pool`), the upstream client
//! (`lab::upstream`), the lab runtime (`telemetry::runtime_metrics`), the transport
//! (`transport::metrics`) and the diagnosis engine (`diagnose::DiagnoseMetrics`).
//!
//! RPC metrics use the de-facto gRPC names (`grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`) so that existing gRPC
//! dashboards and alerts fit; everything holdup adds is prefixed `holdup_`. Gauges that mirror
//! live state (pool, runtime) are refreshed at scrape time from their sources.

use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text, text},
    metrics::{exemplar::HistogramWithExemplars, histogram::Histogram},
    registry::Registry,
};

/// Latency buckets in seconds: 100 µs to 30 s, dense enough around 1–500 ms where the
/// lessons live.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The constructor of a latency histogram, as a `Family` of them stores it.
pub type LatencyHistogram = fn() -> Histogram;

/// A histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A histogram with [`LATENCY_BUCKETS`] whose observations may carry a trace id.
pub fn latency_histogram_with_exemplars() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

/// The exemplar attached to a latency observation: the trace that explains it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

/// The gRPC code's name as the `grpc_code` label of the de-facto gRPC metrics spells it
/// (go-grpc-prometheus: `OK`, `Canceled`, `InvalidArgument`, …).
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Registers fields of a metrics struct, each under its own field name, with its help text
/// and, in brackets, its unit:
///
/// ```ignore
/// register_fields!(registry, metrics, {
///     threads: "Threads of the compute pool",
///     queue_wait [Seconds]: "Time jobs waited for a thread",
/// });
/// ```
///
/// The field name is the metric name (under the registry's prefix, if any), so a reader finds
/// the series from the field and the field from the series.
macro_rules! register_fields {
    ($registry:expr, $metrics:expr, { $($field:ident $([$unit:ident])? : $help:expr),+ $(,)? }) => {
        $( $crate::telemetry::metrics::register_fields!(
            @one $registry, stringify!($field), $help, $metrics.$field.clone() $(, $unit)?
        ); )+
    };
    (@one $registry:expr, $name:expr, $help:expr, $metric:expr) => {
        $registry.register($name, $help, $metric)
    };
    (@one $registry:expr, $name:expr, $help:expr, $metric:expr, $unit:ident) => {
        $registry.register_with_unit(
            $name,
            $help,
            prometheus_client::registry::Unit::$unit,
            $metric,
        )
    };
}
pub(crate) use register_fields;

/// The registry of one server: every domain registers into it before it is shared, and the
/// `/metrics` endpoint encodes it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the process-wide metrics already in it (failed OTLP exports).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register(
            "holdup_otel_export_failures",
            "Span batches the OTLP exporter failed to deliver",
            super::subscriber::export_failures(),
        );
        registry.register(
            "holdup_console_tasks",
            "New tasks tokio-console was shown, and those left out because they came faster than \
             its budget (--console-task-budget)",
            super::console_budget::tasks_metric(),
        );
        Self { registry }
    }

    /// Where a domain's metrics struct registers itself.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// OpenMetrics text (with exemplars), for clients that ask for it, as Prometheus does.
    ///
    /// # Errors
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Prometheus text format 0.0.4 (no exemplars), for everybody else (curl, promtool).
    ///
    /// # Errors
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn encode_prometheus(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A count as a gauge value.
pub fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
