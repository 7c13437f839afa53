//! # holdup-diagnose: why was *this* response late, and who made it wait?
//!
//! A tower layer for tonic (or any tower HTTP service, such as axum) that measures every
//! request's own future and says where its time went. Three lines add it:
//!
//! ```no_run
//! use holdup_diagnose::{DiagnoseLayer, StageFilter, StageLayer};
//! use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! // 1. The subscriber: the stage layer charges waits to the spans they happen in (optional).
//! tracing_subscriber::registry().with(StageLayer::new().with_filter(StageFilter)).init();
//! // 2. The server: one layer. Every reply gets a `holdup-diagnosis` header and `x-trace-id`.
//! tonic::transport::Server::builder()
//!     .layer(DiagnoseLayer::new())
//!     # .add_routes(tonic::service::Routes::default())
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Optionally, the runtime's poll hooks, so that blame can name any task that holds a worker,
//! not only requests (needs `--cfg tokio_unstable`):
//!
//! ```
//! let runtime = holdup_diagnose::install_hooks(&mut tokio::runtime::Builder::new_multi_thread())
//!     .enable_all()
//!     .build()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A `#[tokio::main]` service gets the split and the verdict without the hooks; blame then
//! names the requests that held the workers.
//!
//! ## What it measures
//!
//! Per request, on the request's own future, the **split**: *busy* (polled), and of it
//! *on-CPU* (the worker thread's CPU clock); *scheduled* (ready, waiting for a worker); *idle*
//! (parked). Each parked stretch is named by measurement, with no label needed: the innermost
//! stage span open with a kind (`holdup.stage = "queue" | "backend" | "upstream" |
//! "offloaded" | "timer"`, or OpenTelemetry conventions) if there is one; else the tokio
//! resource it parked on (a `Sleep` is a timer, a `Semaphore` or `Mutex` a queue whose holders
//! are named), who woke it (the blocking pool, a library's thread, another request), or the
//! connection it opened that sent the call and received data at the wake (a database port
//! is `backend`, any other `upstream`). The README's "How idle waits are named" gives the
//! rules. The **verdict** is the largest component ([`Verdict`]): never a label, always a measurement. A
//! request that waited for a worker gets **blame**: the polls that held the workers during
//! its wait, each with its overlap and share, as named requests (method and trace id) or tasks
//! (id, spawn location, and a name if given with [`name_task`]); a request that waited for a
//! lock, the holders of the lock.
//!
//! Every request has an id: its W3C trace id (feature `opentelemetry`), the caller's
//! `traceparent`, or one the engine makes; it goes in `x-trace-id` and in culprit names, so
//! two culprits are always told apart.
//!
//! It reports in the `holdup-diagnosis` response header ([`Report::header_value`]), and for a
//! call that goes on after its response head (a stream) the whole call again in a
//! `holdup-diagnosis` trailer; on the server span (attributes, and with feature
//! `opentelemetry` links to the culprits' spans, which Jaeger shows as references); in
//! Prometheus (feature `prometheus`: `DiagnoseMetrics`); and in the log (a WARN per long poll,
//! and per long blamed wait). Handlers can read it too ([`Diagnosis`]).
//!
//! ## Features
//!
//! - `opentelemetry`: continue the caller's trace through the global propagator and link
//!   victims to culprits' spans.
//! - `prometheus`: `DiagnoseMetrics`, registered into a prometheus-client registry.
//! - `task-names`: names the handler tasks [`Diagnosis::spawn`] starts (turns on tokio's
//!   `tracing` feature).
//! - `arrival`: kernel receive timestamps ([`arrival::enable`], [`arrival::TimestampedStream`]),
//!   so a request's wait counts from when its bytes reached the machine (turns on tokio's
//!   `net`; uses nix on Linux).
//! - `serve`: [`arrival::serve`] and [`arrival::Stamp`], a hyper server that stamps each
//!   request in its connection task, so a wait before its first poll is measured (adds hyper
//!   and hyper-util).
//! - `tonic`: [`arrival::incoming`], the same arrivals on tonic's own `Server` through
//!   `serve_with_incoming` (tonic's `server` feature, which a tonic service has already).
//!
//! None is on by default, and without `arrival` or `serve` the crate turns on no feature of
//! tokio or tonic.

pub mod arrival;
mod blame;
mod clock;
mod diagnosis;
mod engine;
mod grpc_status;
mod identity;
#[cfg(feature = "prometheus")]
mod intern;
pub mod layer;
mod measured;
#[cfg(feature = "prometheus")]
mod metrics;
mod names;
mod occupancy;
#[cfg(feature = "opentelemetry")]
mod otel;
mod read_stamp;
mod report;
mod resource;
mod stage;
mod stage_layer;
mod tcp_info;
mod timeline;
mod verdict;
mod wait_name;
mod wake_source;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use blame::Culprit;
pub use diagnosis::Diagnosis;
pub use engine::{
    DEFAULT_BLAME_FROM, DEFAULT_DETAIL_FROM, DEFAULT_LONG_POLL, DEFAULT_WARN_BLAMED_FROM,
    EngineConfig, ResponseHeaders,
};
#[doc(hidden)]
pub use engine::{SpawnGate, name_tasks_through, tasks_are_named};
pub use identity::Identity;
pub use layer::{
    DIAGNOSIS_HEADER, DiagnoseLayer, REQUEST_SPAN_TARGET, TIMELINE_HEADER, TRACE_ID_HEADER,
};
#[cfg(feature = "prometheus")]
pub use metrics::DiagnoseMetrics;
pub use occupancy::{Holder, Hooks, install_hooks, install_hooks_with, name_task};
pub use report::{Event, EventKind, Report, Split, Wait, micros, task_description};
pub use stage::{STAGE_FIELD, StageKind};
pub use stage_layer::{StageAndResourceFilter, StageFilter, StageLayer};
pub use verdict::{NOT_LATE_BELOW, Verdict};
pub use wait_name::DATABASE_PORTS;
