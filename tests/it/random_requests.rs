//! A property test over the real server: random requests, every field drawn from in and out
//! of its range, never panic the server, and every refusal is INVALID_ARGUMENT naming a field.
//! The seed is printed; `HOLDUP_FUZZ_SEED=N` replays a run.

use crate::common::spawn_with;
use holdup::{
    config::{SimulatorConfig, UpstreamTarget},
    proto::{CpuBoundRequest, FastRequest, SleepRequest, SlowBackendRequest, UpstreamCallRequest},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::Code;

const CALLS: usize = 400;

/// Fields of each request, so a refusal can be checked to name one of them.
const FIELDS: [&str; 14] = [
    "message",
    "mode",
    "work_ms",
    "iterations",
    "duration_ms",
    "hold_ms",
    "query",
    "key",
    "latency_ms",
    "jitter_ms",
    "error_rate",
    "stall_rate",
    "attempt_timeout_ms",
    "max_retries",
];

/// Mostly small values around the (lowered) caps, sometimes anything at all.
fn u32_near(rng: &mut StdRng, cap: u32) -> u32 {
    match rng.random_range(0..10) {
        0 => rng.random(),
        1 => cap + 1,
        _ => rng.random_range(0..=cap.saturating_add(2)),
    }
}

fn rate(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..8) {
        0 => f64::NAN,
        1 => -rng.random::<f64>(),
        2 => 1.0 + rng.random::<f64>(),
        _ => rng.random(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_break_the_server() {
    let seed = std::env::var("HOLDUP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("HOLDUP_FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // Low caps keep every valid call short.
    let mut app = spawn_with(|c| {
        c.limits.max_cpu_ms = 5;
        c.limits.max_hold_ms = 5;
        c.limits.max_sleep_ms = 5;
        c.limits.max_retries = 2;
        c.db.seed_rows = 50;
        // A stalled upstream call hangs this long, not the default 30 s.
        c.upstream = UpstreamTarget::InProcess(SimulatorConfig {
            stall_ms: 20,
            ..SimulatorConfig::default()
        });
    })
    .await;
    let mut by_code = std::collections::BTreeMap::<String, usize>::new();
    // Calls that asked the upstream to stall some of its answers, with a valid rate.
    let mut stalling = 0;
    for i in 0..CALLS {
        let c = &mut app.client;
        let opt = |rng: &mut StdRng, v: u32| rng.random_bool(0.7).then_some(v);
        let result = match rng.random_range(0..5) {
            0 => c
                .fast(FastRequest {
                    message: "x".repeat(rng.random_range(0..1_100)),
                })
                .await
                .map(drop),
            1 => {
                let (work_ms, iterations) = match rng.random_range(0..4) {
                    0 => (u32_near(&mut rng, 5), 0),
                    1 => (0, rng.random_range(0..3_000)),
                    2 => (u32_near(&mut rng, 5), rng.random_range(0..3_000)),
                    _ => (0, rng.random()),
                };
                c.cpu_bound(CpuBoundRequest {
                    mode: rng.random_range(-1..6),
                    work_ms,
                    iterations,
                })
                .await
                .map(drop)
            }
            2 => c
                .sleep(SleepRequest {
                    mode: rng.random_range(-1..4),
                    duration_ms: u32_near(&mut rng, 5),
                })
                .await
                .map(drop),
            3 => c
                .slow_backend(SlowBackendRequest {
                    hold_ms: u32_near(&mut rng, 5),
                    query: rng.random_range(-1..4),
                    key: u32_near(&mut rng, 60),
                })
                .await
                .map(drop),
            _ => {
                let latency = u32_near(&mut rng, 3);
                let jitter = u32_near(&mut rng, 3);
                let retries = u32_near(&mut rng, 2);
                let timeout = u32_near(&mut rng, 50);
                let stall_rate = rng.random_bool(0.3).then(|| rate(&mut rng));
                if stall_rate.is_some_and(|r| r > 0.0 && r <= 1.0) {
                    stalling += 1;
                }
                c.upstream_call(UpstreamCallRequest {
                    latency_ms: opt(&mut rng, latency.min(70_000)),
                    jitter_ms: opt(&mut rng, jitter.min(70_000)),
                    error_rate: rng.random_bool(0.5).then(|| rate(&mut rng)),
                    stall_rate,
                    attempt_timeout_ms: opt(&mut rng, timeout),
                    max_retries: opt(&mut rng, retries),
                    new_client: rng.random_bool(0.2),
                })
                .await
                .map(drop)
            }
        };
        let code = match &result {
            Ok(()) => Code::Ok,
            Err(status) => status.code(),
        };
        *by_code.entry(format!("{code:?}")).or_default() += 1;
        if let Err(status) = result {
            match status.code() {
                Code::InvalidArgument => {
                    let field = status.message().split(':').next().unwrap_or_default();
                    assert!(
                        FIELDS.contains(&field),
                        "call {i}: refusal names no field: {status:?}"
                    );
                }
                // A random error_rate makes the simulated upstream fail for real.
                Code::Unavailable => assert!(
                    status.message().contains("upstream"),
                    "call {i}: {status:?}"
                ),
                // Rounds that ran past the (low) CPU cap.
                Code::ResourceExhausted => assert!(
                    status.message().starts_with("iterations: ")
                        && status.message().contains("--max-cpu-ms"),
                    "call {i}: {status:?}"
                ),
                _ => panic!("call {i} (seed {seed}): unexpected {status:?}"),
            }
        }
    }
    eprintln!("status counts: {by_code:?}; {stalling} calls with a stall rate");
    assert!(stalling > 0, "no call asked for stalls (seed {seed})");
    assert!(
        by_code.get("Ok").copied().unwrap_or(0) > 0,
        "no call succeeded: {by_code:?}"
    );
    assert!(
        by_code.get("InvalidArgument").copied().unwrap_or(0) > 0,
        "{by_code:?}"
    );
    app.client
        .fast(FastRequest::default())
        .await
        .expect("the server still answers");
    app.shutdown().await.unwrap();
}
