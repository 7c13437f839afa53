//! A real Jaeger v2 (the `jaeger` that `tests/tools.sh` builds, 2.12.0) on loopback ports of
//! the test's own (config: `tests/jaeger.yaml`), and a client for the query APIs a user's
//! tools read: `/api/traces/{id}` (the JSON of Jaeger's UI and of Grafana's Jaeger data
//! source), `/api/v3/traces/{id}` (OTLP JSON) and `/api/services`.
//!
//! Spans reach Jaeger in batches, so every read is a bounded poll for what the test expects.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::process::Program;

/// How a developer gets the binary (CI: `tests/run.sh` does it).
pub const INSTALL: &str = "tests/tools.sh jaeger, then put target/tools/go/bin on PATH";

/// How long Jaeger may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a trace may take to arrive in full: holdup batches every 100 ms in these tests
/// (`OTEL_BSP_SCHEDULE_DELAY`), Jaeger every 100 ms; the rest is a loaded machine's slack.
pub const TRACE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a poll asks again.
const POLL_EVERY: Duration = Duration::from_millis(100);

pub struct Jaeger {
    process: Program,
    /// OTLP/gRPC receiver.
    pub otlp: SocketAddr,
    /// Query service, HTTP (UI and APIs).
    pub query: SocketAddr,
    http: reqwest::Client,
}

impl Jaeger {
    /// Starts Jaeger and waits until both its OTLP receiver and its query API answer.
    /// `None` (the test skips) when the binary is missing outside CI.
    pub async fn start() -> Option<Self> {
        let binary = super::require_tool("jaeger", INSTALL)?;
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jaeger.yaml");
        let (otlp, query, query_grpc) =
            (super::free_port(), super::free_port(), super::free_port());
        let mut command = Command::new(binary);
        command
            .args(["--config", config])
            .env("JAEGER_TEST_OTLP_GRPC", otlp.port().to_string())
            .env("JAEGER_TEST_QUERY_HTTP", query.port().to_string())
            .env("JAEGER_TEST_QUERY_GRPC", query_grpc.port().to_string());
        let mut jaeger = Self {
            process: Program::start("jaeger", command),
            otlp,
            query,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            jaeger.process.assert_running();
            let receiving = tokio::net::TcpStream::connect(otlp).await.is_ok();
            if receiving && jaeger.get("/api/services").await.is_some() {
                return Some(jaeger);
            }
            assert!(
                Instant::now() < deadline,
                "Jaeger did not answer on {query} within {START_TIMEOUT:?}; its output:\n{}",
                jaeger.process.output()
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Where holdup should send spans: `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.otlp)
    }

    /// The JSON at `path` when Jaeger answers 200, `None` otherwise.
    async fn get(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.query))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Polls `path` until `ready` accepts what it returns; panics with the last answer (and
    /// Jaeger's output) after [`TRACE_TIMEOUT`].
    async fn poll<T>(&self, path: &str, what: &str, ready: impl Fn(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + TRACE_TIMEOUT;
        let mut last = None;
        loop {
            if let Some(json) = self.get(path).await {
                if let Some(found) = ready(&json) {
                    return found;
                }
                last = Some(json);
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not in Jaeger's {path} within {TRACE_TIMEOUT:?}; last answer: {}\n\
                     Jaeger's output:\n{}",
                    last.map_or_else(|| "none".to_owned(), |j| j.to_string()),
                    self.process.output()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// `/api/services`, once it lists every one of `expected`.
    pub async fn services(&self, expected: &[&str]) -> BTreeSet<String> {
        self.poll("/api/services", "the services", |json| {
            let listed: BTreeSet<String> = json["data"]
                .as_array()?
                .iter()
                .filter_map(|s| Some(s.as_str()?.to_owned()))
                .collect();
            expected
                .iter()
                .all(|s| listed.contains(*s))
                .then_some(listed)
        })
        .await
    }

    /// The trace ids a search by service finds (`/api/traces?service=…`, Grafana's Jaeger
    /// search), once `trace_id` is among them.
    pub async fn search(&self, service: &str, trace_id: &str) -> Vec<String> {
        let path = format!("/api/traces?service={service}&lookback=1h&limit=100");
        let what = format!("trace {trace_id} in a search for service {service}");
        self.poll(&path, &what, |json| {
            let found: Vec<String> = json["data"]
                .as_array()?
                .iter()
                .map(|t| string(t, "traceID"))
                .collect();
            found.iter().any(|t| t == trace_id).then_some(found)
        })
        .await
    }

    /// `/api/traces/{trace_id}`, once `ready` accepts it (`what` names what it waits for).
    pub async fn trace(&self, trace_id: &str, what: &str, ready: impl Fn(&Trace) -> bool) -> Trace {
        let path = format!("/api/traces/{trace_id}");
        let what = format!("trace {trace_id} with {what}");
        self.poll(&path, &what, |json| {
            let traces = json["data"].as_array()?;
            assert_eq!(traces.len(), 1, "one trace per id: {json}");
            let trace = Trace::from_v1(&traces[0]);
            ready(&trace).then_some(trace)
        })
        .await
    }

    /// `/api/v3/traces/{trace_id}`, once it holds at least `min_spans` spans.
    pub async fn trace_v3(&self, trace_id: &str, min_spans: usize) -> Vec<V3Span> {
        let path = format!("/api/v3/traces/{trace_id}");
        let what = format!("{min_spans} spans of trace {trace_id} (API v3)");
        self.poll(&path, &what, |json| {
            let spans = V3Span::all(json);
            (spans.len() >= min_spans).then_some(spans)
        })
        .await
    }
}

/// A trace as `/api/traces/{id}` returns it.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

/// One span of a [`Trace`], with its process's service name resolved.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub operation: String,
    pub service: String,
    pub references: Vec<Reference>,
    pub tags: Vec<(String, Value)>,
}

/// A `CHILD_OF` (the parent) or `FOLLOWS_FROM` (an OpenTelemetry span link) reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub ref_type: String,
    pub trace_id: String,
    pub span_id: String,
}

fn string(json: &Value, key: &str) -> String {
    json[key].as_str().unwrap_or_default().to_owned()
}

fn key_values(json: &Value) -> Vec<(String, Value)> {
    json.as_array()
        .into_iter()
        .flatten()
        .map(|kv| (string(kv, "key"), kv["value"].clone()))
        .collect()
}

/// A tag's value as text, whatever its JSON type.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Trace {
    fn from_v1(json: &Value) -> Self {
        let processes = &json["processes"];
        let spans = json["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|span| Span {
                trace_id: string(span, "traceID"),
                span_id: string(span, "spanID"),
                operation: string(span, "operationName"),
                service: string(&processes[string(span, "processID")], "serviceName"),
                references: span["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| Reference {
                        ref_type: string(r, "refType"),
                        trace_id: string(r, "traceID"),
                        span_id: string(r, "spanID"),
                    })
                    .collect(),
                tags: key_values(&span["tags"]),
            })
            .collect();
        Self {
            trace_id: string(json, "traceID"),
            spans,
        }
    }

    /// The one span called `operation`.
    #[track_caller]
    pub fn named(&self, operation: &str) -> &Span {
        let mut found = self.spans.iter().filter(|s| s.operation == operation);
        let span = found
            .next()
            .unwrap_or_else(|| panic!("no span {operation:?} in {:#?}", self.spans));
        assert!(found.next().is_none(), "two spans {operation:?}");
        span
    }

    /// The spans whose parent is `parent`.
    pub fn children<'a>(&'a self, parent: &Span) -> Vec<&'a Span> {
        self.spans
            .iter()
            .filter(|s| s.parent() == Some(parent.span_id.as_str()))
            .collect()
    }

    /// How many spans `service` sent.
    pub fn count(&self, service: &str) -> usize {
        self.spans.iter().filter(|s| s.service == service).count()
    }

    /// Whether a span called `operation` has arrived.
    pub fn has(&self, operation: &str) -> bool {
        self.spans.iter().any(|s| s.operation == operation)
    }

    /// The service names of the trace's spans.
    pub fn services(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|s| s.service.as_str()).collect()
    }
}

impl Span {
    /// The value of tag `key` as text (numbers as their decimal form).
    pub fn tag(&self, key: &str) -> Option<String> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| text(v))
    }

    /// The parent's span id (its `CHILD_OF` reference).
    pub fn parent(&self) -> Option<&str> {
        self.references
            .iter()
            .find(|r| r.ref_type == "CHILD_OF")
            .map(|r| r.span_id.as_str())
    }

    /// Its OpenTelemetry span links, which Jaeger shows as `FOLLOWS_FROM` references.
    pub fn links(&self) -> Vec<&Reference> {
        self.references
            .iter()
            .filter(|r| r.ref_type == "FOLLOWS_FROM")
            .collect()
    }
}

/// One span as `/api/v3/traces/{id}` returns it (OTLP JSON).
#[derive(Debug, Clone)]
pub struct V3Span {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's span kind as Jaeger renders it: its number (`2` server, `3` client).
    pub kind: String,
    pub attributes: Vec<(String, Value)>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
}

impl V3Span {
    fn all(json: &Value) -> Vec<Self> {
        let mut spans = Vec::new();
        for resource in json["result"]["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let service = key_values(&resource["resource"]["attributes"])
                .into_iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| any_value(&v))
                .unwrap_or_default();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    spans.push(Self {
                        service: service.clone(),
                        trace_id: string(span, "traceId"),
                        span_id: string(span, "spanId"),
                        parent_span_id: string(span, "parentSpanId"),
                        name: string(span, "name"),
                        kind: text(&span["kind"]),
                        attributes: key_values(&span["attributes"]),
                        links: span["links"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|l| (string(l, "traceId"), string(l, "spanId")))
                            .collect(),
                    });
                }
            }
        }
        spans
    }

    /// The value of attribute `key` as OTLP JSON (`{"intValue": "3"}`: its type shows).
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// An OTLP `AnyValue` (`{"stringValue": "x"}`, `{"intValue": "3"}`, …) as text.
fn any_value(value: &Value) -> String {
    value
        .as_object()
        .and_then(|o| o.values().next())
        .map(text)
        .unwrap_or_default()
}
