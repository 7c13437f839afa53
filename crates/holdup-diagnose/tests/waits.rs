//! Every wait named, without labels: what the engine finds out by itself when a handler waits.
//!
//! The handlers here are ordinary user code. They name no verdict, open no span of their own,
//! and set no `holdup.stage` label. They wait the way services do: for a semaphore permit, a
//! mutex, a message on a channel, room in a full channel, an HTTP upstream, a database pool and query, a
//! `spawn_blocking`, a sleep, a spawned task's `JoinHandle`, a `Notify` and a worker task's
//! `oneshot` reply. The engine must say what each request waited in from what it
//! can see for itself: tokio's own resource instrumentation (the `tracing` feature with
//! `--cfg tokio_unstable`), the sockets, the blocking pool. When the wait is behind another
//! request, it must also name that request (by its trace id) among the culprits.
//!
//! Each test serves a real axum router with `DiagnoseLayer` on a hooked runtime and calls it
//! from another runtime over loopback, each request on a fresh connection. Waits are 200 ms or
//! more. The assertions check verdict words and names, with generous bounds on durations.

mod waits_support;

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State, routing::get};
use holdup_diagnose::DiagnoseLayer;
use sqlx::{SqlitePool, sqlite::SqlitePoolOptions};
use tokio::sync::{Mutex, Semaphore, mpsc};
use waits_support::{Diagnosis, Entered, Reply, Served, setup};

/// How long the first request holds what the second one waits for.
const HOLD: Duration = Duration::from_millis(200);

/// The least a wait of about `HOLD - STAGGER` shows, with room to spare.
const WAITED_MS: f64 = 100.0;

/// Asserts the parts of the split every test relies on: the request took at least `ms` in all,
/// and was idle (not running and not runnable) for at least `ms`. If this fails, the test's
/// premise is wrong, not the verdict.
fn assert_idle_for(who: &str, d: &Diagnosis, ms: f64) {
    assert!(d.ms("total") >= ms, "{who}: total < {ms}ms: {d}");
    assert!(d.ms("idle") >= ms, "{who}: idle < {ms}ms: {d}");
}

/// Serves one route, diagnosed, and GETs it once on a fresh connection.
fn served_get(path: &str, route: axum::routing::MethodRouter) -> Reply {
    let app = Router::new().route(path, route).layer(DiagnoseLayer::new());
    Served::diagnosed(app).get(path)
}

#[test]
fn the_header_reads_as_fields() {
    let d = Diagnosis::parse(
        "verdict=resource-queue total=201.3ms busy=0.1ms idle=200.9ms queue=200.9ms \
         waited_in=Semaphore culprits=GET /hold@4bf92f3577b34da6a3ce929d0e0e4736/200.1ms,\
         task:7/0.5ms,+2",
    );
    assert_eq!(d.verdict(), "resource-queue");
    assert_eq!(d.ms("queue"), 200.9);
    assert_eq!(d.field("waited_in"), Some("Semaphore"));
    let culprits = d.culprits();
    assert_eq!(culprits.len(), 2, "{culprits:?}");
    assert_eq!(
        culprits[0].label,
        "GET /hold@4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(culprits[0].ms, 200.1);
    assert_eq!(culprits[1].label, "task:7");
    assert!(d.blames("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(!d.blames("00000000000000000000000000000000"));
}

/// B queued for the lock `lock` that A held: B was idle for the wait, its verdict is the queue,
/// the wait is named after the lock, and A (by trace id) is among its culprits.
#[track_caller]
fn assert_queued_behind(a: &Reply, b: &Reply, lock: &str) {
    let (ad, bd) = (&a.diagnosis, &b.diagnosis);
    assert_idle_for("B", bd, WAITED_MS);
    assert_eq!(bd.verdict(), "resource-queue", "B: {bd}");
    assert_eq!(bd.field("waited_in"), Some(lock), "B: {bd}");
    assert!(
        bd.blames(&a.trace_id),
        "B's culprits name A ({}): B: {bd}; A: {ad}",
        a.trace_id
    );
}

/// Rounds of A-then-B on the same lock: each B names its own round's A and no earlier one.
/// A holder that hands its permit straight to a queued waiter is done holding it; if the
/// engine missed that hand-off, every later waiter would blame every earlier holder.
const ROUNDS: usize = 3;

/// Runs [`ROUNDS`] of `first` then `second` and checks each B against its own A only.
#[track_caller]
fn queued_behind_each_holder_in_turn(
    server: &Served,
    entered: &Entered,
    first: &str,
    second: &str,
    lock: &str,
) -> Vec<(Reply, Reply)> {
    let mut rounds: Vec<(Reply, Reply)> = Vec::new();
    for round in 0..ROUNDS {
        entered.reset();
        let (a, b) = server.first_then_second(first, entered, second);
        assert_queued_behind(&a, &b, lock);
        for (earlier, _) in &rounds {
            assert!(
                !b.diagnosis.blames(&earlier.trace_id),
                "round {round}: B blames an earlier round's holder ({}), done long before: {}",
                earlier.trace_id,
                b.diagnosis
            );
        }
        rounds.push((a, b));
    }
    rounds
}

#[derive(Clone)]
struct Permits {
    semaphore: Arc<Semaphore>,
    entered: Entered,
}

/// A holds the only permit for `HOLD`; B, sent while A holds it, queues for it; in turn.
#[test]
fn a_semaphore_wait_names_the_semaphore_and_the_holder() {
    let _serial = setup();
    let entered = Entered::default();
    let app = Router::new()
        .route(
            "/hold",
            get(|State(s): State<Permits>| async move {
                let _permit = s.semaphore.acquire().await.unwrap();
                s.entered.mark();
                tokio::time::sleep(HOLD).await;
                "held"
            }),
        )
        .route(
            "/take",
            get(|State(s): State<Permits>| async move {
                let _permit = s.semaphore.acquire().await.unwrap();
                "taken"
            }),
        )
        .with_state(Permits {
            semaphore: Arc::new(Semaphore::new(1)),
            entered: entered.clone(),
        })
        .layer(DiagnoseLayer::new());
    let server = Served::diagnosed(app);
    let rounds =
        queued_behind_each_holder_in_turn(&server, &entered, "/hold", "/take", "Semaphore");
    for (_, b) in &rounds {
        let bd = &b.diagnosis;
        assert!(
            bd.ms("queue") >= WAITED_MS,
            "B: queue < {WAITED_MS}ms: {bd}"
        );
    }
}

#[derive(Clone)]
struct Locked {
    counter: Arc<Mutex<u64>>,
    entered: Entered,
}

/// A holds the mutex for `HOLD`; B, sent while A holds it, waits for the lock; in turn.
#[test]
fn a_mutex_wait_names_the_mutex_and_the_holder() {
    let _serial = setup();
    let entered = Entered::default();
    let app = Router::new()
        .route(
            "/hold",
            get(|State(s): State<Locked>| async move {
                let mut counter = s.counter.lock().await;
                s.entered.mark();
                tokio::time::sleep(HOLD).await;
                *counter += 1;
                counter.to_string()
            }),
        )
        .route(
            "/read",
            get(|State(s): State<Locked>| async move { s.counter.lock().await.to_string() }),
        )
        .with_state(Locked {
            counter: Arc::new(Mutex::new(0)),
            entered: entered.clone(),
        })
        .layer(DiagnoseLayer::new());
    let server = Served::diagnosed(app);
    queued_behind_each_holder_in_turn(&server, &entered, "/hold", "/read", "Mutex");
}

#[derive(Clone)]
struct Channel {
    /// Only the receiving request locks it: it is never contended.
    rx: Arc<Mutex<mpsc::Receiver<u64>>>,
    tx: mpsc::Sender<u64>,
    entered: Entered,
}

/// R waits on a channel; S, sent while R waits, takes `HOLD` and then sends what R receives.
#[test]
fn a_channel_wait_names_the_sender() {
    let _serial = setup();
    let entered = Entered::default();
    let (tx, rx) = mpsc::channel(1);
    let app = Router::new()
        .route(
            "/recv",
            get(|State(s): State<Channel>| async move {
                let mut rx = s.rx.lock().await;
                s.entered.mark();
                let message = rx.recv().await;
                assert_eq!(message, Some(7), "R receives what S sends");
                "received"
            }),
        )
        .route(
            "/send",
            get(|State(s): State<Channel>| async move {
                tokio::time::sleep(HOLD).await;
                s.tx.send(7).await.unwrap();
                "sent"
            }),
        )
        .with_state(Channel {
            rx: Arc::new(Mutex::new(rx)),
            tx,
            entered: entered.clone(),
        })
        .layer(DiagnoseLayer::new());
    let server = Served::diagnosed(app);
    let (r, s) = server.first_then_second("/recv", &entered, "/send");
    let (rd, sd) = (&r.diagnosis, &s.diagnosis);
    assert_idle_for("R", rd, HOLD.as_millis() as f64 / 2.0);
    assert!(
        ["waiting", "resource-queue"].contains(&rd.verdict()),
        "R waited for a message: {rd}"
    );
    assert!(
        rd.blames(&s.trace_id),
        "R's culprits name S ({}), whose send woke it: R: {rd}; S: {sd}",
        s.trace_id
    );
}

/// Another HTTP server (no layer on it) whose `/slow` answers after 300 ms.
fn slow_upstream() -> Served {
    Served::plain(Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow"
        }),
    ))
}

/// The call `/call` made through `server` waited for `slow`: `upstream`, named by its address.
#[track_caller]
fn assert_waited_for(server: &Served, slow: &Served) {
    let reply = server.get("/call");
    let d = &reply.diagnosis;
    assert_idle_for("the call", d, 200.0);
    assert_eq!(d.verdict(), "upstream", "{d}");
    let address = format!("127.0.0.1:{}", slow.port);
    assert_eq!(d.field("waited_in"), Some(address.as_str()), "{d}");
}

/// The handler calls another HTTP server (no layer on it) that answers after 300 ms.
#[test]
fn an_http_call_names_the_upstream_address() {
    let _serial = setup();
    let slow = slow_upstream();
    let upstream = slow.url("/slow");
    let client = reqwest::Client::new();
    let app = Router::new()
        .route(
            "/call",
            get(
                |State((client, upstream)): State<(reqwest::Client, String)>| async move {
                    let body = client
                        .get(&upstream)
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap();
                    assert_eq!(body, "slow", "the upstream's answer");
                    "called"
                },
            ),
        )
        .with_state((client, upstream))
        .layer(DiagnoseLayer::new());
    let server = Served::diagnosed(app);
    assert_waited_for(&server, &slow);
}

/// The same call through a client made for it and dropped with it (`reqwest::get`, as
/// ordinary code calls once): its connection is closed before the report is taken, and the
/// wait is still the upstream's.
#[test]
fn a_one_off_http_call_names_the_upstream_address_too() {
    let _serial = setup();
    let slow = slow_upstream();
    let upstream = slow.url("/slow");
    let app = Router::new()
        .route(
            "/call",
            get(|State(upstream): State<String>| async move {
                let body = reqwest::get(&upstream).await.unwrap().text().await.unwrap();
                assert_eq!(body, "slow", "the upstream's answer");
                "called"
            }),
        )
        .with_state(upstream)
        .layer(DiagnoseLayer::new());
    let server = Served::diagnosed(app);
    for _ in 0..3 {
        assert_waited_for(&server, &slow);
    }
}

/// A query that counts to `n` in a recursive CTE: SQLite's CPU, on its worker thread.
const COUNT_TO: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                        WHERE x < ?) SELECT count(*) FROM c";

/// The `n` for which [`COUNT_TO`] takes about `HOLD` on this machine: measured, and checked
/// to take 150-400 ms (else the test fails saying so).
async fn calibrate(pool: &SqlitePool) -> i64 {
    // The fastest of three runs: what the query costs on this machine, less any hiccup.
    let time = |n: i64| async move {
        let mut fastest = Duration::MAX;
        for _ in 0..3 {
            let start = std::time::Instant::now();
            let count: i64 = sqlx::query_scalar(COUNT_TO)
                .bind(n)
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(count, n);
            fastest = fastest.min(start.elapsed());
        }
        fastest
    };
    let scaled =
        |n: i64, took: Duration| (n as f64 * HOLD.as_secs_f64() / took.as_secs_f64()) as i64;
    let mut n: i64 = 20_000;
    let mut took = time(n).await;
    // Grow the probe until it is long enough to measure.
    while took < Duration::from_millis(40) {
        n *= 3;
        took = time(n).await;
    }
    let mut n = scaled(n, took);
    let mut took = time(n).await;
    // A shared machine can slow one probe: rescale a few times before giving up.
    for _ in 0..4 {
        if (Duration::from_millis(150)..Duration::from_millis(400)).contains(&took) {
            break;
        }
        n = scaled(n, took);
        took = time(n).await;
    }
    assert!(
        (Duration::from_millis(100)..Duration::from_millis(600)).contains(&took),
        "the calibrated query (n={n}) took {took:?}, not about {HOLD:?}"
    );
    eprintln!("the query counts to {n} in {took:?}");
    n
}

#[derive(Clone)]
struct Db {
    pool: SqlitePool,
    n: i64,
    entered: Entered,
}

/// A runs a ~200 ms query on a one-connection SQLite pool; B, sent while it runs, runs a
/// trivial one and queues for the connection; in turn.
#[test]
fn a_sqlite_query_is_the_backend_and_the_pool_is_a_queue() {
    let _serial = setup();
    let entered = Entered::default();
    let runtime = waits_support::hooked_runtime();
    let (pool, n) = runtime.block_on(async {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("an in-memory SQLite");
        let n = calibrate(&pool).await;
        (pool, n)
    });
    let app = Router::new()
        .route(
            "/count",
            get(|State(s): State<Db>| async move {
                s.entered.mark();
                let count: i64 = sqlx::query_scalar(COUNT_TO)
                    .bind(s.n)
                    .fetch_one(&s.pool)
                    .await
                    .unwrap();
                assert_eq!(count, s.n, "the query counted");
                "counted"
            }),
        )
        .route(
            "/one",
            get(|State(s): State<Db>| async move {
                let one: i64 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&s.pool)
                    .await
                    .unwrap();
                assert_eq!(one, 1);
                "one"
            }),
        )
        .with_state(Db {
            pool,
            n,
            entered: entered.clone(),
        })
        .layer(DiagnoseLayer::new());
    let server = Served::on(runtime, app);
    // In turn: sqlx gives the connection back from a task of its own, which hands the pool's
    // permit to the queued B; each B must name its own round's A only.
    let mut holders: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        entered.reset();
        let (a, b) = server.first_then_second("/count", &entered, "/one");
        let (ad, bd) = (&a.diagnosis, &b.diagnosis);
        assert_idle_for("A", ad, WAITED_MS);
        assert_idle_for("B", bd, WAITED_MS / 2.0);
        assert_eq!(ad.verdict(), "backend", "A ran the query: A: {ad}; B: {bd}");
        assert_eq!(
            bd.verdict(),
            "resource-queue",
            "B queued for the connection: B: {bd}; A: {ad}"
        );
        assert!(
            bd.blames(&a.trace_id),
            "B's culprits name A ({}), which held the connection: B: {bd}; A: {ad}",
            a.trace_id
        );
        for earlier in &holders {
            assert!(
                !bd.blames(earlier),
                "round {round}: B blames an earlier round's holder ({earlier}): {bd}"
            );
        }
        holders.push(a.trace_id.clone());
        holders.push(b.trace_id.clone());
    }
}

/// The handler awaits a `spawn_blocking` that sleeps `HOLD` on the blocking pool.
#[test]
fn an_awaited_spawn_blocking_is_offloaded_cpu() {
    let _serial = setup();
    let reply = served_get(
        "/offload",
        get(|| async {
            tokio::task::spawn_blocking(|| std::thread::sleep(HOLD))
                .await
                .unwrap();
            "done"
        }),
    );
    let d = &reply.diagnosis;
    assert_idle_for("the request", d, WAITED_MS);
    assert_eq!(d.verdict(), "offloaded-cpu", "{d}");
}

/// The handler awaits `tokio::time::sleep(HOLD)`.
#[test]
fn an_awaited_sleep_is_the_timer() {
    let _serial = setup();
    let reply = served_get(
        "/sleep",
        get(|| async {
            tokio::time::sleep(HOLD).await;
            "slept"
        }),
    );
    let d = &reply.diagnosis;
    assert_idle_for("the request", d, WAITED_MS);
    assert_eq!(d.verdict(), "timer", "{d}");
    assert_eq!(d.field("waited_in"), Some("Sleep"), "{d}");
}

/// A span the handler opens is its stage, found through the poll it is opened in: with only
/// the stage layer in the subscriber, no layer wants the request's own span, so the engine
/// does not make one (the registry's work for it was a quarter of the engine's cost per call).
/// A span opened inside that one inherits the request from its parent.
#[test]
fn a_handlers_own_span_is_its_stage_without_a_request_span() {
    use tracing::Instrument;
    let _serial = setup();
    let reply = served_get(
        "/lookup",
        get(|request: axum::extract::Request| async move {
            let diagnosis = holdup_diagnose::Diagnosis::of(request.extensions())
                .expect("the layer is installed");
            let spanless = diagnosis.span().is_disabled();
            async {
                tokio::time::sleep(HOLD)
                    .instrument(tracing::debug_span!("db.query", holdup.stage = "backend"))
                    .await;
            }
            .instrument(tracing::info_span!("inventory.lookup"))
            .await;
            if spanless {
                "no request span"
            } else {
                "a request span"
            }
        }),
    );
    assert_eq!(reply.body, "no request span");
    let d = &reply.diagnosis;
    assert_idle_for("the request", d, WAITED_MS);
    assert_eq!(d.verdict(), "backend", "{d}");
    assert_eq!(d.field("waited_in"), Some("db.query"), "{d}");
}

/// The actor pattern: the handler sends its job to a worker task spawned once, and awaits the
/// answer on a oneshot. The worker takes `HOLD` (a sleep here; a query or a file in a
/// service). The request waited on the oneshot, for that task: the culprit is named by where
/// it was spawned.
#[test]
fn a_wait_for_a_worker_task_names_the_oneshot_and_the_task() {
    use tokio::sync::oneshot;
    let _serial = setup();
    let app = Router::new()
        .route(
            "/ask",
            get(
                |State(jobs): State<mpsc::Sender<oneshot::Sender<u32>>>| async move {
                    let (tx, rx) = oneshot::channel();
                    jobs.send(tx).await.expect("the worker runs");
                    rx.await.expect("the worker answers").to_string()
                },
            ),
        )
        .layer(DiagnoseLayer::new());
    let runtime = waits_support::hooked_runtime();
    let jobs = slow_worker(&runtime, 8, |reply: oneshot::Sender<u32>| {
        let _ = reply.send(7);
    });
    let server = Served::on(runtime, app.with_state(jobs));
    let reply = server.get("/ask");
    let d = &reply.diagnosis;
    assert_idle_for("the request", d, WAITED_MS);
    assert_eq!(d.verdict(), "waiting", "{d}");
    assert_eq!(d.field("waited_in"), Some("oneshot"), "{d}");
    assert_blames_a_task_spawned_here(d);
}

/// A task on `runtime`, spawned once as services spawn a worker, that takes the messages of a
/// channel of `capacity` one at a time, each for `HOLD`, then hands it to `done`.
fn slow_worker<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    capacity: usize,
    mut done: impl FnMut(T) + Send + 'static,
) -> mpsc::Sender<T> {
    let (tx, mut rx) = mpsc::channel(capacity);
    runtime.spawn(async move {
        while let Some(message) = rx.recv().await {
            tokio::time::sleep(HOLD).await;
            done(message);
        }
    });
    tx
}

/// The request waited for a task spawned in this file, and nothing else named the wait: its
/// verdict is `waiting`, the wait is named by the task's spawn site (`task:waits.rs:<line>`),
/// and that task (`…#<id>`) is its culprit.
#[track_caller]
fn assert_waited_for_a_task_spawned_here(d: &Diagnosis) {
    assert_eq!(d.verdict(), "waiting", "{d}");
    assert!(
        d.field("waited_in")
            .is_some_and(|w| w.starts_with("task:waits.rs:") && !w.contains('#')),
        "the wait is named by the task's spawn site: {d}"
    );
    assert_blames_a_task_spawned_here(d);
}

/// The request's culprits include a task spawned in this file (`task:waits.rs:<line>#<id>`).
#[track_caller]
fn assert_blames_a_task_spawned_here(d: &Diagnosis) {
    assert!(
        d.culprits()
            .iter()
            .any(|c| c.label.starts_with("task:waits.rs:") && c.ms >= WAITED_MS),
        "a culprit named by its spawn site here: {d}"
    );
}

/// The handler spawns its work and awaits the `JoinHandle`; the task sleeps `HOLD`. tokio
/// does not instrument a `JoinHandle`: the wait is named by the task that woke it.
#[test]
fn an_awaited_spawned_task_is_named_by_where_it_was_spawned() {
    let _serial = setup();
    let reply = served_get(
        "/spawn",
        get(|| async {
            tokio::spawn(tokio::time::sleep(HOLD)).await.unwrap();
            "done"
        }),
    );
    let d = &reply.diagnosis;
    assert_idle_for("the request", d, WAITED_MS);
    assert_waited_for_a_task_spawned_here(d);
}

/// The handler waits on a `Notify` that a task notifies after `HOLD`: not instrumented by
/// tokio either, so named by the task that notified.
#[test]
fn a_notify_wait_names_the_task_that_notified() {
    let _serial = setup();
    let notify = Arc::new(tokio::sync::Notify::new());
    let reply = served_get(
        "/notified",
        get(
            |State(notify): State<Arc<tokio::sync::Notify>>| async move {
                let notified = notify.notified();
                let ticker = Arc::clone(&notify);
                tokio::spawn(async move {
                    tokio::time::sleep(HOLD).await;
                    ticker.notify_waiters();
                });
                notified.await;
                "notified"
            },
        )
        .with_state(notify),
    );
    let d = &reply.diagnosis;
    assert_idle_for("the request", d, WAITED_MS);
    assert_waited_for_a_task_spawned_here(d);
}

/// The handler sends to a background task through a bounded channel that is full: its send
/// waits until that task takes a message, which it does every `HOLD`. tokio counts a bounded
/// channel's room with a semaphore of its own, but the service has no semaphore: the wait is
/// the channel's, and the task that made room is its culprit.
#[test]
fn a_send_to_a_full_channel_names_the_channel_and_its_receiver() {
    let _serial = setup();
    let runtime = waits_support::hooked_runtime();
    let tx = slow_worker(&runtime, 1, |_: u32| {});
    let app = Router::new()
        .route(
            "/send",
            get(|State(tx): State<mpsc::Sender<u32>>| async move {
                // The first is taken at once, the second fills the room, the third waits.
                for message in 0..3 {
                    tx.send(message).await.expect("the receiver runs");
                }
                "sent"
            }),
        )
        .with_state(tx)
        .layer(DiagnoseLayer::new());
    let server = Served::on(runtime, app);
    let reply = server.get("/send");
    let d = &reply.diagnosis;
    assert_idle_for("the request", d, WAITED_MS);
    assert_eq!(d.verdict(), "waiting", "{d}");
    assert_eq!(d.field("waited_in"), Some("mpsc"), "{d}");
    assert_blames_a_task_spawned_here(d);
}

/// tower's concurrency limit inside the layer (`Router::layer` wraps each route, so a limit
/// shared by both routes is the global one): its permit is a tokio `Semaphore`, and B's wait
/// for it is a queue behind A, as a semaphore of the handler's own is.
#[test]
fn a_concurrency_limit_inside_the_layer_is_a_queue_behind_its_holder() {
    let _serial = setup();
    let entered = Entered::default();
    let app = Router::new()
        .route(
            "/hold",
            get(|State(entered): State<Entered>| async move {
                entered.mark();
                tokio::time::sleep(HOLD).await;
                "held"
            }),
        )
        .route("/take", get(|| async { "taken" }))
        .with_state(entered.clone())
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(1))
        .layer(DiagnoseLayer::new());
    let server = Served::diagnosed(app);
    queued_behind_each_holder_in_turn(&server, &entered, "/hold", "/take", "Semaphore");
}
