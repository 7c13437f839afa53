//! Issue 13, item 2: tokio-console, on by default, sees a budget of new tasks a second. At
//! the lab's rates it shows every request task; above the budget, a sample, counted.
//!
//! Checked through the console's own gRPC API (what the tokio-console TUI reads) against a
//! real `holdup serve` child process: its budget is that process's alone, and the tonic
//! client here, whose own tasks live in this process, takes none of it. (Without a span
//! exporter the handler tasks are named `Fast`, without a trace id: they are told apart by
//! the console's task ids.)

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use console_api::{
    field::Value,
    instrument::{InstrumentRequest, Update, instrument_client::InstrumentClient},
};
use holdup::proto::FastRequest;
use tonic::Streaming;

use crate::common::{
    client,
    process::{self, KillOnDrop},
    sample,
};

/// The default budget (`DEFAULT_CONSOLE_BUDGET`), new tasks a second.
const BUDGET: f64 = holdup::telemetry::console_budget::DEFAULT_CONSOLE_BUDGET as f64;

/// A `holdup serve` child with its console on (the default), and its console's update stream.
struct ServedWithConsole {
    addr: SocketAddr,
    metrics: SocketAddr,
    updates: Streaming<Update>,
    guard: KillOnDrop,
}

impl ServedWithConsole {
    async fn start() -> Self {
        // Port 0: the banner must name the port the console really serves on.
        let mut args = process::serve_args(&["--console-addr", "127.0.0.1:0"]);
        args.retain(|a| *a != "--no-console");
        let holdup = process::start(&args, &[], None);
        let console = holdup.addr_after("tokio-console at ");
        let addr = holdup.addr_after("holdup listening on ");
        let metrics = holdup.addr_after("metrics at ");
        let guard = KillOnDrop(Some(holdup.child));
        let updates = InstrumentClient::connect(format!("http://{console}"))
            .await
            .expect("console API answers")
            // As the tokio-console TUI does: an update may list thousands of tasks.
            .max_decoding_message_size(usize::MAX)
            .watch_updates(InstrumentRequest {})
            .await
            .expect("watch updates")
            .into_inner();
        Self {
            addr,
            metrics,
            updates,
            guard,
        }
    }
}

/// What the console has reported so far, read as it comes: a watcher that does not keep up
/// is sent no more updates.
#[derive(Debug, Default)]
struct Seen {
    /// Ids of the new `Fast` handler tasks.
    fast: HashSet<Option<u64>>,
    /// Events the console's own buffer had no room for: tasks and polls lost without a word.
    dropped_events: u64,
    last_new: Option<Instant>,
}

/// Reads the console's updates into `seen` until the stream ends.
fn watch(mut updates: Streaming<Update>, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let update = match updates.message().await {
                Ok(Some(update)) => update,
                Ok(None) => return,
                Err(status) => panic!("the console's update stream failed: {status}"),
            };
            let Some(tasks) = update.task_update else {
                continue;
            };
            let mut seen = seen.lock().expect("not poisoned");
            seen.dropped_events += tasks.dropped_events;
            for task in &tasks.new_tasks {
                let fast = task.fields.iter().any(|field| {
                    matches!(&field.value, Some(Value::StrVal(v) | Value::DebugVal(v))
                        if v.trim_matches('"').starts_with("Fast"))
                });
                if fast && seen.fast.insert(task.id.map(|id| id.id)) {
                    seen.last_new = Some(Instant::now());
                }
            }
        }
    })
}

/// New `Fast` tasks and dropped events so far, once `quiet` passed without a new `Fast` task
/// (updates come once a second) or `limit` passed.
async fn settled(seen: &Mutex<Seen>, quiet: Duration, limit: Duration) -> (usize, u64) {
    let deadline = Instant::now() + limit;
    let started = Instant::now();
    loop {
        {
            let seen = seen.lock().expect("not poisoned");
            let last = seen.last_new.unwrap_or(started).max(started);
            if last.elapsed() >= quiet || Instant::now() >= deadline {
                return (seen.fast.len(), seen.dropped_events);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `n` Fast calls over `callers` concurrent callers, each at most one call per `every`
/// (zero: back to back).
async fn fast_calls(addr: SocketAddr, n: u16, callers: u16, every: Duration) {
    let next = Arc::new(AtomicU16::new(0));
    let mut handles = Vec::new();
    for _ in 0..callers {
        let next = Arc::clone(&next);
        let mut client = client(addr).await;
        handles.push(tokio::spawn(async move {
            let mut ticks = (!every.is_zero()).then(|| tokio::time::interval(every));
            while next.fetch_add(1, Ordering::Relaxed) < n {
                if let Some(ticks) = &mut ticks {
                    ticks.tick().await;
                }
                client
                    .fast(FastRequest::default())
                    .await
                    .expect("Fast answers");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("caller did not panic");
    }
}

async fn sampled_out(metrics: SocketAddr) -> f64 {
    sample(
        &crate::common::scrape(metrics).await,
        r#"holdup_console_tasks_total{outcome="sampled_out"}"#,
    )
}

/// tokio-console sees every request task at 100 requests a second, and a sample of them
/// (at most the budget's worth) when they come far faster, counted in
/// `holdup_console_tasks_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_console_shows_every_task_below_its_budget_and_a_sample_above() {
    let _serial = crate::common::serial().await;
    let ServedWithConsole {
        addr,
        metrics,
        updates,
        guard: _guard,
    } = ServedWithConsole::start().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = watch(updates, Arc::clone(&seen));

    // The lab's rates: 100 calls a second for 1.5 s (the console's budget is 250 new tasks
    // a second; a request is its HTTP/2 stream's task and its handler's).
    fast_calls(addr, 150, 1, Duration::from_millis(10)).await;
    let (below, _) = settled(&seen, Duration::from_secs(3), Duration::from_secs(15)).await;
    assert_eq!(
        below, 150,
        "at 100 requests a second the console must show each of the 150 request tasks"
    );
    let before = sampled_out(metrics).await;
    assert_eq!(before, 0.0, "tasks were sampled out below the budget");

    // Far above it: 2000 calls as fast as 16 callers go.
    let started = Instant::now();
    fast_calls(addr, 2_000, 16, Duration::ZERO).await;
    let elapsed = started.elapsed();
    let (all, dropped) = settled(&seen, Duration::from_secs(3), Duration::from_secs(20)).await;
    watcher.abort();
    let shown = all - below;
    // Whatever the rate: the bucket's second of burst, then the budget's rate, shared by the
    // handlers with their streams (and a margin for a token or two of rounding).
    let most = BUDGET * (1.0 + elapsed.as_secs_f64()) + 10.0;
    eprintln!(
        "the console showed {shown} of 2000 request tasks that came in {elapsed:?}; \
         its buffer dropped {dropped} events"
    );
    assert!(
        shown > 0 && shown < 2_000 && (shown as f64) <= most,
        "the console showed {shown} of 2000 request tasks in {elapsed:?} (the budget's \
         {most:.0} at most): not a sample"
    );
    let sampled = sampled_out(metrics).await;
    assert!(
        sampled >= (2_000 - shown) as f64,
        "holdup_console_tasks_total counts {sampled} tasks sampled out, the console missed {}",
        2_000 - shown
    );
}

/// Timers, locks and channels are shown with the named tasks that make them (here the `Sleep`
/// handler's timer), never with the connections' own timers, which are polled on every read
/// and would cost the console a span entry and an event per call each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_console_shows_a_handlers_timer_and_not_the_connections() {
    use holdup::proto::{SleepMode, SleepRequest};

    let _serial = crate::common::serial().await;
    let ServedWithConsole {
        addr,
        mut updates,
        guard: _guard,
        ..
    } = ServedWithConsole::start().await;
    let resources = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let reader = {
        let resources = Arc::clone(&resources);
        tokio::spawn(async move {
            while let Ok(Some(update)) = updates.message().await {
                let Some(update) = update.resource_update else {
                    continue;
                };
                let mut resources = resources.lock().expect("not poisoned");
                for r in update.new_resources {
                    let file = r.location.and_then(|l| l.file).unwrap_or_default();
                    resources.push((r.concrete_type, file));
                }
            }
        })
    };

    let mut client = client(addr).await;
    client
        .sleep(SleepRequest {
            mode: SleepMode::Async.into(),
            duration_ms: 50,
        })
        .await
        .expect("Sleep answers");
    for _ in 0..20 {
        client
            .fast(FastRequest::default())
            .await
            .expect("Fast answers");
    }
    // Updates come once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let is_handlers_timer =
        |(kind, file): &(String, String)| kind == "Sleep" && file.contains("src/lab/");
    while Instant::now() < deadline
        && !resources
            .lock()
            .expect("not poisoned")
            .iter()
            .any(is_handlers_timer)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    reader.abort();
    let resources = resources.lock().expect("not poisoned");
    assert!(
        resources.iter().any(is_handlers_timer),
        "the console must show the Sleep handler's timer; it showed {resources:?}"
    );
    let connections: Vec<_> = resources
        .iter()
        .filter(|(_, file)| file.contains("hyper") || file.contains("src/transport/"))
        .collect();
    assert!(
        connections.is_empty(),
        "the console shows the connections' own timers, polled on every read: {connections:?}"
    );
}
