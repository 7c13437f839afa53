//! Issue 11, item 6: what an exposed deployment turns on. `--refuse-blocking-modes` refuses
//! the modes that pin a lab worker on purpose; the slots reserved for `Fast` keep the canary
//! (and health, which takes no lab slot at all) answering while every costly RPC is at its
//! limit.

use std::time::Duration;

use holdup::proto::{
    CpuBoundRequest, CpuMode, FastRequest, SleepMode, SleepRequest, UpstreamCallRequest,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::common::{client, spawn_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_modes_are_refused_naming_mode_and_flag() {
    let app = spawn_with(|c| c.limits.refuse_blocking_modes = true).await;
    let mut lab = app.client.clone();
    let inline = lab
        .cpu_bound(CpuBoundRequest {
            mode: CpuMode::Inline.into(),
            work_ms: 100,
            ..CpuBoundRequest::default()
        })
        .await
        .expect_err("INLINE is refused");
    let blocking = lab
        .sleep(SleepRequest {
            mode: SleepMode::Blocking.into(),
            duration_ms: 100,
        })
        .await
        .expect_err("BLOCKING is refused");
    for (status, mode) in [(inline, "CpuBound INLINE"), (blocking, "Sleep BLOCKING")] {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains(mode), "{status:?}");
        assert!(
            status.message().contains("--refuse-blocking-modes"),
            "{status:?}"
        );
    }
    // The non-blocking modes still work.
    lab.cpu_bound(CpuBoundRequest {
        mode: CpuMode::Cooperative.into(),
        work_ms: 20,
        ..CpuBoundRequest::default()
    })
    .await
    .expect("COOPERATIVE is served");
    lab.sleep(SleepRequest {
        mode: SleepMode::Async.into(),
        duration_ms: 10,
    })
    .await
    .expect("ASYNC is served");
    app.shutdown().await.expect("clean shutdown");
}

/// The flood, scaled down: sleeps and stalled upstream calls take every slot the
/// costly RPCs may have; Fast and health still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_and_health_answer_while_the_costly_rpcs_are_at_their_limit() {
    let app = spawn_with(|c| {
        c.limits.max_in_flight = 8;
        c.limits.max_in_flight_per_rpc = 8;
        c.limits.reserved_for_fast = 2;
    })
    .await;
    let mut flood = Vec::new();
    for i in 0..8 {
        let mut lab = app.client.clone();
        flood.push(tokio::spawn(async move {
            if i % 2 == 0 {
                lab.sleep(SleepRequest {
                    mode: SleepMode::Async.into(),
                    duration_ms: 2_000,
                })
                .await
                .map(drop)
            } else {
                lab.upstream_call(UpstreamCallRequest {
                    latency_ms: Some(2_000),
                    attempt_timeout_ms: Some(5_000),
                    max_retries: Some(0),
                    ..UpstreamCallRequest::default()
                })
                .await
                .map(drop)
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut fast = client(app.addr).await;
    fast.fast(FastRequest::default())
        .await
        .expect("Fast answers while the costly RPCs hold every slot they may");
    let health = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .expect("URI")
            .connect()
            .await
            .expect("connects"),
    )
    .check(HealthCheckRequest {
        service: "holdup.v1.Lab".into(),
    })
    .await
    .expect("health answers")
    .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    let mut refused = 0;
    for call in flood {
        if let Err(status) = call.await.expect("call task") {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status.message().contains("--reserved-for-fast"),
                "{status:?}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 2, "8 costly calls for 6 costly slots");
    app.shutdown().await.expect("clean shutdown");
}
