//! Everything that reports on requests. The subscriber is built here and nowhere else.
//!
//! - [`subscriber`]: the one tracing registry and its layers (fmt, OpenTelemetry, console, and
//!   the diagnosis engine's stage layer);
//! - [`console_budget`]: the new tasks a second tokio-console sees;
//! - [`otel`]: OTLP export and W3C trace-context propagation;
//! - [`lag`]: the runtime lag probe;
//! - [`metrics`], [`endpoint`]: the Prometheus registry and its `/metrics` endpoint;
//!   [`runtime_metrics`]: the lab runtime in it.
//!
//! The per-request split, verdict and blame are the diagnosis engine's (`crate::diagnose`).

pub mod console_budget;
pub mod endpoint;
pub mod lag;
pub mod metrics;
pub mod otel;
pub mod runtime_metrics;
pub mod subscriber;
