//! `holdup explain` as a user runs it: the real binary against a real Jaeger v2 (built by
//! `tests/tools.sh`) that holds traces exported by a real `holdup serve` and `holdup upstream`
//! (the stack of `tests/it/jaeger.rs`). Failures: Jaeger unreachable, an unknown trace id, and
//! a server that answers garbage (a tiny local HTTP server), each a clear error with a
//! non-zero exit code, never a panic.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    process::Output,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use holdup::proto::UpstreamCallRequest;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, KeyValue, any_value::Value as AnyKind},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind},
};
use serde_json::Value;

use crate::{common::jaeger::Jaeger, jaeger::Stack};

/// `holdup explain ARGS`: its exit status, stdout and stderr.
async fn explain(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_holdup"))
        .arg("explain")
        .args(args)
        .env_remove("HOLDUP_JAEGER_URL")
        .env_remove("HOLDUP_JAEGER_API")
        .kill_on_drop(true)
        .output()
        .await
        .expect("holdup explain runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `holdup explain ARGS`, which must succeed; its stdout.
#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "holdup explain failed ({}): {}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs `holdup explain ARGS --json`, which must succeed; the JSON it printed.
async fn explain_json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = succeeded(&explain(&args).await);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A failed run: exit code 1 (not a panic's 101, not a usage error's 64), stderr naming each of
/// `needles`.
#[track_caller]
fn failed_clearly(output: &Output, needles: &[&str]) {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit code; stderr: {stderr}; stdout: {}",
        text(&output.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
}

fn jaeger_url(jaeger: &Jaeger) -> String {
    format!("http://{}", jaeger.query)
}

/// The parts of a diagnosed node as (cause, us).
fn parts(node: &Value) -> Vec<(String, i64)> {
    node["cause"]["parts"]
        .as_array()
        .unwrap_or_else(|| panic!("a diagnosed node: {node:#}"))
        .iter()
        .map(|p| {
            (
                p["cause"].as_str().unwrap_or_default().to_owned(),
                p["us"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The end-to-end time by cause adds up to the root's time on the path.
#[track_caller]
fn causes_add_up(e: &Value) {
    let sum: i64 = e["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| c["us"].as_i64().expect("us"))
        .sum();
    let root = e["root"]["on_path_us"].as_i64().expect("on_path_us");
    assert!(
        sum.abs_diff(root) <= root.unsigned_abs() / 50 + 1_000,
        "causes sum to {sum} us, the root is {root} us: {e:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explains_a_two_service_trace_with_each_segments_cause() {
    let Some(stack) = Stack::start(&[]).await else {
        return;
    };
    let (trace_id, _, outcome) = stack
        .upstream_call(UpstreamCallRequest {
            latency_ms: Some(200),
            error_rate: Some(0.0),
            stall_rate: Some(0.0),
            max_retries: Some(0),
            ..Default::default()
        })
        .await;
    outcome.expect("the upstream answers");
    stack
        .jaeger
        .trace(&trace_id, "the server span and the upstream span", |t| {
            t.has("holdup.v1.Lab/UpstreamCall") && t.count("holdup-upstream") == 1
        })
        .await;
    let url = jaeger_url(&stack.jaeger);

    // The text a person reads.
    let out = succeeded(&explain(&[&trace_id, "--jaeger", &url]).await);
    eprintln!("holdup explain {trace_id}:\n{out}");
    let headline = out.lines().nth(1).expect("a headline");
    assert!(headline.starts_with("UpstreamCall "), "{out}");
    assert!(
        headline.contains(" upstream (holdup-upstream GET /work "),
        "{out}"
    );
    assert!(
        out.contains("uninstrumented: holdup-upstream GET /work"),
        "{out}"
    );
    assert!(out.contains("critical path:"), "{out}");

    // The same as JSON, through each API.
    for api in ["v3", "v1"] {
        let e = explain_json(&[&trace_id, "--jaeger", &url, "--api", api]).await;
        assert_eq!(e["trace_id"], trace_id.as_str());
        assert_eq!(e["api"], if api == "v3" { "api/v3" } else { "api/traces" });
        let root = &e["root"];
        assert_eq!(root["operation"], "holdup.v1.Lab/UpstreamCall", "{e:#}");
        assert_eq!(root["cause"]["type"], "diagnosed");
        assert_eq!(root["cause"]["verdict"], "upstream");
        let parts = parts(root);
        assert_eq!(parts[0].0, "upstream", "{parts:?}");
        assert!(parts[0].1 >= 180_000, "{parts:?}");
        let upstream = &root["cause"]["parts"][0];
        let attempt = &upstream["path"][0];
        assert_eq!(attempt["operation"], "GET /work");
        assert_eq!(attempt["service"], "holdup");
        assert_eq!(attempt["cause"]["type"], "stage");
        assert_eq!(attempt["cause"]["stage"], "upstream");
        let server = &attempt["children"][0];
        assert_eq!(server["service"], "holdup-upstream");
        assert_eq!(server["cause"]["type"], "uninstrumented");
        assert_eq!(
            server["cause"]["label"],
            "uninstrumented: holdup-upstream GET /work"
        );
        assert!(server["on_path_us"].as_i64().expect("us") >= 195_000);
        causes_add_up(&e);
    }

    // The page with the waterfall.
    let dir = tempfile::tempdir().expect("a temp dir");
    let page = dir.path().join("explain.html");
    let page_arg = page.to_str().expect("a UTF-8 path");
    succeeded(&explain(&[&trace_id, "--jaeger", &url, "--html", page_arg]).await);
    let html = std::fs::read_to_string(&page).expect("the page was written");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<svg"), "{html}");
    assert!(html.contains(&trace_id));
    assert!(html.contains("holdup-upstream GET /work"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explains_contention_by_its_culprits_and_follows_them_into_their_traces() {
    let Some(stack) = Stack::start(&["--workers", "1"]).await else {
        return;
    };
    let (victim, spin, _) = crate::jaeger::fast_behind_a_spin(&stack).await;
    assert_eq!(victim.verdict, "runtime-contention", "{victim:?}");
    let spun = vec![spin.trace_id];
    // Every trace explain will read is in Jaeger first.
    stack
        .jaeger
        .trace(&victim.trace_id, "the Fast span and its links", |t| {
            t.has("holdup.v1.Lab/Fast") && !t.named("holdup.v1.Lab/Fast").links().is_empty()
        })
        .await;
    for trace_id in &spun {
        stack
            .jaeger
            .trace(trace_id, "the culprit's span", |t| {
                t.has("holdup.v1.Lab/CpuBound")
            })
            .await;
    }
    let url = jaeger_url(&stack.jaeger);

    let out = succeeded(&explain(&[&victim.trace_id, "--jaeger", &url]).await);
    eprintln!("holdup explain {}:\n{out}", victim.trace_id);
    assert!(
        out.contains("runtime-contention blamed on CpuBound "),
        "{out}"
    );
    assert!(out.contains("(own-cpu)"), "the culprit was followed: {out}");

    let e = explain_json(&[&victim.trace_id, "--jaeger", &url]).await;
    let root = &e["root"];
    assert_eq!(root["cause"]["verdict"], "runtime-contention");
    let contention = &root["cause"]["parts"][0];
    assert_eq!(contention["cause"], "runtime-contention", "{e:#}");
    let culprits: Vec<&Value> = contention["culprits"]
        .as_array()
        .expect("culprits")
        .iter()
        .filter(|c| c.get("trace_id").is_some())
        .collect();
    let blamed: Vec<String> = culprits
        .iter()
        .map(|c| c["trace_id"].as_str().expect("an id").to_owned())
        .collect();
    assert!(
        !blamed.is_empty() && blamed.iter().all(|b| spun.contains(b)),
        "the spins {spun:?} are the culprits: {e:#}"
    );
    for culprit in culprits {
        assert!(
            culprit["label"]
                .as_str()
                .expect("a label")
                .starts_with("CpuBound "),
            "{culprit}"
        );
        assert!(culprit["share_us"].as_i64().expect("a share") > 0);
        let followed = &culprit["followed"];
        assert_eq!(followed["operation"], "holdup.v1.Lab/CpuBound", "{culprit}");
        // A spin computed (own-cpu), or waited for the others first (runtime-contention).
        assert!(
            followed["verdict"] == "own-cpu" || followed["verdict"] == "runtime-contention",
            "{culprit}"
        );
        assert!(followed["duration_us"].as_i64().expect("us") >= 500_000);
    }
    causes_add_up(&e);

    // Many traces, one question (through each API's search): the slowest Fast calls were
    // late because of contention, blamed on CpuBound.
    for api in ["v3", "v1"] {
        let s = explain_json(&[
            "--jaeger",
            &url,
            "--api",
            api,
            "--service",
            "holdup",
            "--operation",
            "holdup.v1.Lab/Fast",
            "--since",
            "5m",
            "--slowest",
            "5",
        ])
        .await;
        assert_eq!(s["found"], 1, "{s:#}");
        assert_eq!(s["causes"][0]["cause"], "runtime-contention", "{s:#}");
        assert!(s["causes"][0]["share"].as_f64().expect("a share") > 0.5);
        assert_eq!(s["blamed"][0]["culprit"], "CpuBound", "{s:#}");
        assert_eq!(s["traces"][0]["trace_id"], victim.trace_id.as_str());
    }
}

/// A span of a service without holdup ("gateway"), sent to Jaeger over OTLP as a real
/// instrumented gateway would: the parent of holdup's server span.
async fn export_gateway_span(
    jaeger: &Jaeger,
    trace_id: &str,
    span_id: &str,
    from: SystemTime,
    to: SystemTime,
) {
    let nanos = |t: SystemTime| {
        u64::try_from(t.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos()).expect("fits")
    };
    let string = |s: &str| {
        Some(AnyValue {
            value: Some(AnyKind::StringValue(s.to_owned())),
        })
    };
    let span = Span {
        trace_id: hex::decode(trace_id).expect("hex"),
        span_id: hex::decode(span_id).expect("hex"),
        name: "GET /checkout".into(),
        kind: SpanKind::Server.into(),
        start_time_unix_nano: nanos(from),
        end_time_unix_nano: nanos(to),
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: string("gateway"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    TraceServiceClient::connect(jaeger.otlp_endpoint())
        .await
        .expect("Jaeger's OTLP receiver")
        .export(request)
        .await
        .expect("Jaeger takes the span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninstrumented_span_is_named_and_its_time_passed_down_the_path() {
    let Some(stack) = Stack::start(&[]).await else {
        return;
    };
    let from = SystemTime::now();
    let (trace_id, gateway_span, outcome) = stack
        .upstream_call(UpstreamCallRequest {
            latency_ms: Some(100),
            error_rate: Some(0.0),
            stall_rate: Some(0.0),
            max_retries: Some(0),
            ..Default::default()
        })
        .await;
    outcome.expect("the upstream answers");
    // The gateway does 80 ms of its own after holdup answers.
    tokio::time::sleep(Duration::from_millis(80)).await;
    export_gateway_span(
        &stack.jaeger,
        &trace_id,
        &gateway_span,
        from,
        SystemTime::now(),
    )
    .await;
    stack
        .jaeger
        .trace(&trace_id, "the gateway, server and upstream spans", |t| {
            t.count("gateway") == 1
                && t.has("holdup.v1.Lab/UpstreamCall")
                && t.count("holdup-upstream") == 1
        })
        .await;
    let url = jaeger_url(&stack.jaeger);

    let out = succeeded(&explain(&[&trace_id, "--jaeger", &url]).await);
    eprintln!("holdup explain {trace_id}:\n{out}");
    assert!(
        out.contains("uninstrumented: gateway GET /checkout"),
        "{out}"
    );

    let e = explain_json(&[&trace_id, "--jaeger", &url]).await;
    let root = &e["root"];
    assert_eq!(root["service"], "gateway", "{e:#}");
    assert_eq!(root["cause"]["type"], "uninstrumented");
    assert_eq!(
        root["cause"]["label"],
        "uninstrumented: gateway GET /checkout"
    );
    assert!(root["own_us"].as_i64().expect("us") >= 70_000, "{e:#}");
    let server = &root["children"][0];
    assert_eq!(server["operation"], "holdup.v1.Lab/UpstreamCall");
    assert_eq!(server["cause"]["verdict"], "upstream");
    let by_cause = |cause: &str| {
        e["causes"]
            .as_array()
            .expect("causes")
            .iter()
            .find(|c| c["cause"] == cause)
            .and_then(|c| c["us"].as_i64())
            .unwrap_or(0)
    };
    assert!(
        by_cause("uninstrumented: gateway GET /checkout") >= 70_000,
        "{e:#}"
    );
    assert!(by_cause("upstream") >= 90_000, "{e:#}");
    causes_add_up(&e);
}

#[tokio::test]
async fn an_unreachable_jaeger_is_a_clear_error_naming_its_url() {
    let url = format!("http://{}", crate::common::free_port());
    let output = explain(&["0af7651916cd43dd8448eb211c80319c", "--jaeger", &url]).await;
    failed_clearly(&output, &["cannot reach Jaeger at", &url]);
    let output = explain(&["--service", "holdup", "--jaeger", &url]).await;
    failed_clearly(&output, &["cannot reach Jaeger at", &url]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_trace_id_is_a_clear_error_naming_it_and_the_url() {
    let _serial = crate::common::serial().await;
    let Some(jaeger) = Jaeger::start().await else {
        return;
    };
    let url = jaeger_url(&jaeger);
    let unknown = "0af7651916cd43dd8448eb211c80319c";
    for api in ["auto", "v3", "v1"] {
        let output = explain(&[unknown, "--jaeger", &url, "--api", api]).await;
        failed_clearly(
            &output,
            &[&format!("trace {unknown} not found in Jaeger at {url}")],
        );
    }
    // A search that finds nothing says so, too.
    let output = explain(&["--jaeger", &url, "--service", "nobody"]).await;
    failed_clearly(&output, &["no trace of nobody", &url]);
}

/// A local HTTP server that answers every request with `status` and `body`, until dropped.
struct Garbage {
    addr: SocketAddr,
}

impl Garbage {
    fn serve(status: &'static str, body: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        std::thread::spawn(move || {
            // Ends when the test process does; a handful of connections per test.
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut request = [0u8; 4096];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.read(&mut request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[tokio::test]
async fn a_malformed_answer_is_an_error_never_a_panic() {
    for (status, body, says) in [
        ("200 OK", "garbage{", "cannot read"),
        ("200 OK", "[1, 2, 3]", "cannot read"),
        (
            "200 OK",
            r#"{"result": {"resourceSpans": 7}}"#,
            "cannot read",
        ),
        (
            "200 OK",
            r#"{"result": {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}}"#,
            "cannot read",
        ),
        (
            "500 Internal Server Error",
            "boom",
            "answered HTTP 500: boom",
        ),
        ("404 Not Found", "404 page not found", "answered HTTP 404"),
    ] {
        let server = Garbage::serve(status, body);
        let url = server.url();
        for args in [
            vec!["0af7651916cd43dd8448eb211c80319c", "--jaeger", &url],
            vec!["--service", "holdup", "--jaeger", &url],
        ] {
            let output = explain(&args).await;
            failed_clearly(&output, &[says, &url]);
        }
    }
}
