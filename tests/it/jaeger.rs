//! Traces as a user reads them in Jaeger: `holdup serve` and `holdup upstream` run as separate
//! processes (as in deploy/) and export to a real Jaeger v2; every check goes through
//! Jaeger's query APIs (`/api/traces/{id}`, `/api/v3/traces/{id}`, `/api/services`).
//!
//! The project's own OTLP collector (`tests/observability.rs`) stays for span-level details
//! Jaeger does not show exactly (span kinds, events, the console).

use std::{net::SocketAddr, time::Duration};

use crate::common::{
    client,
    jaeger::{Jaeger, Span, Trace},
    process::{self, KillOnDrop},
};
use holdup::proto::{
    CpuBoundRequest, CpuMode, Diagnostics, FastRequest, UpstreamCallReply, UpstreamCallRequest,
};
use tonic::{Code, Request, Status};

/// Jaeger, the upstream simulator and holdup serve, wired as in deploy/ (also the stack of
/// `holdup explain`'s tests).
pub(crate) struct Stack {
    pub(crate) jaeger: Jaeger,
    pub(crate) serve: SocketAddr,
    _processes: [KillOnDrop; 2],
    /// Starting three processes loads the machine for a moment: not while another test
    /// measures latency.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Stack {
    /// `None` when Jaeger is not installed (outside CI). `serve_args` come after
    /// [`process::serve`]'s defaults and the separate upstream's URL.
    pub(crate) async fn start(serve_args: &[&str]) -> Option<Self> {
        let serial = crate::common::serial().await;
        let jaeger = Jaeger::start().await?;
        let endpoint = jaeger.otlp_endpoint();
        // Export every 100 ms instead of every 5 s: the reads below poll for the spans.
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ];
        let upstream = process::start(
            &["upstream", "--listen", "127.0.0.1:0", "--no-console"],
            &env,
            None,
        );
        let upstream_url = format!(
            "http://{}",
            upstream.addr_after("holdup upstream simulator listening on ")
        );
        let mut args = vec!["--upstream-url", upstream_url.as_str()];
        args.extend_from_slice(serve_args);
        let (serve, serve_addr) = process::serve(&args, &env);
        Some(Self {
            jaeger,
            serve: serve_addr,
            _processes: [
                KillOnDrop(Some(serve.child)),
                KillOnDrop(Some(upstream.child)),
            ],
            _serial: serial,
        })
    }
}

impl Stack {
    /// Sends `request` as a caller with a trace of its own would (a fresh W3C `traceparent`);
    /// returns the caller's trace id and span id, and the outcome.
    pub(crate) async fn upstream_call(
        &self,
        request: UpstreamCallRequest,
    ) -> (String, String, Result<UpstreamCallReply, Status>) {
        let hex = |bytes: usize| -> String {
            (0..bytes)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect()
        };
        let (trace_id, caller_span) = (hex(16), hex(8));
        let mut request = Request::new(request);
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-{caller_span}-01")
                .parse()
                .expect("a valid header value"),
        );
        let outcome = client(self.serve)
            .await
            .upstream_call(request)
            .await
            .map(tonic::Response::into_inner);
        (trace_id, caller_span, outcome)
    }
}

/// The server span of an `UpstreamCall`, and the client span of each of its attempts.
const SERVER_SPAN: &str = "holdup.v1.Lab/UpstreamCall";
const ATTEMPT_SPAN: &str = "GET /work";

/// The split and verdict attributes every server span carries.
const SPLIT_TAGS: [&str; 7] = [
    "holdup.total_us",
    "holdup.busy_us",
    "holdup.scheduled_us",
    "holdup.idle_us",
    "holdup.queue_us",
    "holdup.polls",
    "holdup.max_poll_us",
];

/// How far the span's split may run past the reply's: the end of the handler's last poll and
/// the way back to the transport, a fraction of a millisecond on an idle machine.
const REPLY_TO_SPAN_SLACK_US: u64 = 5_000;

/// OTLP's span kinds, as the v3 API renders them.
const SPAN_KIND_SERVER: &str = "2";
const SPAN_KIND_CLIENT: &str = "3";

#[track_caller]
fn micros(span: &Span, tag: &str) -> u64 {
    span.tag(tag)
        .unwrap_or_else(|| panic!("{} has no {tag}: {:?}", span.operation, span.tags))
        .parse()
        .unwrap_or_else(|e| panic!("{tag} is not a number: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_call_is_one_trace_across_both_services() {
    let Some(stack) = Stack::start(&[]).await else {
        return;
    };
    // Every attempt is answered 503: two attempts, each with the upstream's span under it.
    // Each takes 60 ms, so the upstream's 120 ms outweigh the one backoff (uniform in 0..=50
    // ms) and the verdict is `upstream` every time (at 20 ms a backoff over 40 ms, one run in
    // six, made it `timer`, rightly).
    let (trace_id, caller_span, outcome) = stack
        .upstream_call(UpstreamCallRequest {
            latency_ms: Some(60),
            error_rate: Some(1.0),
            max_retries: Some(1),
            ..Default::default()
        })
        .await;
    let status = outcome.expect_err("every attempt fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The server span (it ends last in its process) and both upstream spans.
    let trace: Trace = stack
        .jaeger
        .trace(&trace_id, "the server span and 2 upstream spans", |t| {
            t.has(SERVER_SPAN) && t.count("holdup-upstream") == 2
        })
        .await;
    assert_eq!(trace.trace_id, trace_id);
    assert_eq!(
        trace.services(),
        ["holdup", "holdup-upstream"].into(),
        "{trace:#?}"
    );
    let server = trace.named(SERVER_SPAN);
    assert_eq!(server.service, "holdup");
    assert_eq!(
        server.parent(),
        Some(caller_span.as_str()),
        "the caller's span is the parent"
    );
    assert_eq!(server.tag("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(server.tag("rpc.method").as_deref(), Some("UpstreamCall"));
    assert_eq!(server.tag("rpc.grpc.status_code").as_deref(), Some("14"));
    assert_eq!(server.tag("span.kind").as_deref(), Some("server"));
    assert!(
        trace.spans.iter().all(|s| s.trace_id == trace_id),
        "{trace:#?}"
    );
    // The split and the verdict, on a failed call too.
    for tag in SPLIT_TAGS {
        micros(server, tag);
    }
    let parts = ["busy", "scheduled", "idle"].map(|p| micros(server, &format!("holdup.{p}_us")));
    let total = micros(server, "holdup.total_us");
    assert!(
        parts.iter().sum::<u64>() <= total + 1_000,
        "busy + scheduled + idle {parts:?} exceed total {total}"
    );
    assert_eq!(server.tag("holdup.verdict").as_deref(), Some("upstream"));

    // Its stages: an attempt span per try, and the (timer) backoff before each.
    let stages = trace.children(server);
    let attempts: Vec<_> = stages
        .iter()
        .filter(|s| s.operation == ATTEMPT_SPAN)
        .collect();
    assert_eq!(attempts.len(), 2, "one stage span per attempt: {stages:#?}");
    for stage in stages.iter().filter(|s| s.operation != ATTEMPT_SPAN) {
        assert_eq!(stage.operation, "upstream.backoff", "{stage:#?}");
        assert_eq!(stage.tag("holdup.stage").as_deref(), Some("timer"));
    }
    for attempt in &attempts {
        assert_eq!(attempt.service, "holdup");
        assert_eq!(attempt.tag("span.kind").as_deref(), Some("client"));
        assert_eq!(
            attempt.tag("http.response.status_code").as_deref(),
            Some("503")
        );
        let upstream = trace.children(attempt);
        assert_eq!(upstream.len(), 1, "one upstream span under {attempt:#?}");
        assert_eq!(upstream[0].service, "holdup-upstream");
        assert_eq!(upstream[0].operation, "GET /work");
        assert_eq!(upstream[0].tag("span.kind").as_deref(), Some("server"));
    }
    assert_eq!(
        trace.spans.len(),
        1 + stages.len() + attempts.len(),
        "the server span, its stages, an upstream span per attempt: {trace:#?}"
    );

    // The same trace through the v3 API (OTLP JSON): the same spans, the same tree.
    let v3 = stack.jaeger.trace_v3(&trace_id, trace.spans.len()).await;
    let ids = |ids: Vec<&str>| -> std::collections::BTreeSet<String> {
        ids.into_iter().map(str::to_owned).collect()
    };
    assert_eq!(
        ids(v3.iter().map(|s| s.span_id.as_str()).collect()),
        ids(trace.spans.iter().map(|s| s.span_id.as_str()).collect()),
    );
    let v3_server = v3
        .iter()
        .find(|s| s.name == SERVER_SPAN)
        .expect("the server span in API v3");
    assert_eq!(v3_server.service, "holdup");
    assert_eq!(v3_server.trace_id, trace_id);
    assert_eq!(v3_server.parent_span_id, caller_span);
    // An integer, as the RPC conventions have it: OTLP JSON shows the type.
    assert_eq!(
        v3_server.attribute("rpc.grpc.status_code"),
        Some(&serde_json::json!({"intValue": "14"}))
    );
    assert_eq!(v3_server.kind, SPAN_KIND_SERVER);
    for attempt in v3
        .iter()
        .filter(|s| s.parent_span_id == v3_server.span_id && s.name == ATTEMPT_SPAN)
    {
        assert_eq!(attempt.kind, SPAN_KIND_CLIENT);
        // An integer, as OTel's HTTP conventions (and typed trace queries) want it.
        assert_eq!(
            attempt.attribute("http.response.status_code"),
            Some(&serde_json::json!({ "intValue": "503" })),
            "{attempt:#?}"
        );
    }
    assert_eq!(
        v3.iter().filter(|s| s.service == "holdup-upstream").count(),
        2
    );
    // Nothing here waited for a runtime worker: no span links (blame) to other requests.
    assert!(v3.iter().all(|s| s.links.is_empty()), "{v3:#?}");

    // Grafana's Jaeger data source finds it by either service.
    for service in ["holdup", "holdup-upstream"] {
        stack.jaeger.search(service, &trace_id).await;
    }
    let services = stack.jaeger.services(&["holdup", "holdup-upstream"]).await;
    assert_eq!(
        services,
        ["holdup".to_owned(), "holdup-upstream".to_owned()].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_shows_the_split_the_reply_carries() {
    let Some(stack) = Stack::start(&[]).await else {
        return;
    };
    let (trace_id, _, outcome) = stack
        .upstream_call(UpstreamCallRequest {
            latency_ms: Some(30),
            error_rate: Some(0.0),
            stall_rate: Some(0.0),
            max_retries: Some(0),
            ..Default::default()
        })
        .await;
    let reply = outcome.expect("the upstream answers");
    let d = crate::common::diagnostics(&reply.diagnostics);
    assert_eq!(d.trace_id, trace_id);

    let trace = stack
        .jaeger
        .trace(&trace_id, "the server span and the upstream span", |t| {
            t.has(SERVER_SPAN) && t.count("holdup-upstream") == 1
        })
        .await;
    let server = trace.named(SERVER_SPAN);
    // The reply's diagnosis is taken as the handler builds it, the span's when the response
    // leaves: the span's clock runs a little longer, never shorter.
    for (tag, value) in [
        ("holdup.total_us", d.total_us),
        ("holdup.busy_us", d.busy_us),
        ("holdup.scheduled_us", d.scheduled_us),
        ("holdup.idle_us", d.idle_us),
        ("holdup.queue_us", d.queue_us),
        ("holdup.max_poll_us", d.max_poll_us),
    ] {
        let shown = micros(server, tag);
        assert!(
            shown.abs_diff(value) <= REPLY_TO_SPAN_SLACK_US,
            "{tag}: Jaeger shows {shown}, the reply said {value}"
        );
    }
    assert!(micros(server, "holdup.total_us") >= d.total_us);
    assert!(micros(server, "holdup.polls") >= d.polls);
    assert_eq!(server.tag("holdup.verdict"), Some(d.verdict.clone()));
    assert_eq!(d.verdict, "upstream", "{d:?}");
    assert!(
        d.busy_us + d.scheduled_us + d.idle_us <= d.total_us + 1_000,
        "busy + scheduled + idle exceed total: {d:?}"
    );
    // It waited for no runtime worker, so it blames nobody: no links to other requests.
    assert!(server.links().is_empty(), "{server:#?}");
    let attempt: Vec<_> = trace
        .children(server)
        .into_iter()
        .filter(|s| s.operation == ATTEMPT_SPAN)
        .collect();
    assert_eq!(attempt.len(), 1, "{trace:#?}");
    assert_eq!(
        attempt[0].tag("http.response.status_code").as_deref(),
        Some("200")
    );
    let upstream = trace.children(attempt[0]);
    assert_eq!(upstream.len(), 1, "{trace:#?}");
    assert_eq!(upstream[0].service, "holdup-upstream");
}

/// How long each of the two inline `CpuBound` calls holds its lab worker.
const SPIN_MS: u32 = 600;

/// One inline `CpuBound` of [`SPIN_MS`] on a server of one worker, then a `Fast` on a fresh
/// connection 150 ms in: every other request waits for that worker, and the spin alone holds
/// it (two workers on two shared cores leave where tokio queues each connection, and which
/// thread gets a CPU, to chance). Returns the `Fast`'s and the spin's diagnostics, and how
/// long the `Fast` took at its client.
pub(crate) async fn fast_behind_a_spin(stack: &Stack) -> (Diagnostics, Diagnostics, Duration) {
    // Connected first: a connect waits for the worker too.
    let mut c = client(stack.serve).await;
    let spin = tokio::spawn(async move {
        let reply = c
            .cpu_bound(CpuBoundRequest {
                mode: CpuMode::Inline.into(),
                work_ms: SPIN_MS,
                iterations: 0,
            })
            .await
            .expect("CpuBound answers")
            .into_inner();
        crate::common::diagnostics(&reply.diagnostics).clone()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let sent = std::time::Instant::now();
    let reply = client(stack.serve)
        .await
        .fast(FastRequest {
            message: "victim".into(),
        })
        .await
        .expect("Fast answers")
        .into_inner();
    let waited = sent.elapsed();
    let victim = crate::common::diagnostics(&reply.diagnostics).clone();
    (victim, spin.await.expect("the spin finished"), waited)
}

/// Who made a request late, as Jaeger shows it: the victim's server span carries a reference
/// (an OpenTelemetry link) to the server span of each request that held the workers, and those
/// are spans of traces Jaeger has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_request_references_the_requests_that_held_the_workers() {
    let Some(stack) = Stack::start(&["--workers", "1"]).await else {
        return;
    };
    let (victim, spin, waited) = fast_behind_a_spin(&stack).await;
    let spun = [spin.trace_id];
    assert_eq!(
        victim.verdict, "runtime-contention",
        "{victim:?} {waited:?}"
    );
    // Requests are named by trace; a task outside any request (a connection's, for a few
    // milliseconds) may be blamed too, by its task name, and has no trace to link to.
    let requests: Vec<_> = victim
        .culprits
        .iter()
        .filter(|c| !c.trace_id.is_empty())
        .collect();
    let blamed: Vec<_> = requests.iter().map(|c| c.trace_id.clone()).collect();
    assert!(
        !blamed.is_empty() && blamed.iter().all(|b| spun.contains(b)),
        "the reply blames the spins {spun:?}: {:?}",
        victim.culprits
    );

    let trace = stack
        .jaeger
        .trace(&victim.trace_id, "the Fast span and its links", |t| {
            t.has("holdup.v1.Lab/Fast") && !t.named("holdup.v1.Lab/Fast").links().is_empty()
        })
        .await;
    let server = trace.named("holdup.v1.Lab/Fast");
    assert_eq!(
        server.tag("holdup.verdict").as_deref(),
        Some("runtime-contention")
    );
    let mut referenced: Vec<(String, String)> = server
        .links()
        .iter()
        .map(|r| (r.trace_id.clone(), r.span_id.clone()))
        .collect();
    referenced.sort_unstable();
    let mut culprits: Vec<(String, String)> = requests
        .iter()
        .map(|c| (c.trace_id.clone(), c.span_id.clone()))
        .collect();
    culprits.sort_unstable();
    assert_eq!(
        referenced, culprits,
        "Jaeger's references are the reply's culprits"
    );

    // Each reference leads to a trace Jaeger has: the culprit's own CpuBound server span.
    for (trace_id, span_id) in &referenced {
        let culprit = stack
            .jaeger
            .trace(trace_id, "the culprit's server span", |t| {
                t.has("holdup.v1.Lab/CpuBound")
            })
            .await;
        let span = culprit.named("holdup.v1.Lab/CpuBound");
        assert_eq!(
            &span.span_id, span_id,
            "the link names the culprit's server span"
        );
        // It computed (own-cpu), or first waited for the other spins (runtime-contention).
        let verdict = span.tag("holdup.verdict");
        assert!(
            matches!(verdict.as_deref(), Some("own-cpu" | "runtime-contention")),
            "{verdict:?}"
        );
    }
    // The v3 API (OTLP JSON) carries the same links.
    let v3 = stack.jaeger.trace_v3(&victim.trace_id, 1).await;
    let fast = v3
        .iter()
        .find(|s| s.name == "holdup.v1.Lab/Fast")
        .expect("the Fast span in API v3");
    let mut links = fast.links.clone();
    links.sort_unstable();
    assert_eq!(links, culprits);
}
