//! The Prometheus registry, created once per server and passed down, and the `/metrics`
//! endpoint that serves it.
//!
//! RPC metrics use the de-facto gRPC names (`grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`) so that existing gRPC
//! dashboards and alerts fit; everything holdup adds is prefixed `holdup_`. Gauges that mirror
//! live state (pool, compute queue, runtime) are refreshed at scrape time from their sources.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text, text},
    metrics::{
        counter::Counter, exemplar::HistogramWithExemplars, family::Family, gauge::Gauge,
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

use crate::{
    lab::{Rpc, upstream::OutcomeLabels},
    proto::lab_server::SERVICE_NAME,
};

/// Latency buckets in seconds: 100 µs to 30 s, dense enough around 1–500 ms where the
/// lessons live.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: Rpc,
}

impl RpcLabels {
    /// The labels of a unary `holdup.v1.Lab` method.
    pub fn lab(method: Rpc) -> Self {
        Self {
            grpc_type: "unary",
            grpc_service: SERVICE_NAME,
            grpc_method: method,
        }
    }
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: Rpc,
    pub grpc_code: &'static str,
}

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

/// The exemplar attached to a latency observation: the trace that explains it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

type LatencyHistogram = fn() -> Histogram;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn latency_histogram_with_exemplars() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

/// Every metric holdup exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub started: Family<RpcLabels, Counter>,
    pub handled: Family<HandledLabels, Counter>,
    pub handling: Family<
        RpcLabels,
        HistogramWithExemplars<TraceExemplar>,
        fn() -> HistogramWithExemplars<TraceExemplar>,
    >,
    pub split: Family<SplitLabels, Histogram, LatencyHistogram>,
    pub verdicts: Family<VerdictLabels, Counter>,
    pub long_polls: Family<MethodLabels, Counter>,
    pub cancelled: Family<MethodLabels, Counter>,
    pub db_pool_size: Gauge,
    pub db_pool_in_use: Gauge,
    pub db_pool_waiters: Gauge,
    pub db_pool_wait: Histogram,
    pub compute_threads: Gauge,
    pub compute_queue_depth: Gauge,
    pub compute_queue_wait: Histogram,
    pub compute_rejected: Counter,
    pub upstream_attempts: Family<OutcomeLabels, Counter>,
    pub upstream_attempt_duration: Family<OutcomeLabels, Histogram, LatencyHistogram>,
    pub runtime_lag: Histogram,
    pub runtime: RuntimeGauges,
    pub otel_export_failures: Counter,
}

/// The lab runtime's own metrics, mirrored at scrape time.
#[derive(Debug, Default)]
pub struct RuntimeGauges {
    pub workers: Gauge,
    pub alive_tasks: Gauge,
    pub global_queue_depth: Gauge,
    pub local_queue_depth: Gauge,
    pub blocking_threads: Gauge,
    pub blocking_queue_depth: Gauge,
    pub busy_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Busy time already added to `busy_seconds`, so each scrape adds only the increase.
    busy_seen: Mutex<Duration>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let started = Family::<RpcLabels, Counter>::default();
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            started.clone(),
        );
        let handled = Family::<HandledLabels, Counter>::default();
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC status code",
            handled.clone(),
        );
        let handling: Family<_, _, fn() -> HistogramWithExemplars<TraceExemplar>> =
            Family::new_with_constructor(latency_histogram_with_exemplars);
        registry.register_with_unit(
            "grpc_server_handling",
            "Time to handle an RPC, with the trace id of an example request as exemplar",
            Unit::Seconds,
            handling.clone(),
        );
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
        let cancelled = Family::<MethodLabels, Counter>::default();
        registry.register(
            "holdup_cancelled_work",
            "Requests whose work was stopped because the caller went away or its deadline passed",
            cancelled.clone(),
        );

        let db = registry.sub_registry_with_prefix("holdup_db_pool");
        let db_pool_size = Gauge::default();
        db.register(
            "size",
            "Connections the pool may open",
            db_pool_size.clone(),
        );
        let db_pool_in_use = Gauge::default();
        db.register("in_use", "Connections lent out", db_pool_in_use.clone());
        let db_pool_waiters = Gauge::default();
        db.register(
            "waiters",
            "Requests waiting for a connection",
            db_pool_waiters.clone(),
        );
        let db_pool_wait = latency_histogram();
        db.register_with_unit(
            "wait",
            "Time requests waited for a connection",
            Unit::Seconds,
            db_pool_wait.clone(),
        );

        let compute = registry.sub_registry_with_prefix("holdup_compute");
        let compute_threads = Gauge::default();
        compute.register(
            "threads",
            "Threads of the compute pool",
            compute_threads.clone(),
        );
        let compute_queue_depth = Gauge::default();
        compute.register(
            "queue_depth",
            "Jobs waiting for a compute thread",
            compute_queue_depth.clone(),
        );
        let compute_queue_wait = latency_histogram();
        compute.register_with_unit(
            "queue_wait",
            "Time offloaded CPU jobs waited for a thread (compute pool and blocking pool)",
            Unit::Seconds,
            compute_queue_wait.clone(),
        );
        let compute_rejected = Counter::default();
        compute.register(
            "rejected",
            "Jobs refused because the compute queue was full",
            compute_rejected.clone(),
        );

        let upstream = registry.sub_registry_with_prefix("holdup_upstream");
        let upstream_attempts = Family::<OutcomeLabels, Counter>::default();
        upstream.register(
            "attempts",
            "HTTP attempts to the upstream, by outcome (ok, http-error, timeout, connect-error, transport-error)",
            upstream_attempts.clone(),
        );
        let upstream_attempt_duration: Family<_, _, LatencyHistogram> =
            Family::new_with_constructor(latency_histogram);
        upstream.register_with_unit(
            "attempt_duration",
            "Duration of each upstream attempt, by outcome",
            Unit::Seconds,
            upstream_attempt_duration.clone(),
        );

        let runtime_lag = latency_histogram();
        registry.register_with_unit(
            "holdup_runtime_lag",
            "How late the lab runtime's probe timer fired: what every task there pays for blocked workers",
            Unit::Seconds,
            runtime_lag.clone(),
        );
        let runtime = RuntimeGauges::default();
        let rt = registry.sub_registry_with_prefix("holdup_tokio");
        rt.register(
            "workers",
            "Worker threads of the lab runtime",
            runtime.workers.clone(),
        );
        rt.register(
            "alive_tasks",
            "Tasks alive on the lab runtime",
            runtime.alive_tasks.clone(),
        );
        rt.register(
            "global_queue_depth",
            "Tasks in the lab runtime's injection queue",
            runtime.global_queue_depth.clone(),
        );
        rt.register(
            "local_queue_depth",
            "Tasks in the lab workers' local queues, summed",
            runtime.local_queue_depth.clone(),
        );
        rt.register(
            "blocking_threads",
            "Threads of the lab runtime's blocking pool",
            runtime.blocking_threads.clone(),
        );
        rt.register(
            "blocking_queue_depth",
            "spawn_blocking jobs waiting for a thread",
            runtime.blocking_queue_depth.clone(),
        );
        rt.register_with_unit(
            "worker_busy",
            "Time the lab runtime's workers spent busy, summed over workers",
            Unit::Seconds,
            runtime.busy_seconds.clone(),
        );
        let otel_export_failures = super::subscriber::export_failures();
        registry.register(
            "holdup_otel_export_failures",
            "Span batches the OTLP exporter failed to deliver",
            otel_export_failures.clone(),
        );

        Self {
            registry,
            started,
            handled,
            handling,
            split,
            verdicts,
            long_polls,
            cancelled,
            db_pool_size,
            db_pool_in_use,
            db_pool_waiters,
            db_pool_wait,
            compute_threads,
            compute_queue_depth,
            compute_queue_wait,
            compute_rejected,
            upstream_attempts,
            upstream_attempt_duration,
            runtime_lag,
            runtime,
            otel_export_failures,
        }
    }

    /// Counts a unary call of `holdup.v1.Lab/<method>` as started.
    pub fn rpc_started(&self, method: Rpc) {
        self.started.get_or_create(&RpcLabels::lab(method)).inc();
    }

    /// Counts a unary call of `holdup.v1.Lab/<method>` as finished with `code`.
    pub fn rpc_handled(&self, method: Rpc, code: tonic::Code) {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_type: "unary",
                grpc_service: SERVICE_NAME,
                grpc_method: method,
                grpc_code: grpc_code_name(code),
            })
            .inc();
    }

    /// Counts a call whose work was stopped by its deadline or its caller leaving.
    pub fn work_cancelled(&self, method: Rpc) {
        self.cancelled
            .get_or_create(&MethodLabels {
                grpc_method: method.name(),
            })
            .inc();
    }

    /// Records one latency with its trace id as exemplar (when the request was traced).
    pub fn observe_handling(&self, labels: &RpcLabels, seconds: f64, trace_id: &str) {
        let exemplar = (!trace_id.is_empty()).then(|| TraceExemplar {
            trace_id: trace_id.to_owned(),
        });
        self.handling
            .get_or_create(labels)
            .observe(seconds, exemplar, Some(SystemTime::now()));
    }

    /// Mirrors the lab runtime's counters into the gauges.
    pub fn sample_runtime(&self, handle: &tokio::runtime::Handle) {
        let m = handle.metrics();
        let g = &self.runtime;
        g.workers.set(to_i64(m.num_workers()));
        g.alive_tasks.set(to_i64(m.num_alive_tasks()));
        g.global_queue_depth.set(to_i64(m.global_queue_depth()));
        let busy: Duration = (0..m.num_workers())
            .map(|w| m.worker_total_busy_duration(w))
            .sum();
        #[cfg(tokio_unstable)]
        {
            let local: usize = (0..m.num_workers())
                .map(|w| m.worker_local_queue_depth(w))
                .sum();
            g.local_queue_depth.set(to_i64(local));
            g.blocking_threads.set(to_i64(m.num_blocking_threads()));
            g.blocking_queue_depth.set(to_i64(m.blocking_queue_depth()));
        }
        // A poisoned lock only means a scrape panicked mid-update; the value is still usable.
        let mut seen = g.busy_seen.lock().unwrap_or_else(|p| p.into_inner());
        if busy > *seen {
            g.busy_seconds.inc_by((busy - *seen).as_secs_f64());
            *seen = busy;
        }
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

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
