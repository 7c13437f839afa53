//! The core claim: work that blocks a runtime worker delays everybody else, and the delay shows
//! in the victim's own `scheduled_us`; offloaded work and awaited waits do not.
//!
//! Bounds are generous on purpose (2 shared cores): the blocked case must cost the probe at
//! least half the blocking time, the fixed cases well under half.

use std::{
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use crate::common::{TestApp, client, diagnostics, ms, spawn_app, spawn_with};
use holdup::proto::{
    CpuBoundRequest, CpuMode, Diagnostics, FastRequest, SleepMode, SleepRequest,
    lab_client::LabClient,
};
use tonic::transport::Channel;

type Client = LabClient<Channel>;
/// A pressure call; it ends with the delay split of its reply.
type Call = Pin<Box<dyn Future<Output = Diagnostics> + Send>>;

/// What one probe under pressure saw.
struct Probed {
    /// The probe's latency at the client.
    elapsed: Duration,
    /// The probe's own delay split.
    probe: Diagnostics,
    /// The verdicts of the pressure calls.
    pressure_verdicts: Vec<String>,
}

/// How long each pressure call blocks or waits.
const PRESSURE_MS: u64 = 600;
/// Half of it: the line between "was delayed" and "was not".
const HALF: Duration = Duration::from_millis(PRESSURE_MS / 2);

/// Starts two pressure calls (one per lab worker) on connections of their own, waits until
/// they are surely running, then times one `Fast` call.
async fn probe_under(app: &TestApp, pressure: impl Fn(Client) -> Call) -> Probed {
    let mut running = Vec::new();
    for _ in 0..2 {
        running.push(tokio::spawn(pressure(client(app.addr).await)));
    }
    tokio::time::sleep(ms(100)).await;
    let mut probe = client(app.addr).await;
    let started = Instant::now();
    let reply = probe
        .fast(FastRequest {
            message: "probe".into(),
        })
        .await
        .expect("Fast answers")
        .into_inner();
    let elapsed = started.elapsed();
    let mut pressure_verdicts = Vec::new();
    for task in running {
        pressure_verdicts.push(task.await.expect("pressure call finished").verdict);
    }
    Probed {
        elapsed,
        probe: diagnostics(&reply.diagnostics).clone(),
        pressure_verdicts,
    }
}

fn cpu(mode: CpuMode) -> impl Fn(Client) -> Call {
    move |mut c| {
        Box::pin(async move {
            let reply = c
                .cpu_bound(CpuBoundRequest {
                    mode: mode.into(),
                    work_ms: PRESSURE_MS as u32,
                    iterations: 0,
                })
                .await
                .expect("CpuBound answers")
                .into_inner();
            diagnostics(&reply.diagnostics).clone()
        })
    }
}

fn sleep(mode: SleepMode) -> impl Fn(Client) -> Call {
    move |mut c| {
        Box::pin(async move {
            let reply = c
                .sleep(SleepRequest {
                    mode: mode.into(),
                    duration_ms: PRESSURE_MS as u32,
                })
                .await
                .expect("Sleep answers")
                .into_inner();
            diagnostics(&reply.diagnostics).clone()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_cpu_delays_fast_and_scheduled_time_shows_it() {
    let _serial = crate::common::serial().await;
    let app = spawn_app().await;
    let Probed {
        elapsed,
        probe: d,
        pressure_verdicts,
    } = probe_under(&app, cpu(CpuMode::Inline)).await;
    assert!(
        elapsed >= HALF,
        "Fast took only {elapsed:?} beside inline CPU work"
    );
    assert!(
        Duration::from_micros(d.scheduled_us) >= HALF / 2,
        "scheduled_us {} does not show the wait for a worker",
        d.scheduled_us
    );
    assert_eq!(d.verdict, "runtime-contention");
    assert_eq!(pressure_verdicts, ["own-cpu", "own-cpu"]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_sleep_delays_fast() {
    let _serial = crate::common::serial().await;
    let app = spawn_app().await;
    let Probed {
        elapsed,
        probe: d,
        pressure_verdicts,
    } = probe_under(&app, sleep(SleepMode::Blocking)).await;
    assert!(
        elapsed >= HALF,
        "Fast took only {elapsed:?} beside blocking sleeps"
    );
    assert!(Duration::from_micros(d.scheduled_us) >= HALF / 2, "{d:?}");
    assert_eq!(d.verdict, "runtime-contention", "{d:?}");
    assert_eq!(pressure_verdicts, ["blocking-call", "blocking-call"]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offloaded_cpu_and_async_sleep_leave_fast_alone() {
    let _serial = crate::common::serial().await;
    let app = spawn_app().await;
    for (what, probed, verdict) in [
        (
            "BLOCKING_POOL",
            probe_under(&app, cpu(CpuMode::BlockingPool)).await,
            "offloaded-cpu",
        ),
        (
            "COMPUTE_POOL",
            probe_under(&app, cpu(CpuMode::ComputePool)).await,
            "offloaded-cpu",
        ),
        (
            "Sleep ASYNC",
            probe_under(&app, sleep(SleepMode::Async)).await,
            "timer",
        ),
    ] {
        let Probed {
            elapsed,
            probe: d,
            pressure_verdicts,
        } = probed;
        assert!(elapsed < HALF, "Fast took {elapsed:?} beside {what}");
        assert!(
            Duration::from_micros(d.scheduled_us) < HALF,
            "{what}: {d:?}"
        );
        // The probe's verdict may still be runtime-contention for a few milliseconds: two
        // offloaded threads hashing take both cores from the lab workers too.
        assert_eq!(pressure_verdicts, [verdict, verdict], "{what}");
    }
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pool_makes_the_second_caller_queue_for_the_first_ones_hold() {
    let _serial = crate::common::serial().await;
    let app = spawn_with(|c| c.db.pool_size = 1).await;
    crate::common::two_holds_on_one_connection(app.addr, 400).await;
    app.shutdown().await.expect("clean shutdown");
}
