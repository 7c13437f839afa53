//! A dead OTLP collector never takes the service down or slows it: every RPC still answers
//! promptly, and the failed exports are counted.

// A binary of its own (it installs the global subscriber) that uses part of the harness.
#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::{free_port, spawn_app};
use holdup::{
    proto::{FastRequest, SleepMode, SleepRequest},
    telemetry::subscriber::{self, TelemetryConfig},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_unaffected_and_failures_counted() {
    // Nothing listens on this port: every export is refused.
    let dead = free_port();
    let telemetry = subscriber::init(&TelemetryConfig {
        otlp_endpoint: Some(format!("http://{dead}")),
        ..TelemetryConfig::default()
    })
    .expect("telemetry installs");
    let mut app = spawn_app().await;

    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let reply = app
            .client
            .fast(FastRequest::default())
            .await
            .expect("Fast answers with the collector down")
            .into_inner();
        slowest = slowest.max(started.elapsed());
        // Tracing is on (the trace id is there), only its export fails.
        assert_eq!(reply.diagnostics.unwrap().trace_id.len(), 32);
    }
    app.client
        .sleep(SleepRequest {
            mode: SleepMode::Async.into(),
            duration_ms: 10,
        })
        .await
        .expect("Sleep answers with the collector down");
    assert!(
        slowest < Duration::from_millis(250),
        "a Fast call took {slowest:?}"
    );

    let failures = "holdup_otel_export_failures_total";
    let before = app.sample(failures).await;
    let flushed = Instant::now();
    tokio::task::spawn_blocking(move || telemetry.flush())
        .await
        .unwrap();
    assert!(flushed.elapsed() < Duration::from_secs(30));
    assert!(
        app.sample(failures).await > before,
        "a refused export is not counted"
    );
    app.shutdown().await.unwrap();
}
