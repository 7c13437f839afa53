//! The Prometheus endpoint: after every RPC has run, the scrape is valid for `promtool check
//! metrics` and holds the series that dashboards and alerts rely on.

use std::{io::Write, process::Stdio};

use crate::common::{require_tool, sample, spawn_app};
use holdup::proto::{
    CpuBoundRequest, CpuMode, FastRequest, Query, SleepMode, SleepRequest, SlowBackendRequest,
    UpstreamCallRequest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_after_every_rpc_passes_promtool_and_has_the_series() {
    let mut app = spawn_app().await;
    let c = &mut app.client;
    c.fast(FastRequest::default()).await.unwrap();
    for mode in [
        CpuMode::Inline,
        CpuMode::BlockingPool,
        CpuMode::ComputePool,
        CpuMode::Cooperative,
    ] {
        c.cpu_bound(CpuBoundRequest {
            mode: mode.into(),
            work_ms: 0,
            iterations: 2_000,
        })
        .await
        .unwrap();
    }
    for mode in [SleepMode::Async, SleepMode::Blocking] {
        c.sleep(SleepRequest {
            mode: mode.into(),
            duration_ms: 15,
        })
        .await
        .unwrap();
    }
    c.slow_backend(SlowBackendRequest {
        hold_ms: 5,
        query: Query::Point.into(),
        key: 1,
    })
    .await
    .unwrap();
    c.upstream_call(UpstreamCallRequest {
        latency_ms: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    c.upstream_call(UpstreamCallRequest {
        error_rate: Some(1.0),
        max_retries: Some(0),
        ..Default::default()
    })
    .await
    .unwrap_err();
    c.sleep(SleepRequest {
        mode: 0,
        duration_ms: 1,
    })
    .await
    .unwrap_err();

    let scrape = app.scrape().await;
    let fast = "grpc_type=\"unary\",grpc_service=\"holdup.v1.Lab\",grpc_method=\"Fast\"";
    assert_eq!(
        sample(&scrape, &format!("grpc_server_started_total{{{fast}}}")),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("grpc_server_handled_total{{{fast},grpc_code=\"OK\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"holdup.v1.Lab\",grpc_method=\"Sleep\",grpc_code=\"InvalidArgument\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"holdup.v1.Lab\",grpc_method=\"UpstreamCall\",grpc_code=\"Unavailable\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("grpc_server_handling_seconds_count{{{fast}}}")
        ),
        1.0
    );
    assert!(
        sample(
            &scrape,
            "holdup_delay_seconds_count{grpc_service=\"holdup.v1.Lab\",grpc_method=\"Sleep\",component=\"busy\"}"
        ) >= 2.0
    );
    assert_eq!(
        sample(
            &scrape,
            "holdup_verdicts_total{grpc_service=\"holdup.v1.Lab\",grpc_method=\"Sleep\",verdict=\"blocking-call\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "holdup_upstream_attempts_total{outcome=\"http-error\"}"
        ),
        1.0
    );
    assert!(sample(&scrape, "holdup_upstream_attempts_total{outcome=\"ok\"}") >= 1.0);
    assert_eq!(sample(&scrape, "holdup_db_pool_size"), 4.0);
    assert_eq!(sample(&scrape, "holdup_db_pool_wait_seconds_count"), 1.0);
    assert_eq!(sample(&scrape, "holdup_compute_threads"), 2.0);
    assert_eq!(
        sample(&scrape, "holdup_compute_queue_wait_seconds_count"),
        2.0
    );
    assert_eq!(sample(&scrape, "holdup_tokio_workers"), 2.0);
    assert!(sample(&scrape, "holdup_tokio_worker_busy_seconds_total") > 0.0);
    assert!(sample(&scrape, "holdup_runtime_lag_seconds_count") >= 1.0);

    let openmetrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", app.metrics_addr))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        openmetrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(openmetrics.text().await.unwrap().ends_with("# EOF\n"));

    if let Some(promtool) = require_tool("promtool", "apt-get install prometheus") {
        let mut check = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs");
        check
            .stdin
            .take()
            .unwrap()
            .write_all(scrape.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool check metrics:\n{report}"
        );
    }
    app.shutdown().await.unwrap();
}
