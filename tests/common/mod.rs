//! Shared test harness: a real holdup server on a random loopback port, and a real tonic
//! client connected to it.

pub mod collector;
pub mod jaeger;
pub mod process;
pub mod tmux;

use std::{net::SocketAddr, sync::Once, time::Duration};

use holdup::{
    config::ServeConfig,
    proto::lab_client::LabClient,
    server::{ServeError, Server},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The in-process upstream simulator's base URL (`http://127.0.0.1:PORT`).
    pub upstream_url: String,
    pub client: LabClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<Result<(), ServeError>>>,
    /// The server's own runtime, as `holdup serve` has one (`--workers` workers that read the
    /// sockets and run the handlers): a handler that blocks its workers must not block the
    /// test's client, which runs on the test's runtime as it would in another process.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

static TRACING: Once = Once::new();

/// Held by every test that measures latency or loads the machine: on two shared cores, two
/// such tests at once would measure each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a test may wait for its turn: far more than every serial test together takes, so
/// that running out means a holder hangs (or a test takes the lock twice, which deadlocks).
const SERIAL_WAIT: Duration = Duration::from_secs(900);

/// Waits until no other latency-measuring or machine-loading test runs, and keeps it so until
/// the guard is dropped. Take it once per test: the lock is not reentrant.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    tokio::time::timeout(SERIAL_WAIT, SERIAL.lock())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "waited {SERIAL_WAIT:?} for common::serial(): a test holding it hangs, \
                 or took it twice"
            )
        })
}

/// The subscriber a server needs (the diagnosis engine's stage layer, and trace ids so that
/// blame names culprits by them); logs go to the test output only when `TEST_LOG` is set.
pub fn init_tracing() {
    TRACING.call_once(|| {
        holdup::telemetry::subscriber::init_local(std::env::var_os("TEST_LOG").is_some(), true);
    });
}

/// A server with the local defaults: 2 workers, embedded SQLite, in-process upstream.
pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// A server whose local defaults `adjust` changes first.
pub async fn spawn_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    init_tracing();
    let mut config = ServeConfig::local();
    config.db.seed_rows = 2_000;
    adjust(&mut config);
    let runtime = holdup::runtime::multi_thread("holdup", config.workers).expect("server runtime");
    let server = runtime
        .spawn(Server::build(config))
        .await
        .expect("the build did not panic")
        .expect("server builds");
    let addr = server.local_addr();
    let metrics_addr = server.metrics_addr().expect("test servers serve metrics");
    let upstream_url = server.upstream_url().to_owned();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = runtime.spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        metrics_addr,
        upstream_url,
        client: client(addr).await,
        stop: Some(stop),
        serving: Some(serving),
        runtime: Some(runtime),
    }
}

/// A new client with a connection of its own.
pub async fn client(addr: SocketAddr) -> LabClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("client connects");
    LabClient::new(channel)
}

impl TestApp {
    /// Signals shutdown and returns what the server returned.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let serving = self.serving.take().expect("shut down once");
        tokio::time::timeout(Duration::from_secs(30), serving)
            .await
            .expect("server stops within 30 s")
            .expect("server task did not panic")
    }

    /// The `/metrics` page in Prometheus text format.
    pub async fn scrape(&self) -> String {
        scrape(self.metrics_addr).await
    }

    /// The value of one sample (`name{labels}` exactly as exported), 0 when absent.
    pub async fn sample(&self, series: &str) -> f64 {
        sample(&self.scrape().await, series)
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The diagnostics of a reply, which every reply must carry.
#[track_caller]
pub fn diagnostics<T>(d: &Option<T>) -> &T {
    d.as_ref().expect("reply carries diagnostics")
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One scrape of the `/metrics` endpoint at `metrics`.
pub async fn scrape(metrics: SocketAddr) -> String {
    reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .expect("metrics endpoint answers")
        .text()
        .await
        .expect("metrics body")
}

/// The value of `series` (`name{labels}` exactly as exported) in a scrape, 0 when absent.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The path of an outside tool the test needs. Missing under `CI`: the test fails, naming the
/// install command. Missing elsewhere: `None`, and the caller skips with a note on stderr.
#[track_caller]
pub fn require_tool(tool: &str, install: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => Some(path),
        None if std::env::var_os("CI").is_some() => {
            panic!("{tool} is required but not installed; install it with: {install}")
        }
        None => {
            eprintln!("SKIPPED: {tool} not installed (install with: {install})");
            None
        }
    }
}

/// Two `SlowBackend` holds (POINT, key 1) on connections of their own, against a server whose
/// pool has one connection: the first holds `hold_ms`, the second starts 50 ms later and holds
/// a quarter of that, so that its wait for the first one's hold is clearly the larger part of
/// its time (with equal holds the two tie, and either may lead the verdict). Checks the shape
/// every backend must show — the first does not wait, the second waits about the first one's
/// hold and its `queue_us` is that wait — and returns `(first, second)` for backend-specific
/// checks.
pub async fn two_holds_on_one_connection(
    addr: SocketAddr,
    hold_ms: u32,
) -> (
    holdup::proto::SlowBackendReply,
    holdup::proto::SlowBackendReply,
) {
    use holdup::proto::{Query, SlowBackendRequest};
    const STAGGER: std::time::Duration = std::time::Duration::from_millis(50);
    let mut calls = Vec::new();
    for (i, hold_ms) in [hold_ms, hold_ms / 4].into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(STAGGER).await;
        }
        calls.push(tokio::spawn(async move {
            client(addr)
                .await
                .slow_backend(SlowBackendRequest {
                    hold_ms,
                    query: Query::Point.into(),
                    key: 1,
                })
                .await
                .expect("SlowBackend answers")
                .into_inner()
        }));
    }
    let mut replies = Vec::new();
    for call in calls {
        replies.push(call.await.expect("call task"));
    }
    replies.sort_by_key(|r| r.pool_wait_us);
    let second = replies.pop().expect("two replies");
    let first = replies.pop().expect("two replies");
    let hold = u64::from(hold_ms) * 1_000;
    assert!(
        first.pool_wait_us < hold / 4,
        "first waited {} us",
        first.pool_wait_us
    );
    assert!(
        second.pool_wait_us >= hold * 7 / 10,
        "second waited only {} us for a {hold} us hold",
        second.pool_wait_us
    );
    let d = diagnostics(&second.diagnostics);
    assert!(d.queue_us.abs_diff(second.pool_wait_us) < 5_000, "{d:?}");
    assert_eq!(first.rows, 1);
    (first, second)
}
