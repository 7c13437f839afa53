//! tokio-console as a user runs it: the real TUI (built by `tests/tools.sh`) in a real
//! terminal (tmux) against `holdup serve`, read off the screen. The request tasks of
//! `CpuBound INLINE` calls appear by name with their busy time, and one that holds its worker
//! for more than a second raises the console's own "never yielded" warning while it runs.
//!
//! The console's gRPC API is checked in detail by `tests/observability.rs`; this is the
//! screen a user looks at.

use std::time::Duration;

use crate::common::{
    client, free_port, ms,
    process::{self, KillOnDrop},
    require_tool, serial,
    tmux::Tmux,
};
use holdup::proto::{CpuBoundRequest, CpuMode};

/// How a developer gets the TUI (CI: `tests/run.sh` does it).
const INSTALL: &str = "tests/tools.sh tokio-console, then put target/tools/cargo/bin on PATH";

/// The short calls: well under the console's one-second "never yielded" threshold.
const SHORT_MS: u32 = 300;
/// The long call: long enough that the console, which updates once a second, sees it still
/// running past the threshold on a loaded machine.
const LONG_MS: u32 = 4_000;

/// The task name every request of these calls carries: `CpuBound INLINE`, possibly followed
/// by more (a short trace id).
const TASK_NAME: &str = "CpuBound INLINE";

/// The console's summary line for its "never yielded" lint (`warnings.rs` in tokio-console):
/// one task past the default threshold of one second.
const NEVER_YIELDED: &str = "1 tasks have never yielded (threshold 1000ms)";

/// One task row of the console's task list.
#[derive(Debug)]
struct Row {
    total: Duration,
    busy: Duration,
    polls: u64,
}

/// The console's rendering of a duration: `1.02s`, `300.51ms`, `12.00µs` (`us` in ASCII).
fn duration(text: &str) -> Option<Duration> {
    let (number, scale) = [
        ("ms", 1e-3),
        ("µs", 1e-6),
        ("us", 1e-6),
        ("ns", 1e-9),
        ("s", 1.0),
    ]
    .iter()
    .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, *scale)))?;
    let value: f64 = number.parse().ok()?;
    Some(Duration::from_secs_f64(value * scale))
}

/// The rows of tasks named [`TASK_NAME`]…: after the name come Total, Busy, Sched, Idle, Polls.
fn rows(screen: &str) -> Vec<Row> {
    screen
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(TASK_NAME)?;
            let mut fields = rest.split_whitespace().peekable();
            // A name suffix (such as a trace id) is not a duration.
            if fields.peek().is_some_and(|f| duration(f).is_none()) {
                fields.next();
            }
            let total = duration(fields.next()?)?;
            let busy = duration(fields.next()?)?;
            let _scheduled = fields.next()?;
            let _idle = fields.next()?;
            let polls = fields.next()?.parse().ok()?;
            Some(Row { total, busy, polls })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_inline_tasks_and_warns_about_the_one_that_never_yields() {
    // Four and a half seconds of CPU on a runtime worker: nothing else should be measured meanwhile.
    let _serial = serial().await;
    let Some(console) = require_tool("tokio-console", INSTALL) else {
        return;
    };
    let console_addr = free_port().to_string();
    // The console on (serve's default) at a port of this test's own.
    let serve = process::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--console-addr",
            &console_addr,
            "--metrics-addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--seed-rows",
            "100",
        ],
        &[],
        None,
    );
    let addr = serve.addr_after("holdup listening on ");
    let _serve = KillOnDrop(Some(serve.child));
    // No user or working-directory configuration: XDG_CONFIG_HOME points nowhere.
    let nowhere = std::env::temp_dir().join("holdup-test-no-console-config");
    let Some(tui) = Tmux::start(
        &console,
        &[
            "--no-colors",
            "--lang",
            "en_US.UTF-8",
            &format!("http://{console_addr}"),
        ],
        &[(
            "XDG_CONFIG_HOME",
            nowhere.to_str().expect("a UTF-8 temp dir"),
        )],
        220,
        50,
    ) else {
        return;
    };
    tui.wait_for("the task list", Duration::from_secs(30), |screen| {
        screen.contains("Busy").then_some(())
    })
    .await;

    let mut lab = client(addr).await;
    for _ in 0..2 {
        lab.cpu_bound(CpuBoundRequest {
            mode: CpuMode::Inline.into(),
            work_ms: SHORT_MS,
            iterations: 0,
        })
        .await
        .expect("CpuBound answers");
    }
    let mut long = lab.clone();
    let long = tokio::spawn(async move {
        long.cpu_bound(CpuBoundRequest {
            mode: CpuMode::Inline.into(),
            work_ms: LONG_MS,
            iterations: 0,
        })
        .await
    });

    // While the long call runs: the warning, for one task, and the long task's row still in
    // its first poll past one second. (Its Warn column counts other lints as well, such as
    // the future's size: the summary line is the never-yielded one.)
    tui.wait_for(
        "the never-yielded warning while the long CpuBound INLINE task runs",
        Duration::from_secs(20),
        |screen| {
            let warned = screen.contains(NEVER_YIELDED);
            let running = rows(screen)
                .iter()
                .any(|r| r.busy >= ms(1_000) && r.polls <= 1);
            (warned && running).then_some(())
        },
    )
    .await;

    long.await
        .expect("the call task")
        .expect("the long CpuBound answers");
    // Once all three are done: each with at least its work as busy time, nearly all of it.
    let done = tui
        .wait_for(
            "three finished CpuBound INLINE tasks with their busy time",
            Duration::from_secs(20),
            |screen| {
                let rows = rows(screen);
                let short = rows
                    .iter()
                    .filter(|r| r.busy >= ms(u64::from(SHORT_MS)))
                    .count();
                let long = rows
                    .iter()
                    .filter(|r| r.busy >= ms(u64::from(LONG_MS)))
                    .count();
                (rows.len() == 3 && short == 3 && long == 1).then_some(rows)
            },
        )
        .await;
    for row in &done {
        assert!(
            row.busy.as_secs_f64() >= 0.8 * row.total.as_secs_f64(),
            "an INLINE task is busy for nearly all of its life: {row:?}"
        );
    }
    // The lint fires on running tasks only: with the long task done, it is gone, so it was
    // that task's.
    tui.wait_for(
        "the never-yielded warning gone with the long task",
        Duration::from_secs(10),
        |screen| (!screen.contains("tasks have never yielded")).then_some(()),
    )
    .await;
}
