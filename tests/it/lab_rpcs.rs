//! Every RPC and every mode through the real tonic client, and bad input for every field.

use std::time::{Duration, Instant};

use crate::common::{diagnostics, ms, spawn_app, spawn_with};
use holdup::{
    diagnose::NOT_LATE_BELOW,
    proto::{
        CpuBoundRequest, CpuMode, FastRequest, Query, SleepMode, SleepRequest, SlowBackendRequest,
        UpstreamCallRequest,
    },
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request};

/// The server stops at the deadline too, but the tonic client's own timer fires at the same
/// instant and reports its expiry as CANCELLED "Timeout expired"; either is a deadline.
#[track_caller]
fn assert_deadline(status: &tonic::Status) {
    let client_expiry = status.code() == Code::Cancelled && status.message() == "Timeout expired";
    assert!(
        status.code() == Code::DeadlineExceeded || client_expiry,
        "not a deadline: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_echoes_and_is_not_late() {
    let _serial = crate::common::serial().await;
    let mut app = spawn_app().await;
    let not_late_below_us = u64::try_from(NOT_LATE_BELOW.as_micros()).unwrap();
    // On a shared machine one call may be descheduled past the bound, and a debug build spends
    // a few hundred microseconds of its own on each call (decoding, handing over to the lab
    // runtime, replying); among several, the quick ones must be called not late and the slow
    // ones must name a cause.
    let mut quick = 0;
    for n in 0..20 {
        let message = format!("hello {n}");
        let reply = app
            .client
            .fast(FastRequest {
                message: message.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.message, message);
        let d = diagnostics(&reply.diagnostics);
        assert!(d.total_us > 0, "{d:?}");
        // The request's own future runs the handler inline: once, and once more when the
        // message's frame arrives after its headers were dispatched (more with the console
        // on, when the handler is a task of its own).
        assert!((1..=5).contains(&d.polls), "{d:?}");
        if d.total_us < not_late_below_us {
            quick += 1;
            assert_eq!(
                d.verdict, "none",
                "a {} µs reply is not late: {d:?}",
                d.total_us
            );
        } else {
            assert_ne!(d.verdict, "none", "a late reply names its cause: {d:?}");
        }
    }
    assert!(
        quick >= 5,
        "only {quick} of 20 Fast calls took under {not_late_below_us} µs"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bound_every_mode_returns_the_verifiable_digest() {
    let mut app = spawn_app().await;
    let iterations = 3_000u64;
    let mut expected: [u8; 32] = Sha256::digest(b"holdup").into();
    for _ in 0..iterations {
        expected = Sha256::digest(expected).into();
    }
    for mode in [
        CpuMode::Inline,
        CpuMode::BlockingPool,
        CpuMode::ComputePool,
        CpuMode::Cooperative,
    ] {
        let reply = app
            .client
            .cpu_bound(CpuBoundRequest {
                mode: mode.into(),
                work_ms: 0,
                iterations,
            })
            .await
            .unwrap_or_else(|s| panic!("{mode:?}: {s}"))
            .into_inner();
        assert_eq!(reply.digest, hex::encode(expected), "{mode:?}");
        assert_eq!(reply.iterations, iterations);
        assert_eq!(reply.mode(), mode);
        let d = diagnostics(&reply.diagnostics);
        match mode {
            // Inline work happens in one poll; cooperative work in many.
            CpuMode::Inline => assert!(d.max_poll_us * 10 >= reply.work_us * 9, "{d:?}"),
            // Two slices at least, with a yield between: a poll each.
            CpuMode::Cooperative => assert!(d.polls >= 2, "{d:?}"),
            _ => assert!(
                d.busy_us < reply.work_us,
                "offloaded work is not own CPU: {d:?}"
            ),
        }
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bound_time_budget_runs_about_that_long() {
    let mut app = spawn_app().await;
    let reply = app
        .client
        .cpu_bound(CpuBoundRequest {
            mode: CpuMode::Inline.into(),
            work_ms: 100,
            iterations: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.work_us >= 100_000, "{}", reply.work_us);
    let d = diagnostics(&reply.diagnostics);
    assert_eq!(d.verdict, "own-cpu");
    assert!(d.max_poll_us >= 100_000, "{d:?}");
    app.shutdown().await.unwrap();
}

/// Rounds are capped by `--max-cpu-ms` as time is: an operator who lowers the cap is not
/// bypassed by asking for work in iterations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterations_stop_at_the_cpu_cap() {
    let mut app = spawn_with(|c| c.limits.max_cpu_ms = 30).await;
    let started = Instant::now();
    let status = app
        .client
        .cpu_bound(CpuBoundRequest {
            mode: CpuMode::Cooperative.into(),
            work_ms: 0,
            iterations: holdup::lab::cpu::MAX_ITERATIONS,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("iterations: ")
            && status.message().contains("--max-cpu-ms (30 ms)"),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped at the cap"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_both_modes() {
    let mut app = spawn_app().await;
    for (mode, verdict) in [
        (SleepMode::Async, "timer"),
        (SleepMode::Blocking, "blocking-call"),
    ] {
        let reply = app
            .client
            .sleep(SleepRequest {
                mode: mode.into(),
                duration_ms: 50,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.slept_us >= 50_000);
        let d = diagnostics(&reply.diagnostics);
        assert_eq!(d.verdict, verdict, "{mode:?}: {d:?}");
        match mode {
            SleepMode::Async => assert!(d.idle_us >= 40_000, "{d:?}"),
            _ => assert!(d.busy_us >= 40_000, "{d:?}"),
        }
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_every_query() {
    let mut app = spawn_app().await;
    for (query, key, rows) in [
        (Query::None, 0, 0),
        (Query::Point, 7, 1),
        (Query::Scan, 7, 2),
    ] {
        let reply = app
            .client
            .slow_backend(SlowBackendRequest {
                hold_ms: 50,
                query: query.into(),
                key,
            })
            .await
            .unwrap_or_else(|s| panic!("{query:?}: {s}"))
            .into_inner();
        // 2000 seeded rows in 1000 buckets: two rows per bucket.
        assert_eq!(reply.rows, rows, "{query:?}");
        assert_eq!(reply.backend, "sqlite");
        assert!(reply.hold_us >= 50_000);
        assert_eq!(diagnostics(&reply.diagnostics).verdict, "backend");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_call_shared_and_new_client() {
    let mut app = spawn_app().await;
    for new_client in [false, true] {
        let reply = app
            .client
            .upstream_call(UpstreamCallRequest {
                latency_ms: Some(50),
                error_rate: Some(0.0),
                new_client,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.attempts, 1);
        assert_eq!(reply.upstream_status, 200);
        assert_eq!(reply.client, if new_client { "new" } else { "shared" });
        assert!(reply.upstream_served_us >= 50_000);
        assert_eq!(diagnostics(&reply.diagnostics).verdict, "upstream");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_retried_then_unavailable() {
    let mut app = spawn_app().await;
    let status = app
        .client
        .upstream_call(UpstreamCallRequest {
            latency_ms: Some(1),
            error_rate: Some(1.0),
            max_retries: Some(2),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("3 attempt"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("HTTP 503"),
        "{}",
        status.message()
    );

    // A stalled upstream: each attempt times out.
    let started = Instant::now();
    let status = app
        .client
        .upstream_call(UpstreamCallRequest {
            stall_rate: Some(1.0),
            attempt_timeout_ms: Some(100),
            max_retries: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("timeout"), "{}", status.message());
    assert!(started.elapsed() >= ms(200));
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_callers_deadline() {
    let mut app = spawn_app().await;
    let mut request = Request::new(UpstreamCallRequest {
        stall_rate: Some(1.0),
        attempt_timeout_ms: Some(10_000),
        max_retries: Some(5),
        ..Default::default()
    });
    request.set_timeout(ms(300));
    let started = Instant::now();
    let status = app.client.upstream_call(request).await.unwrap_err();
    assert_deadline(&status);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_stops_a_long_sleep() {
    let mut app = spawn_app().await;
    let mut request = Request::new(SleepRequest {
        mode: SleepMode::Async.into(),
        duration_ms: 5_000,
    });
    request.set_timeout(ms(200));
    let started = Instant::now();
    let status = app.client.sleep(request).await.unwrap_err();
    assert_deadline(&status);
    assert!(started.elapsed() < Duration::from_secs(2));
    app.shutdown().await.unwrap();
}

/// Every field out of range: INVALID_ARGUMENT naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    let mut app = spawn_app().await;
    let c = &mut app.client;
    let sleep = |mode: i32, duration_ms| SleepRequest { mode, duration_ms };
    let cpu = |mode: i32, work_ms, iterations| CpuBoundRequest {
        mode,
        work_ms,
        iterations,
    };
    let backend = |hold_ms, query: i32, key| SlowBackendRequest {
        hold_ms,
        query,
        key,
    };
    let up = UpstreamCallRequest::default;
    let inline = CpuMode::Inline as i32;
    let point = Query::Point as i32;
    let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "message",
            c.fast(FastRequest {
                message: "x".repeat(1025),
            })
            .await
            .map(drop),
        ),
        ("mode", c.sleep(sleep(0, 10)).await.map(drop)),
        ("mode", c.sleep(sleep(99, 10)).await.map(drop)),
        ("duration_ms", c.sleep(sleep(1, 1_000_000)).await.map(drop)),
        ("mode", c.cpu_bound(cpu(0, 10, 0)).await.map(drop)),
        ("mode", c.cpu_bound(cpu(42, 10, 0)).await.map(drop)),
        ("work_ms", c.cpu_bound(cpu(inline, 0, 0)).await.map(drop)),
        ("work_ms", c.cpu_bound(cpu(inline, 10, 10)).await.map(drop)),
        (
            "work_ms",
            c.cpu_bound(cpu(inline, 10_001, 0)).await.map(drop),
        ),
        (
            "iterations",
            c.cpu_bound(cpu(inline, 0, 100_000_001)).await.map(drop),
        ),
        (
            "hold_ms",
            c.slow_backend(backend(10_001, point, 1)).await.map(drop),
        ),
        ("query", c.slow_backend(backend(0, 9, 1)).await.map(drop)),
        ("key", c.slow_backend(backend(0, point, 0)).await.map(drop)),
        (
            "key",
            c.slow_backend(backend(0, point, 2_001)).await.map(drop),
        ),
        (
            "key",
            c.slow_backend(backend(0, Query::Scan as i32, 1_000))
                .await
                .map(drop),
        ),
        (
            "latency_ms",
            c.upstream_call(UpstreamCallRequest {
                latency_ms: Some(60_001),
                ..up()
            })
            .await
            .map(drop),
        ),
        (
            "jitter_ms",
            c.upstream_call(UpstreamCallRequest {
                jitter_ms: Some(60_001),
                ..up()
            })
            .await
            .map(drop),
        ),
        (
            "error_rate",
            c.upstream_call(UpstreamCallRequest {
                error_rate: Some(1.5),
                ..up()
            })
            .await
            .map(drop),
        ),
        (
            "error_rate",
            c.upstream_call(UpstreamCallRequest {
                error_rate: Some(f64::NAN),
                ..up()
            })
            .await
            .map(drop),
        ),
        (
            "stall_rate",
            c.upstream_call(UpstreamCallRequest {
                stall_rate: Some(-0.1),
                ..up()
            })
            .await
            .map(drop),
        ),
        (
            "attempt_timeout_ms",
            c.upstream_call(UpstreamCallRequest {
                attempt_timeout_ms: Some(0),
                ..up()
            })
            .await
            .map(drop),
        ),
        (
            "max_retries",
            c.upstream_call(UpstreamCallRequest {
                max_retries: Some(6),
                ..up()
            })
            .await
            .map(drop),
        ),
    ];
    for (field, result) in cases {
        let status = result.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "message does not name {field}: {}",
            status.message()
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_are_raised_by_config() {
    let mut app = spawn_with(|c| c.limits.max_sleep_ms = 60_000).await;
    let mut request = Request::new(SleepRequest {
        mode: SleepMode::Async.into(),
        duration_ms: 45_000,
    });
    // Accepted (not INVALID_ARGUMENT): it runs until the deadline stops it.
    request.set_timeout(ms(100));
    let status = app.client.sleep(request).await.unwrap_err();
    assert_deadline(&status);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut app = spawn_app().await;
    let mut client = app.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .sleep(SleepRequest {
                mode: SleepMode::Async.into(),
                duration_ms: 400,
            })
            .await
    });
    tokio::time::sleep(ms(100)).await;
    app.begin_shutdown();
    let reply = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert!(reply.into_inner().slept_us >= 400_000);
    app.shutdown().await.expect("server exits cleanly");
}
