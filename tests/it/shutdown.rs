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
    let (child, addr) = start(&["--grace-ms", "30000"]);
    let mut lab = LabClient::new(channel(addr).await);
    let _in_flight = tokio::spawn(async move {
        lab.sleep(SleepRequest {
            mode: SleepMode::Async.into(),
            duration_ms: 20_000,
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_second_signal_exits_at_once(child).await;
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

/// Issue 11, item 3: calls that are still running when the grace is over (here: upstream
/// calls stalled in the in-process simulator for 30 s) get UNAVAILABLE "server shutting down",
/// and the process exits within the grace plus a small margin instead of waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_calls_are_answered_unavailable_and_do_not_outlive_the_grace() {
    use holdup::proto::UpstreamCallRequest;
    let grace = Duration::from_millis(1_000);
    let (child, addr) = start(&["--grace-ms", "1000", "--sim-stall-ms", "30000"]);
    let channel = channel(addr).await;
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut lab = LabClient::new(channel.clone());
            tokio::spawn(async move {
                lab.upstream_call(UpstreamCallRequest {
                    stall_rate: Some(1.0),
                    attempt_timeout_ms: Some(60_000),
                    max_retries: Some(0),
                    ..UpstreamCallRequest::default()
                })
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, took) = terminate(child).await;
    eprintln!("exited {took:?} after SIGTERM with 5 stalled calls in flight (grace {grace:?})");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        took < grace + Duration::from_secs(2),
        "exited {took:?} after SIGTERM; the grace was {grace:?}"
    );
    for call in calls {
        let status = call
            .await
            .unwrap()
            .expect_err("a stalled call cannot succeed");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "server shutting down", "{status:?}");
    }
}

/// SIGTERM, then SIGINT while the first is still draining: the process exits at once, 130.
async fn assert_second_signal_exits_at_once(mut child: Child) {
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    signal(&child, "INT");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
        .await
        .expect("the waiting thread does not panic");
    assert!(sent.elapsed() < Duration::from_secs(3));
    assert_eq!(status.code(), Some(130), "{status:?}");
}

/// Sends SIGTERM and waits (10 s at most) for the exit; the status and how long it took.
async fn terminate(mut child: Child) -> (std::process::ExitStatus, Duration) {
    let sent = Instant::now();
    signal(&child, "TERM");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
            .await
            .expect("the waiting thread does not panic");
    (status, sent.elapsed())
}

/// `holdup upstream`, started on a free port; its base URL.
fn start_upstream(grace_ms: &str) -> (Child, String) {
    let upstream = process::start(
        &[
            "upstream",
            "--listen",
            "127.0.0.1:0",
            "--no-console",
            "--grace-ms",
            grace_ms,
        ],
        &[],
        None,
    );
    let addr = upstream.addr_after("holdup upstream simulator listening on ");
    (upstream.child, format!("http://{addr}"))
}

/// Issue 11, item 3: the standalone simulator honours SIGTERM with a grace period: a 40 s
/// request in flight does not keep it alive past the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_simulator_stops_within_its_grace() {
    let (child, url) = start_upstream("500");
    let in_flight = tokio::spawn(reqwest::get(format!("{url}/work?latency_ms=40000")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, took) = terminate(child).await;
    eprintln!("holdup upstream exited {took:?} after SIGTERM with a 40 s request in flight");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM (grace 500 ms)"
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the 40 s request was cut at the end of the grace"
    );
}

/// Issue 11, item 3: like `serve`, a second signal ends `holdup upstream` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_upstream_simulator_at_once() {
    let (child, url) = start_upstream("30000");
    let _in_flight = tokio::spawn(reqwest::get(format!("{url}/work?latency_ms=40000")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_second_signal_exits_at_once(child).await;
}
