//! Everything that reports on requests. The subscriber is built here and nowhere else.
//!
//! - [`subscriber`]: the one tracing registry and its layers (fmt, OpenTelemetry, console,
//!   watchdog);
//! - [`otel`]: OTLP export and W3C trace-context propagation;
//! - [`watchdog`]: the long-poll layer; [`lag`]: the runtime lag probe;
//! - [`diagnostics`]: the per-request delay split returned in every reply;
//! - [`metrics`], [`endpoint`]: the Prometheus registry and its `/metrics` endpoint;
//!   [`delay_metrics`], [`runtime_metrics`]: the delay split and the lab runtime in it.

pub mod delay_metrics;
pub mod diagnostics;
pub mod endpoint;
pub mod lag;
pub mod metrics;
pub mod otel;
pub mod runtime_metrics;
pub mod subscriber;
pub mod watchdog;
