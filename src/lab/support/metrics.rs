//! The Lab's metrics. [`RpcMetrics`] counts and times its RPCs under the de-facto gRPC names
//! (`grpc_server_started_total`, `grpc_server_handled_total`, `grpc_server_handling_seconds`)
//! plus `holdup_cancelled_work_total`; [`LabMetrics`] registers it together with the metrics
//! of every other domain the Lab uses, so that the server builds them all in one call and
//! hands each to its owner.

use std::{sync::OnceLock, time::SystemTime};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, exemplar::HistogramWithExemplars, family::Family},
    registry::Registry,
};

use super::compute_pool::ComputeMetrics;
use crate::{
    diagnose::DiagnoseMetrics,
    lab::{Rpc, backend::DbPoolMetrics, upstream::UpstreamMetrics},
    proto::lab_server::SERVICE_NAME,
    telemetry::{
        metrics::{
            TraceExemplar, grpc_code_name, latency_histogram_with_exemplars, register_fields,
        },
        runtime_metrics::RuntimeMetrics,
    },
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: Rpc,
}

impl RpcLabels {
    /// The labels of a unary `holdup.v1.Lab` method.
    fn lab(method: Rpc) -> Self {
        Self {
            grpc_type: "unary",
            grpc_service: SERVICE_NAME,
            grpc_method: method,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    #[prometheus(flatten)]
    rpc: RpcLabels,
    grpc_code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_method: Rpc,
}

type HandlingHistogram = HistogramWithExemplars<TraceExemplar>;

/// How many calls of each RPC started and finished, how long they took, and how many were
/// stopped half-way.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    started: Family<RpcLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Family<RpcLabels, HandlingHistogram, fn() -> HandlingHistogram>,
    cancelled_work: Family<MethodLabels, Counter>,
    resolved: std::sync::Arc<Resolved>,
}

/// Codes a gRPC status can have (0 to 16).
const CODES: usize = 17;

/// Each RPC's series, resolved on first use and kept: `Family::get_or_create` hashes the
/// labels and takes the family's lock, three times on every request before. A resolved
/// handle shares its series, so the exposition is unchanged (no zero series added).
#[derive(Debug, Default)]
struct Resolved {
    started: [OnceLock<Counter>; Rpc::ALL.len()],
    handled: [[OnceLock<Counter>; CODES]; Rpc::ALL.len()],
    handling: [OnceLock<HandlingHistogram>; Rpc::ALL.len()],
}

fn slot(rpc: Rpc) -> usize {
    Rpc::ALL.iter().position(|r| *r == rpc).unwrap_or(0)
}

impl RpcMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(latency_histogram_with_exemplars),
            cancelled_work: Family::default(),
            resolved: std::sync::Arc::default(),
        };
        register_fields!(registry.sub_registry_with_prefix("grpc_server"), metrics, {
            started: "RPCs started on the server",
            handled: "RPCs completed on the server, by gRPC status code",
            handling [Seconds]:
                "Time to handle an RPC, with the trace id of an example request as exemplar",
        });
        register_fields!(registry.sub_registry_with_prefix("holdup"), metrics, {
            cancelled_work: "Requests whose work was stopped because the caller went away or \
                             its deadline passed",
        });
        metrics
    }

    /// Counts a call of `rpc` as started.
    pub fn started(&self, rpc: Rpc) {
        self.resolved.started[slot(rpc)]
            .get_or_init(|| self.started.get_or_create(&RpcLabels::lab(rpc)).clone())
            .inc();
    }

    /// Counts a call of `rpc` as finished with `code`.
    pub fn handled(&self, rpc: Rpc, code: tonic::Code) {
        let code_slot = usize::try_from(i32::from(code)).unwrap_or(0).min(CODES - 1);
        self.resolved.handled[slot(rpc)][code_slot]
            .get_or_init(|| {
                self.handled
                    .get_or_create(&HandledLabels {
                        rpc: RpcLabels::lab(rpc),
                        grpc_code: grpc_code_name(code),
                    })
                    .clone()
            })
            .inc();
    }

    /// Records how long a call of `rpc` took, with its trace id as exemplar (when the request
    /// was traced).
    pub fn observe_handling(&self, rpc: Rpc, seconds: f64, trace_id: String) {
        let exemplar = (!trace_id.is_empty()).then_some(TraceExemplar { trace_id });
        self.resolved.handling[slot(rpc)]
            .get_or_init(|| self.handling.get_or_create(&RpcLabels::lab(rpc)).clone())
            .observe(seconds, exemplar, Some(SystemTime::now()));
    }

    /// Counts a call whose work was stopped by its deadline or its caller leaving.
    pub fn work_cancelled(&self, rpc: Rpc) {
        self.cancelled_work
            .get_or_create(&MethodLabels { grpc_method: rpc })
            .inc();
    }
}

/// The metrics of every domain the Lab uses, registered into one registry.
#[derive(Debug)]
pub struct LabMetrics {
    pub rpc: RpcMetrics,
    /// The diagnosis engine's series (split, verdicts, long polls, blame), which its layer
    /// records into.
    pub diagnose: DiagnoseMetrics,
    pub runtime: RuntimeMetrics,
    pub db_pool: DbPoolMetrics,
    pub compute: ComputeMetrics,
    pub upstream: UpstreamMetrics,
}

impl LabMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            rpc: RpcMetrics::register(registry),
            diagnose: DiagnoseMetrics::register(registry),
            runtime: RuntimeMetrics::register(registry),
            db_pool: DbPoolMetrics::register(registry),
            compute: ComputeMetrics::register(registry),
            upstream: UpstreamMetrics::register(registry),
        }
    }
}
