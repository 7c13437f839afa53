//! The integration tests: real holdup servers on random loopback ports, called through real
//! clients. One binary, so that the suite links once instead of once per file.
//!
//! Tests that measure latency, or that load the machine while another measures it, take
//! [`common::serial`] and so never overlap each other. The two tests that install the
//! process-wide tracing subscriber (`tests/observability.rs`, `tests/otel_dead_collector.rs`)
//! are binaries of their own: a process has one global subscriber.

#[path = "../common/mod.rs"]
mod common;

mod cli_env;
mod console_budget;
mod console_tui;
mod contention;
mod experiment;
mod explain;
mod exposed;
mod greeter;
mod jaeger;
mod lab_rpcs;
mod load;
mod metrics;
mod postgres;
mod postgres_restart;
mod random_requests;
mod reliability;
mod route_guide;
mod shutdown;
mod tls;
mod tracing_env;
mod transport;
mod verdict_words;
