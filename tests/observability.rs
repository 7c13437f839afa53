//! Traces, the long-poll watchdog and tokio-console, checked through their real protocols: an
//! OTLP collector receives the spans, the console's gRPC API lists the tasks.
//!
//! One tracing subscriber per process: every test here shares it and the collector, and picks
//! its own spans out by trace id.

// A binary of its own (it installs the global subscriber) that uses part of the harness.
#[allow(dead_code)]
mod common;

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use common::{collector::Collector, collector::Received, free_port, ms, spawn_app, spawn_with};
use holdup::{
    proto::{
        CpuBoundRequest, CpuMode, FastRequest, Query, SleepMode, SleepRequest, SlowBackendRequest,
        UpstreamCallRequest,
    },
    telemetry::subscriber::{self, Telemetry, TelemetryConfig},
};
use tonic::Request;

struct World {
    collector: Collector,
    telemetry: Telemetry,
    console: SocketAddr,
}

static WORLD: OnceLock<World> = OnceLock::new();

fn world() -> &'static World {
    WORLD.get_or_init(|| {
        let (collector, addr) = Collector::start();
        let console = free_port();
        let telemetry = subscriber::init(&TelemetryConfig {
            console: Some(console),
            // Every task shown: the tests here share one console and look tasks up by name;
            // the budget is tested against a process of its own (tests/it/console_budget.rs).
            console_budget: 1_000_000,
            otlp_endpoint: Some(format!("http://{addr}")),
            ..TelemetryConfig::default()
        })
        .expect("telemetry installs");
        World {
            collector,
            telemetry,
            console,
        }
    })
}

/// Exports every finished span now, then returns the spans of `trace_id`.
async fn trace(trace_id: &str, min: usize) -> Vec<Received> {
    tokio::task::spawn_blocking(|| world().telemetry.flush())
        .await
        .expect("flush");
    world()
        .collector
        .trace(trace_id, min, Duration::from_secs(10))
        .await
}

#[track_caller]
fn named<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    spans
        .iter()
        .find(|s| s.span.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| s.span.name.as_str()).collect();
            panic!("no span {name:?} among {names:?}")
        })
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// SpanKind values of the OTLP protocol.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// How much later the span's clock may stop than the reply's, in µs (or polls): the way from
/// the handler's reply to the response leaving, on a loaded 2-core machine in a debug build.
const REPLY_TO_SPAN_SLACK: u64 = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_span_continues_the_callers_trace_with_rpc_conventions() {
    world();
    // Every request detailed: a `Fast` call under 1 ms gets only its verdict and total on the
    // span otherwise (`EngineConfig::detail_from`), and this test compares the whole split.
    let mut app = spawn_with(|c| c.diagnose.detail_from = Duration::ZERO).await;
    let (trace_id, parent) = (random_hex(16), random_hex(8));
    let mut request = Request::new(FastRequest {
        message: "traced".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    let response = app.client.fast(request).await.expect("Fast answers");
    assert_eq!(
        response.metadata().get("x-trace-id").unwrap(),
        trace_id.as_str()
    );
    let d = response
        .into_inner()
        .diagnostics
        .expect("Fast replies carry diagnostics");
    assert_eq!(d.trace_id, trace_id);

    let spans = trace(&trace_id, 1).await;
    let server = named(&spans, "holdup.v1.Lab/Fast");
    assert_eq!(server.span.kind, SERVER);
    assert_eq!(server.parent_id(), parent);
    assert_eq!(server.service, "holdup");
    assert_eq!(server.attr("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(server.attr("rpc.service").as_deref(), Some("holdup.v1.Lab"));
    assert_eq!(server.attr("rpc.method").as_deref(), Some("Fast"));
    // Integers, not strings that read as numbers: OpenTelemetry's RPC conventions, and a
    // trace backend can only compare or sum them as such.
    assert_eq!(server.int_attr("rpc.grpc.status_code"), Some(0));
    // The span carries the same request's split as the reply, taken a moment later (when the
    // response leaves rather than when the handler builds the reply): each part as large or a
    // little larger.
    for (key, value) in [
        ("holdup.total_us", d.total_us),
        ("holdup.busy_us", d.busy_us),
        ("holdup.scheduled_us", d.scheduled_us),
        ("holdup.idle_us", d.idle_us),
        ("holdup.queue_us", d.queue_us),
        ("holdup.polls", d.polls),
        ("holdup.max_poll_us", d.max_poll_us),
    ] {
        let shown = server
            .int_attr(key)
            .unwrap_or_else(|| panic!("server span has no integer {key}: {:?}", server.attr(key)));
        let shown = u64::try_from(shown).expect("not negative");
        assert!(
            shown >= value && shown - value <= REPLY_TO_SPAN_SLACK,
            "server span's {key}: {shown}, the reply's {value}"
        );
    }
    let verdict = server.attr("holdup.verdict").expect("a verdict");
    assert!(
        holdup::diagnose::Verdict::ALL
            .iter()
            .any(|v| v.as_str() == verdict),
        "{verdict}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_are_children_of_the_server_span() {
    world();
    let mut app = spawn_app().await;
    let reply = app
        .client
        .slow_backend(SlowBackendRequest {
            hold_ms: 20,
            query: Query::Scan.into(),
            key: 3,
        })
        .await
        .unwrap()
        .into_inner();
    let trace_id = reply.diagnostics.unwrap().trace_id;
    let spans = trace(&trace_id, 4).await;
    let server = named(&spans, "holdup.v1.Lab/SlowBackend");
    for stage in ["pool.acquire", "db.hold", "db.query"] {
        let span = named(&spans, stage);
        assert_eq!(span.parent_id(), server.span_id(), "{stage} is not a child");
        assert_eq!(span.attr("db.system.name").as_deref(), Some("sqlite"));
    }
    assert!(
        named(&spans, "db.query")
            .attr("db.query.text")
            .unwrap()
            .contains("bucket")
    );

    let reply = app
        .client
        .cpu_bound(CpuBoundRequest {
            mode: CpuMode::ComputePool.into(),
            work_ms: 0,
            iterations: 1_000,
        })
        .await
        .unwrap()
        .into_inner();
    let trace_id = reply.diagnostics.unwrap().trace_id;
    let spans = trace(&trace_id, 3).await;
    let server = named(&spans, "holdup.v1.Lab/CpuBound");
    for stage in ["cpu.queue", "cpu.work"] {
        assert_eq!(
            named(&spans, stage).parent_id(),
            server.span_id(),
            "{stage}"
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_joins_the_same_trace_under_each_attempt() {
    world();
    let mut app = spawn_app().await;
    // Every attempt fails (503), so there are two attempts, each with its upstream span.
    let (trace_id, parent) = (random_hex(16), random_hex(8));
    let mut request = Request::new(UpstreamCallRequest {
        latency_ms: Some(5),
        error_rate: Some(1.0),
        max_retries: Some(1),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    let status = app.client.upstream_call(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    let spans = trace(&trace_id, 5).await;
    let server = named(&spans, "holdup.v1.Lab/UpstreamCall");
    assert_eq!(server.int_attr("rpc.grpc.status_code"), Some(14));
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.service == "holdup" && s.span.kind == CLIENT)
        .collect();
    assert_eq!(attempts.len(), 2, "one client span per attempt");
    let upstream: Vec<_> = spans
        .iter()
        .filter(|s| s.service == "holdup-upstream")
        .collect();
    assert_eq!(upstream.len(), 2, "one upstream span per attempt");
    for attempt in &attempts {
        assert_eq!(attempt.parent_id(), server.span_id());
        assert_eq!(
            attempt.attr("http.response.status_code").as_deref(),
            Some("503")
        );
        assert!(
            upstream
                .iter()
                .any(|u| u.parent_id() == attempt.span_id() && u.span.kind == SERVER),
            "no upstream span under attempt {}",
            attempt.span_id()
        );
    }
    app.shutdown().await.unwrap();
}

fn long_poll_events(span: &Received) -> usize {
    span.span
        .events
        .iter()
        .filter(|e| e.name.contains("long poll"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_flags_inline_work_and_not_an_async_wait() {
    world();
    let mut app = spawn_app().await;
    let counter =
        "holdup_long_polls_total{grpc_service=\"holdup.v1.Lab\",grpc_method=\"CpuBound\"}";
    let before = app.sample(counter).await;
    let reply = app
        .client
        .cpu_bound(CpuBoundRequest {
            mode: CpuMode::Inline.into(),
            work_ms: 200,
            iterations: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let trace_id = reply.diagnostics.unwrap().trace_id;
    let spans = trace(&trace_id, 2).await;
    let server = named(&spans, "holdup.v1.Lab/CpuBound");
    assert_eq!(long_poll_events(server), 1, "{:?}", server.span.events);
    let event = &server.span.events[0];
    assert_eq!(
        common::collector::attr(&event.attributes, "level").as_deref(),
        Some("WARN")
    );
    assert_eq!(app.sample(counter).await, before + 1.0);

    let reply = app
        .client
        .sleep(SleepRequest {
            mode: SleepMode::Async.into(),
            duration_ms: 200,
        })
        .await
        .unwrap()
        .into_inner();
    let trace_id = reply.diagnostics.unwrap().trace_id;
    let spans = trace(&trace_id, 1).await;
    assert_eq!(long_poll_events(named(&spans, "holdup.v1.Lab/Sleep")), 0);
    assert_eq!(
        app.sample("holdup_long_polls_total{grpc_service=\"holdup.v1.Lab\",grpc_method=\"Sleep\"}")
            .await,
        0.0
    );
    app.shutdown().await.unwrap();
}

fn is_named(task: &console_api::tasks::Task, name: &str) -> bool {
    task.fields.iter().any(|f| match &f.value {
        Some(console_api::field::Value::StrVal(v) | console_api::field::Value::DebugVal(v)) => {
            v.contains(name)
        }
        _ => false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_console_shows_the_inline_task_by_name_with_its_busy_time() {
    use console_api::instrument::{InstrumentRequest, instrument_client::InstrumentClient};
    let console = world().console;
    let app = spawn_app().await;
    let mut client = InstrumentClient::connect(format!("http://{console}"))
        .await
        .expect("console API answers");
    let mut updates = client
        .watch_updates(InstrumentRequest {})
        .await
        .expect("watch updates")
        .into_inner();

    // A trace id known before the call: other tests here run INLINE calls at the same time,
    // so the task watched must be this call's own.
    let trace_id = random_hex(16);
    let mut lab = app.client.clone();
    let mut request = Request::new(CpuBoundRequest {
        mode: CpuMode::Inline.into(),
        work_ms: 150,
        iterations: 0,
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{}-01", random_hex(8))
            .parse()
            .unwrap(),
    );
    let call = tokio::spawn(async move { lab.cpu_bound(request).await });
    let expected = format!("CpuBound INLINE {}", &trace_id[..8]);

    // Updates come once a second: new tasks, then their stats. Watch until this call's INLINE
    // task shows its busy time, or give up after 15 s.
    let mut inline_ids = std::collections::HashSet::new();
    let mut inline_names = Vec::new();
    let mut busiest = Duration::ZERO;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while busiest < ms(150) && tokio::time::Instant::now() < deadline {
        let Ok(Ok(Some(update))) =
            tokio::time::timeout(Duration::from_secs(3), updates.message()).await
        else {
            continue;
        };
        let Some(tasks) = update.task_update else {
            continue;
        };
        for task in &tasks.new_tasks {
            if is_named(task, "CpuBound INLINE")
                && let Some(id) = &task.id
            {
                if is_named(task, &expected) {
                    inline_ids.insert(id.id);
                }
                inline_names.extend(task.fields.iter().filter_map(|f| match &f.value {
                    Some(
                        console_api::field::Value::StrVal(v)
                        | console_api::field::Value::DebugVal(v),
                    ) if v.contains("CpuBound INLINE") => Some(v.trim_matches('"').to_owned()),
                    _ => None,
                }));
            }
        }
        for (id, stats) in &tasks.stats_update {
            if inline_ids.contains(id)
                && let Some(busy) = stats.poll_stats.as_ref().and_then(|p| p.busy_time)
            {
                busiest = busiest.max(Duration::new(busy.seconds as u64, busy.nanos as u32));
            }
        }
    }
    let reply = call.await.unwrap().expect("CpuBound answers").into_inner();
    assert_eq!(reply.diagnostics.expect("diagnostics").trace_id, trace_id);
    // The task's name leads to its trace: the first 8 hex digits of the reply's trace id.
    assert!(
        inline_names.contains(&expected),
        "no task named {expected:?} among {inline_names:?}"
    );
    assert!(
        busiest >= ms(150),
        "console shows only {busiest:?} busy for the INLINE task"
    );
    app.shutdown().await.unwrap();
}

/// The victim's server span links to each culprit's server span (Jaeger shows these links as
/// references), and carries the verdict and blame as attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_victims_span_links_to_its_culprits_spans() {
    world();
    let app = spawn_app().await;
    let inline = |addr| async move {
        common::client(addr)
            .await
            .cpu_bound(CpuBoundRequest {
                mode: CpuMode::Inline.into(),
                work_ms: 400,
                iterations: 0,
            })
            .await
            .expect("CpuBound answers")
            .into_inner()
    };
    // One inline call per lab worker, then a probe that must wait for one of them.
    let pressure = [
        tokio::spawn(inline(app.addr)),
        tokio::spawn(inline(app.addr)),
    ];
    tokio::time::sleep(ms(100)).await;
    let probe = common::client(app.addr)
        .await
        .fast(FastRequest::default())
        .await
        .expect("Fast answers")
        .into_inner()
        .diagnostics
        .expect("diagnostics");
    let mut culprit_spans = Vec::new();
    for call in pressure {
        let reply = call.await.expect("pressure call");
        let trace_id = reply.diagnostics.expect("diagnostics").trace_id;
        let spans = trace(&trace_id, 2).await;
        culprit_spans.push(named(&spans, "holdup.v1.Lab/CpuBound").span_id());
    }
    assert_eq!(probe.verdict, "runtime-contention", "{probe:?}");
    // The tests of this binary run at once, each with its own server in this process: a poll
    // of another test's request may overlap the wait too and be named beside the two. And on
    // one runtime the two inline calls need not hold both workers at the probe's wait: tokio
    // may queue the second behind the first on one worker (seen once in about a dozen runs of
    // this binary), so the probe waits for one of them; at least that one is named.
    let mut blamed: Vec<String> = probe.culprits.iter().map(|c| c.span_id.clone()).collect();
    blamed.sort();
    culprit_spans.sort();
    assert!(
        culprit_spans.iter().any(|s| blamed.contains(s)),
        "the reply names the culprits' spans {culprit_spans:?}: {:?}",
        probe.culprits
    );
    let pressure_share: u64 = probe
        .culprits
        .iter()
        .filter(|c| culprit_spans.contains(&c.span_id))
        .map(|c| c.share_us)
        .sum();
    assert!(
        pressure_share * 2 >= probe.blamed_us,
        "the inline calls carry most of the blame: {probe:?}"
    );

    let spans = trace(&probe.trace_id, 1).await;
    let victim = named(&spans, "holdup.v1.Lab/Fast");
    let mut linked: Vec<String> = victim
        .span
        .links
        .iter()
        .map(|l| hex::encode(&l.span_id))
        .collect();
    linked.sort();
    let mut requests: Vec<String> = probe
        .culprits
        .iter()
        .filter(|c| !c.span_id.is_empty())
        .map(|c| c.span_id.clone())
        .collect();
    requests.sort();
    assert_eq!(
        linked, requests,
        "the victim's span links to each culprit request's span"
    );
    assert_eq!(
        victim.attr("holdup.verdict").as_deref(),
        Some("runtime-contention")
    );
    let blamed_us: u64 = victim
        .attr("holdup.blamed_us")
        .and_then(|v| v.parse().ok())
        .expect("holdup.blamed_us");
    assert!(blamed_us >= 100_000, "blamed {blamed_us} us");
    app.shutdown().await.unwrap();
}
