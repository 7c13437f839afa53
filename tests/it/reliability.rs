//! Deadlines, cancellation, overload and faults, against real servers: work stops when its
//! caller stops waiting, excess is refused at once, dependencies can die and come back.

use std::time::{Duration, Instant};

use crate::common::{TestApp, client, ms, spawn_with};
use holdup::{
    config::{Database, SimulatorConfig, UpstreamTarget},
    proto::{
        CpuBoundRequest, CpuMode, FastRequest, Query, SleepMode, SleepRequest, SlowBackendRequest,
        UpstreamCallRequest,
    },
    simulator,
};
use tonic::{Code, Request};

fn cpu(work_ms: u32) -> CpuBoundRequest {
    CpuBoundRequest {
        mode: CpuMode::ComputePool.into(),
        work_ms,
        iterations: 0,
    }
}

/// Polls `series` until it reaches `want` or 3 s pass; returns the last value.
async fn await_sample(app: &TestApp, series: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let value = app.sample(series).await;
        if value >= want || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(ms(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_offloaded_work_and_frees_its_thread() {
    let mut app = spawn_with(|c| c.compute_threads = 1).await;
    let mut request = Request::new(cpu(5_000));
    request.set_timeout(ms(200));
    let status = app.client.cpu_bound(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    // Had the job kept running, this one would wait ~4.8 s for the only compute thread.
    let started = Instant::now();
    let reply = app.client.cpu_bound(cpu(10)).await.unwrap().into_inner();
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        reply.queue_us < 1_000_000,
        "queued {} us behind a cancelled job",
        reply.queue_us
    );
    let cancelled = await_sample(
        &app,
        "holdup_cancelled_work_total{grpc_method=\"CpuBound\"}",
        1.0,
    )
    .await;
    assert_eq!(cancelled, 1.0);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_stops_the_work() {
    let app = spawn_with(|c| c.compute_threads = 1).await;
    let mut gone = client(app.addr).await;
    let call = tokio::spawn(async move { gone.cpu_bound(cpu(5_000)).await });
    tokio::time::sleep(ms(300)).await;
    call.abort(); // the client drops its call: HTTP/2 RST_STREAM
    let _ = call.await;

    let cancelled = await_sample(
        &app,
        "holdup_cancelled_work_total{grpc_method=\"CpuBound\"}",
        1.0,
    )
    .await;
    assert_eq!(cancelled, 1.0, "the server did not see the caller go");
    let started = Instant::now();
    client(app.addr).await.cpu_bound(cpu(10)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_releases_a_held_connection() {
    let mut app = spawn_with(|c| c.db.pool_size = 1).await;
    let mut request = Request::new(SlowBackendRequest {
        hold_ms: 5_000,
        query: Query::Point.into(),
        key: 1,
    });
    request.set_timeout(ms(200));
    app.client.slow_backend(request).await.unwrap_err();
    tokio::time::sleep(ms(100)).await;
    assert_eq!(app.sample("holdup_db_pool_in_use").await, 0.0);
    let reply = app
        .client
        .slow_backend(SlowBackendRequest {
            hold_ms: 10,
            query: Query::Point.into(),
            key: 1,
        })
        .await
        .expect("the connection is usable again (its transaction was rolled back)")
        .into_inner();
    assert!(
        reply.pool_wait_us < 1_000_000,
        "waited {} us",
        reply.pool_wait_us
    );
    assert_eq!(reply.rows, 1);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_compute_jobs_is_refused_at_once_while_fast_answers() {
    let app = spawn_with(|c| {
        c.compute_threads = 1;
        c.compute_queue = 2;
    })
    .await;
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut c = client(app.addr).await;
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let result = c.cpu_bound(cpu(400)).await;
            (result.map(drop), started.elapsed())
        }));
    }
    tokio::time::sleep(ms(100)).await;
    let started = Instant::now();
    client(app.addr)
        .await
        .fast(FastRequest::default())
        .await
        .unwrap();
    assert!(
        started.elapsed() < ms(250),
        "Fast took {:?} during the flood",
        started.elapsed()
    );

    let mut refused = 0;
    for call in calls {
        let (result, took) = call.await.unwrap();
        if let Err(status) = result {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status.message().contains("--compute-queue"),
                "{}",
                status.message()
            );
            assert!(took < ms(300), "a refusal took {took:?}");
            refused += 1;
        }
    }
    // One runs, two queue: at least five of eight are refused.
    assert!(refused >= 5, "only {refused} refused");
    assert!(app.sample("holdup_compute_rejected_total").await >= 5.0);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_rpc_limit_refuses_excess_sleepers() {
    let app = spawn_with(|c| c.limits.max_in_flight_per_rpc = 2).await;
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut c = client(app.addr).await;
        calls.push(tokio::spawn(async move {
            c.sleep(SleepRequest {
                mode: SleepMode::Async.into(),
                duration_ms: 300,
            })
            .await
        }));
    }
    let mut refused = 0;
    for call in calls {
        if let Err(status) = call.await.unwrap() {
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(status.message().contains("--max-in-flight-per-rpc"));
            refused += 1;
        }
    }
    assert_eq!(refused, 2);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_can_die_and_come_back() {
    let sim = SimulatorConfig {
        latency_ms: 1,
        ..SimulatorConfig::default()
    };
    let start_upstream = |addr| async move {
        let simulator = simulator::bind(addr, sim, Default::default())
            .await
            .expect("bind upstream");
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(
            simulator.run_until(stop.clone().cancelled_owned(), Duration::from_secs(1)),
        );
        (stop, task)
    };
    let addr = crate::common::free_port();
    let (stop, task) = start_upstream(addr).await;
    let mut app = spawn_with(|c| c.upstream = UpstreamTarget::Url(format!("http://{addr}"))).await;
    let call = UpstreamCallRequest {
        max_retries: Some(1),
        attempt_timeout_ms: Some(500),
        ..Default::default()
    };
    app.client.upstream_call(call).await.expect("upstream up");

    stop.cancel();
    task.await.unwrap().unwrap();
    let status = app.client.upstream_call(call).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("2 attempt"),
        "{}",
        status.message()
    );
    app.client
        .fast(FastRequest::default())
        .await
        .expect("still serving");

    let (stop, task) = start_upstream(addr).await;
    let reply = app
        .client
        .upstream_call(call)
        .await
        .expect("recovered")
        .into_inner();
    assert_eq!(reply.upstream_status, 200);
    stop.cancel();
    task.await.unwrap().unwrap();
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_not_fatal() {
    let dead = crate::common::free_port();
    let mut app = spawn_with(|c| {
        c.db.database = Database::Url(format!("postgres://holdup@{dead}/holdup"));
        c.db.acquire_timeout = ms(500);
    })
    .await;
    let started = Instant::now();
    let status = app
        .client
        .slow_backend(SlowBackendRequest {
            hold_ms: 1,
            query: Query::Point.into(),
            key: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("database"),
        "{}",
        status.message()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    app.client
        .fast(FastRequest::default())
        .await
        .expect("still serving");
    app.shutdown().await.unwrap();
}

/// An `--upstream-url` that answers with a reply far larger than the simulator's (here 1 MiB
/// of valid JSON) is not read into memory whole: the attempt fails as an HTTP error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upstream_reply_is_not_read_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        // Bounded: the test makes one call with no retry.
        for _ in 0..4 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let pad = "a".repeat(1 << 20);
            let body = format!(r#"{{"served_us":1,"stalled":false,"pad":"{pad}"}}"#);
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        }
    });
    let mut app = spawn_with(|c| c.upstream = UpstreamTarget::Url(format!("http://{addr}"))).await;
    let status = app
        .client
        .upstream_call(UpstreamCallRequest {
            max_retries: Some(0),
            attempt_timeout_ms: Some(5_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("HTTP 200"), "{status:?}");
    upstream.abort();
    app.shutdown().await.unwrap();
}
