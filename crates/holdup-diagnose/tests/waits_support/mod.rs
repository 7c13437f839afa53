//! What `tests/waits.rs` and `tests/waits_postgres.rs` share: the diagnosed server on a hooked
//! runtime of its own, a client on another, and the `holdup-diagnosis` header read as fields.
//!
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, Once,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::Router;
use tokio::runtime::Runtime;
use tracing_subscriber::{Layer, layer::SubscriberExt};

/// The global subscriber the engine reads stages and tokio's resources through, once per test
/// process, and one test at a time: the tests measure waits on a machine that may have two
/// cores, and one test's requests must not be another's culprits or its CPU contention.
pub fn setup() -> MutexGuard<'static, ()> {
    static SUBSCRIBER: Once = Once::new();
    static SERIAL: Mutex<()> = Mutex::new(());
    SUBSCRIBER.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(
            holdup_diagnose::StageLayer::new().with_filter(holdup_diagnose::StageAndResourceFilter),
        );
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    });
    // A test that failed while holding the lock leaves it poisoned: the next one still runs.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A server on a loopback port, on a runtime of its own that stops when this is dropped.
pub struct Served {
    runtime: Option<Runtime>,
    pub base: String,
    pub port: u16,
}

impl Served {
    /// `app` with the layer on, as a user runs it: on a runtime with the engine's hooks.
    pub fn diagnosed(app: Router) -> Self {
        Self::on(hooked_runtime(), app)
    }

    /// `app` as it is (no layer in it is added here), on a plain runtime of its own.
    pub fn plain(app: Router) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        Self::on(runtime, app)
    }

    /// Serves `app` on `runtime`.
    pub fn on(runtime: Runtime, app: Router) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await
        });
        Self {
            runtime: Some(runtime),
            base: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// The server's runtime, to prepare its state on (a database pool) before it serves.
    pub fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` from the client runtime, on a fresh connection ([`get`]).
    pub fn get(&self, path: &str) -> Reply {
        client_runtime().block_on(get(&self.url(path)))
    }

    /// GETs `first`, then `second` once `first`'s handler marked `entered`
    /// ([`first_then_second`]), from the client runtime.
    pub fn first_then_second(
        &self,
        first: &str,
        entered: &Entered,
        second: &str,
    ) -> (Reply, Reply) {
        client_runtime().block_on(first_then_second(
            &self.url(first),
            entered,
            &self.url(second),
        ))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The runtime a user of the layer builds: two workers, the engine's hooks installed.
pub fn hooked_runtime() -> Runtime {
    holdup_diagnose::install_hooks(&mut tokio::runtime::Builder::new_multi_thread())
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The client's runtime: not hooked, not diagnosed, apart from the server's.
pub fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Set by a handler once it holds what the next request will wait for, so that the client
/// sends that request only then (and `STAGGER` later): the order never depends on timing.
#[derive(Clone, Default)]
pub struct Entered(Arc<AtomicBool>);

impl Entered {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Unmarked again, for another round.
    pub fn reset(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Returns once a handler marked it; fails the test after 3 s.
    pub async fn wait(&self) {
        let start = Instant::now();
        while !self.0.load(Ordering::Acquire) {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "the first request never reached its handler"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// How long after the first request is in its handler the second one is sent.
pub const STAGGER: Duration = Duration::from_millis(30);

/// One answered request.
pub struct Reply {
    /// The `x-trace-id` the layer gave the request.
    pub trace_id: String,
    pub diagnosis: Diagnosis,
    /// What the handler answered.
    pub body: String,
}

/// GETs `url` on a fresh connection (a client of its own) and reads the layer's headers.
pub async fn get(url: &str) -> Reply {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("{url}: no {name} header ({status})"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let diagnosis = Diagnosis::parse(&header("holdup-diagnosis"));
    let trace_id = header("x-trace-id");
    // Read to its end; what it says is not checked here (handlers assert their own premises).
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{url}: the body: {e:?}; {diagnosis}"));
    assert!(status.is_success(), "{url}: {status} {body:?}; {diagnosis}");
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{url}: x-trace-id {trace_id:?}"
    );
    Reply {
        trace_id,
        diagnosis,
        body,
    }
}

/// GETs `first`, waits until its handler marked `entered`, then `STAGGER`, then GETs `second`;
/// returns both replies.
pub async fn first_then_second(first: &str, entered: &Entered, second: &str) -> (Reply, Reply) {
    let first = first.to_owned();
    let first = tokio::spawn(async move { get(&first).await });
    entered.wait().await;
    tokio::time::sleep(STAGGER).await;
    let second = get(second).await;
    let first = first.await.expect("the first request's client");
    (first, second)
}

/// The `holdup-diagnosis` header, read as its `key=value` fields.
pub struct Diagnosis {
    header: String,
    fields: Vec<(String, String)>,
}

/// One entry of `culprits=`: `<label>/<share>ms`.
#[derive(Debug)]
pub struct Culprit {
    pub label: String,
    pub ms: f64,
}

impl Diagnosis {
    /// Space-separated `key=value`; a word with no `key=` of its own continues the value before
    /// it (a label with a space in it).
    pub fn parse(header: &str) -> Self {
        let mut fields: Vec<(String, String)> = Vec::new();
        for word in header.split(' ') {
            let key = word.split_once('=').filter(|(k, _)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            match (key, fields.last_mut()) {
                (Some((k, v)), _) => fields.push((k.to_owned(), v.to_owned())),
                (None, Some((_, value))) => {
                    value.push(' ');
                    value.push_str(word);
                }
                (None, None) => panic!("{header:?} does not start with key=value"),
            }
        }
        Self {
            header: header.to_owned(),
            fields,
        }
    }

    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn verdict(&self) -> &str {
        self.field("verdict")
            .unwrap_or_else(|| panic!("no verdict in {self}"))
    }

    /// A duration field (`total=201.3ms`) in ms.
    pub fn ms(&self, key: &str) -> f64 {
        let value = self
            .field(key)
            .unwrap_or_else(|| panic!("no {key}= in {self}"));
        parse_ms(value).unwrap_or_else(|| panic!("{key}={value} is not a duration in {self}"))
    }

    /// `culprits=`, largest share first (a trailing `+N` of more culprits is left out).
    pub fn culprits(&self) -> Vec<Culprit> {
        let Some(list) = self.field("culprits") else {
            return Vec::new();
        };
        list.split(',')
            .filter(|entry| !entry.starts_with('+'))
            .map(|entry| {
                let (label, ms) = entry
                    .rsplit_once('/')
                    .unwrap_or_else(|| panic!("culprit {entry:?} is not label/ms in {self}"));
                Culprit {
                    label: label.to_owned(),
                    ms: parse_ms(ms)
                        .unwrap_or_else(|| panic!("culprit {entry:?}: no share in {self}")),
                }
            })
            .collect()
    }

    /// Whether the request with `trace_id` is among the culprits (`<method>@<trace id>`).
    pub fn blames(&self, trace_id: &str) -> bool {
        self.culprits().iter().any(|c| {
            c.label
                .rsplit_once('@')
                .is_some_and(|(_, trace)| trace == trace_id)
        })
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header)
    }
}

fn parse_ms(value: &str) -> Option<f64> {
    value.strip_suffix("ms")?.parse().ok()
}
