//! `holdup load` as a user runs it: the real binary against a real server on a random
//! loopback port, its JSON report checked.
//!
//! Bounds are generous (two shared cores): the checks are about counts, and about a one
//! second stall being impossible to miss, not about milliseconds.

use std::{process::Output, time::Duration};

use crate::common::{client, ms, spawn_app};
use holdup::{
    load::report::LoadReport,
    proto::{SleepMode, SleepRequest},
};
use tokio::process::Command;

/// How long a stall lasts: both lab workers sleep on their threads this long.
const STALL_MS: u32 = 1_000;

fn holdup() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_holdup"));
    command.kill_on_drop(true).env_remove("RUST_LOG");
    command
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "holdup load failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[track_caller]
fn report(output: &Output) -> LoadReport {
    let stdout = succeeded(output);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{stdout}"))
}

async fn run(args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), holdup().args(args).output())
        .await
        .expect("holdup load ends within a minute")
        .expect("holdup load starts")
}

/// Blocks both lab workers of the server at `addr` with `std::thread::sleep` for `STALL_MS`.
async fn stall(addr: std::net::SocketAddr) {
    let mut calls = Vec::new();
    for _ in 0..2 {
        let mut c = client(addr).await;
        calls.push(tokio::spawn(async move {
            c.sleep(SleepRequest {
                mode: SleepMode::Blocking.into(),
                duration_ms: STALL_MS,
            })
            .await
            .expect("blocking sleep answers");
        }));
    }
    for call in calls {
        call.await.expect("stall call task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_offered_rate_and_counts_every_call() {
    let _serial = crate::common::serial().await;
    let app = spawn_app().await;
    let target = format!("http://{}", app.addr);

    let output = run(&[
        "load",
        "--target",
        &target,
        "--rate",
        "100",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--probe-rate",
        "20",
        "--json",
    ])
    .await;

    let report = report(&output);
    let main = &report.main;
    assert_eq!(main.rpc, "Fast");
    assert_eq!(main.offered_rate, Some(100.0));
    assert_eq!(main.due, 200, "2 s at 100/s");
    assert_eq!(main.sent, 200);
    assert_eq!(main.unsent, 0);
    assert_eq!(main.ok, 200, "errors: {:?}", main.errors);
    assert!(main.errors.is_empty());
    assert_eq!(main.completed, 200);
    let share = main.achieved_share().expect("open loop");
    assert!(
        (0.85..=1.01).contains(&share),
        "achieved {share} of offered"
    );
    assert!(
        main.latency.p50_ms > 0.0 && main.latency.p50_ms < 100.0,
        "{:?}",
        main.latency
    );
    assert!(main.latency.p99_ms <= main.latency.max_ms);
    assert!(!main.curve.is_empty());
    let split = main.split.as_ref().expect("replies carry diagnostics");
    assert_eq!(split.replies, 200);

    let probe = report.probe.as_ref().expect("probe requested");
    assert_eq!(probe.rpc, "Fast");
    assert_eq!(probe.due, 40, "2 s at 20/s");
    assert_eq!(probe.ok, 40);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_open_loop_p99_and_as_a_rate_drop_in_the_closed_loop() {
    let _serial = crate::common::serial().await;
    let app = spawn_app().await;
    let target = format!("http://{}", app.addr);
    let base = [
        "load",
        "--target",
        &target,
        "--duration",
        "3s",
        "--warmup",
        "500ms",
        "--json",
    ];

    // Arrange + act: each run gets the same one-second stall, well inside its window.
    let open = spawn_run(&base, &["--rate", "200"]);
    tokio::time::sleep(ms(1_500)).await;
    stall(app.addr).await;
    let open = report(&open.await.expect("open-loop run"));

    let closed = spawn_run(&base, &["--concurrency", "2"]);
    tokio::time::sleep(ms(1_500)).await;
    stall(app.addr).await;
    let closed = report(&closed.await.expect("closed-loop run"));

    // The open loop kept sending during the stall and timed each call from when it was due:
    // a third of its calls were held, so its p99 is most of the stall.
    let stall_ms = f64::from(STALL_MS);
    assert!(
        open.main.latency.p99_ms >= stall_ms / 2.0,
        "open-loop p99 {} ms hides a {stall_ms} ms stall",
        open.main.latency.p99_ms
    );
    assert!(
        open.main.latency.p90_ms >= stall_ms / 4.0,
        "{:?}",
        open.main.latency
    );
    // Every due call was answered; when the machine is loaded from outside, the stall lasts
    // longer and one in a hundred may still be in the queue or past its deadline at the end.
    assert!(
        open.main.ok * 100 >= open.main.due * 99,
        "only {} of {} due calls answered after the stall: {:?}",
        open.main.ok,
        open.main.due,
        open.main.errors
    );

    // The closed loop waited with the server: only its two callers saw the stall, so its p99
    // barely moves...
    assert!(
        closed.main.latency.p99_ms < open.main.latency.p99_ms,
        "closed {:?} vs open {:?}",
        closed.main.latency,
        open.main.latency
    );
    // ...but the report does not hide it: the stalled calls are its maximum, and its rate fell
    // to nothing for most of a second.
    assert!(
        closed.main.latency.max_ms >= stall_ms * 0.7,
        "{:?}",
        closed.main.latency
    );
    assert!(
        closed.main.timeline.longest_gap_ms >= stall_ms * 0.7,
        "{:?}",
        closed.main.timeline
    );
    assert!(closed.main.rate_dropped(), "{:?}", closed.main.timeline);
    assert!(
        closed.main.timeline.min_rate <= closed.main.mean_bucket_rate() * 0.1,
        "{:?}",
        closed.main.timeline
    );
    assert!(
        closed
            .main
            .warnings
            .iter()
            .any(|w| w.contains("replies fell to")),
        "{:?}",
        closed.main.warnings
    );
    app.shutdown().await.expect("clean shutdown");
}

/// Starts `holdup` with `base` and `extra` arguments in the background.
fn spawn_run(base: &[&str], extra: &[&str]) -> tokio::task::JoinHandle<Output> {
    let args: Vec<String> = base.iter().chain(extra).map(|a| (*a).to_owned()).collect();
    tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_table_names_the_rpc_and_its_percentiles() {
    let _serial = crate::common::serial().await;
    let app = spawn_app().await;
    let target = format!("http://{}", app.addr);

    let output = run(&[
        "load",
        "--target",
        &target,
        "cpu",
        "--mode",
        "compute-pool",
        "--work-ms",
        "5",
        "--concurrency",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--probe-rate",
        "50",
    ])
    .await;

    let table = succeeded(&output);
    for expected in [
        "CpuBound COMPUTE_POOL work_ms=5",
        "closed loop, 2 concurrent",
        "probe",
        "p99.9",
        "delay split",
        "verdict offloaded-cpu",
    ] {
        assert!(table.contains(expected), "no {expected:?} in\n{table}");
    }
    // Output is piped here: no progress bar may leak into it.
    assert!(!String::from_utf8_lossy(&output.stderr).contains('%'));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_flag_for_another_rpc_exits_with_a_usage_error() {
    let output = run(&["load", "sleep", "--work-ms", "5"]).await;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--work-ms") && stderr.contains("holdup load sleep"),
        "{stderr}"
    );
}
