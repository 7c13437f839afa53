//! # The diagnosis engine: why was *this* response late, and who made it wait?
//!
//! Any tonic server gets it with one layer, plus one call on its runtime builder for blame
//! that names tasks other than requests:
//!
//! ```no_run
//! # use holdup::diagnose::{DiagnoseLayer, StageLayer, StageFilter, install_hooks};
//! # use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
//! // 1. The runtime: poll hooks (needs `--cfg tokio_unstable`; optional).
//! let mut builder = tokio::runtime::Builder::new_multi_thread();
//! install_hooks(&mut builder);
//! // 2. The subscriber: the stage layer charges waits to the spans they happen in (optional).
//! tracing_subscriber::registry().with(StageLayer::new().with_filter(StageFilter)).init();
//! // 3. The server: one layer.
//! # let _ =
//! tonic::transport::Server::builder().layer(DiagnoseLayer::new());
//! ```
//!
//! Per request it measures, on the request's own future, the **split**: *busy* (polled), and
//! of it *on-CPU* (the worker thread's CPU clock); *scheduled* (ready, waiting for a worker);
//! *idle* (parked), charged to the innermost stage span open at the time, whose kind
//! (`holdup.stage = "queue" | "backend" | "upstream" | "offloaded" | "timer"`, or inferred from
//! OpenTelemetry conventions) makes *queue* time and the idle verdicts. The **verdict** is the
//! largest component ([`Verdict`]): never a label, always a measurement. A request that
//! waited for a worker gets **blame**: the polls that held the workers during its wait, each
//! with its overlap and share, as named requests (method, trace and span id) or tasks (id,
//! spawn location, and a name if given with [`name_task`]).
//!
//! It reports in the `holdup-diagnosis` response header ([`Report::header_value`]), on the
//! server span (attributes, and OpenTelemetry links to the culprits' spans, which Jaeger shows
//! as references), in Prometheus ([`DiagnoseLayer::with_metrics`]: `holdup_delay_seconds`,
//! `holdup_verdicts_total`, `holdup_long_polls_total`, `holdup_blame_seconds_total`), and in
//! the log (a WARN per long poll, and per long blamed wait). Handlers can read it too
//! ([`Diagnosis`]).
//!
//! **What one runtime cannot see.** When every worker of a server's only runtime is blocked,
//! a new request is not even read off its socket until one frees: no code in the server runs,
//! so nothing can measure that wait; only the client sees it. The engine's answer is holdup's
//! own arrangement: [`DiagnoseLayer::handlers_on`] runs handlers on a runtime of their own, so
//! the connection runtime reads the request and hands it over at once, and the wait for a
//! handler worker is measured as *scheduled* and blamed.

mod blame;
mod clock;
mod diagnosis;
mod engine;
mod identity;
mod intern;
mod layer;
mod measured;
mod metrics;
mod occupancy;
mod report;
mod stage;
mod stage_layer;
mod timeline;
mod verdict;

pub use blame::Culprit;
pub use clock::{CPU_MARK_EVERY, CPU_SPLIT_FROM};
pub use diagnosis::Diagnosis;
pub use engine::{
    DEFAULT_BLAME_FROM, DEFAULT_LONG_POLL, DEFAULT_WARN_BLAMED_FROM, EngineConfig, SpawnGate,
    name_tasks_through,
};
pub use identity::Identity;
pub use layer::{
    DIAGNOSIS_HEADER, Diagnose, DiagnoseLayer, DiagnosedBody, REQUEST_SPAN_TARGET, ResponseFuture,
    TIMELINE_HEADER, TRACE_ID_HEADER,
};
pub use metrics::DiagnoseMetrics;
pub use occupancy::{Holder, RECORD_POLLS_FROM, install_hooks, name_task};
pub use report::{Event, EventKind, Report, Split, Wait, micros, task_description};
pub use stage::{STAGE_FIELD, StageKind};
pub use stage_layer::{StageFilter, StageLayer};
pub use verdict::{NOT_LATE_BELOW, Verdict};
