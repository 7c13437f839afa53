//! SIGTERM to the real binary: health turns NOT_SERVING at once, the in-flight request
//! finishes, buffered spans are flushed, the process exits 0; a second signal exits at once.

use std::{
    net::SocketAddr,
    process::Child,
    time::{Duration, Instant},
};

use crate::common::{
    collector::Collector,
    process::{self, signal, wait_exit},
};
use holdup::proto::{FastRequest, SleepMode, SleepRequest, lab_client::LabClient};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Starts `holdup serve` on a free port and returns it with its address.
fn start(extra: &[&str]) -> (Child, SocketAddr) {
    start_with_env(extra, &[])
}

/// The same, with extra environment variables.
fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let (holdup, addr) = process::serve(extra, env);
    (holdup.child, addr)
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let (mut child, addr) = start(&["--drain-delay-ms", "500", "--grace-ms", "5000"]);
    let channel = channel(addr).await;
    let mut health = HealthClient::new(channel.clone());
    let serving = health
        .check(HealthCheckRequest {
            service: "holdup.v1.Lab".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status(), ServingStatus::Serving);

    let mut lab = LabClient::new(channel.clone());
    let in_flight = tokio::spawn(async move {
        lab.sleep(SleepRequest {
            mode: SleepMode::Async.into(),
            duration_ms: 1_000,
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let draining = health
        .check(HealthCheckRequest {
            service: "holdup.v1.Lab".into(),
        })
        .await
        .expect("health answers during the drain delay")
        .into_inner();
    assert_eq!(draining.status(), ServingStatus::NotServing);

    let reply = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert!(reply.into_inner().slept_us >= 1_000_000);
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
            .await
            .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (mut child, addr) = start(&["--grace-ms", "30000"]);
    let mut lab = LabClient::new(channel(addr).await);
    let _in_flight = tokio::spawn(async move {
        lab.sleep(SleepRequest {
            mode: SleepMode::Async.into(),
            duration_ms: 20_000,
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    signal(&child, "INT");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(sent.elapsed() < Duration::from_secs(3));
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_buffered_are_flushed_at_exit() {
    let (collector, otlp) = Collector::start();
    let endpoint = format!("http://{otlp}");
    // A batch delay of a minute: only the flush at exit can deliver the span in time.
    let (mut child, addr) = start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    );
    let reply = LabClient::new(channel(addr).await)
        .fast(FastRequest::default())
        .await
        .expect("Fast answers")
        .into_inner();
    let trace_id = reply.diagnostics.expect("diagnostics").trace_id;
    assert_eq!(trace_id.len(), 32);
    signal(&child, "TERM");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(15)))
            .await
            .unwrap();
    assert_eq!(status.code(), Some(0));
    let spans = collector.trace(&trace_id, 1, Duration::from_secs(2)).await;
    let server = spans
        .iter()
        .find(|s| s.span.name == "holdup.v1.Lab/Fast")
        .unwrap_or_else(|| panic!("the Fast span was not flushed at exit: {spans:?}"));
    // The whole span arrived, from the right process, as the root of its trace.
    assert_eq!(server.service, "holdup");
    assert_eq!(server.span_id().len(), 16, "{server:?}");
    assert_eq!(
        server.parent_id(),
        "",
        "a call without traceparent starts a trace"
    );
    assert_eq!(server.attr("rpc.method").as_deref(), Some("Fast"));
}
