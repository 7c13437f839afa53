//! # holdup
//!
//! A gRPC service that answers, with evidence, the question "why is this response late?".
//! Each RPC of `holdup.v1.Lab` reproduces one common cause of delay in an async server, and
//! every reply says where its time went.
//!
//! # Layout
//!
//! - [`cli`], [`config`]: flags and environment variables into a validated [`config::ServeConfig`].
//! - [`server`]: binds and assembles the tonic server (Lab, health, reflection) and drains it
//!   on shutdown; [`shutdown`] turns signals into a future.
//! - [`diagnose`]: the diagnosis engine, a tower layer any tonic server can add: the measured
//!   split, verdict and blame of every request (the Lab is its first user).
//! - [`runtime`]: the lab runtime the handlers run on, apart from the transport runtime.
//! - [`lab`]: the service, one module per cause: `fast`, `backend`, `cpu`, `sleep`, `upstream`
//!   (the HTTP client side); [`lab::Rpc`], its methods as a type; the request runner in
//!   `lab/mod.rs`; and in `lab/support` what the causes share (admission, deadline, validation,
//!   retries, the compute pool, the error type, the Lab's metrics).
//! - [`telemetry`]: the per-request delay split, the one tracing subscriber, and the Prometheus
//!   registry each domain's metrics register into.
//! - [`simulator`]: the HTTP upstream simulator (`holdup upstream`); [`http_server`]: the small
//!   bound HTTP server it and the metrics endpoint share.
//! - [`transport`]: what every listener does to its connections: Nagle off, a connection cap,
//!   back-off at descriptor exhaustion, handshake / idle / unread-reply timeouts, and for gRPC
//!   the content-type check and the UNAVAILABLE answer at the end of the shutdown grace.
//! - [`proto`]: the generated `holdup.v1` code and its descriptor set.
//! - [`load`]: the load generator (`holdup load`): open and closed loops, HDR histograms,
//!   a `Fast` probe beside the load, text and JSON reports.
//! - [`experiment`]: the experiment catalogue (`holdup experiment`): each cause before and
//!   after its fix, as a findings table, JSON and an HTML report with latency plots.
//! - [`explain`]: `holdup explain`: a late request across services, from its trace in Jaeger:
//!   the critical path, and the cause of each segment from holdup's span attributes.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub use holdup_diagnose as diagnose;
pub mod experiment;
pub mod explain;
pub mod http_server;
pub mod lab;
pub mod load;
pub mod proto;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod simulator;
pub mod telemetry;
pub mod transport;
