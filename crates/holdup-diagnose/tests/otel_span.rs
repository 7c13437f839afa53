//! The report on a request's OpenTelemetry span (feature `opentelemetry`): what Jaeger and
//! `holdup explain` read. A real tonic server (gRPC health) with the layer, a tracing
//! subscriber with an OpenTelemetry layer whose provider hands every ended span to the test,
//! and tonic's own client over loopback.
#![cfg(feature = "opentelemetry")]

mod health_support;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use health_support::{client, serve_with};

use holdup_diagnose::{DiagnoseLayer, EngineConfig, ResponseHeaders};
use opentelemetry::{
    Context, Value,
    trace::{SpanKind, Status},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SdkTracerProvider, Span, SpanData, SpanProcessor},
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Every span the provider ends, kept for the test to read.
#[derive(Debug, Default, Clone)]
struct Ended(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Ended {
    fn on_start(&self, _: &mut Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap().push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The process's subscriber (set once: the server's workers are other threads): an
/// OpenTelemetry layer over a provider that keeps what ends.
fn ended() -> &'static Ended {
    static ENDED: OnceLock<Ended> = OnceLock::new();
    ENDED.get_or_init(|| {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::{Layer as _, layer::SubscriberExt, util::SubscriberInitExt};
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let ended = Ended::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(ended.clone())
            .build();
        tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("otel_span"))
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            )
            .init();
        ended
    })
}

/// Calls `Check` for `service`; the reply's `x-trace-id`, and the server span of that trace
/// once it has ended.
async fn check(client: &mut HealthClient<Channel>, service: &str) -> (tonic::Code, SpanData) {
    check_with(client, service, None).await
}

/// `check`, with a caller's W3C `traceparent` when given.
async fn check_with(
    client: &mut HealthClient<Channel>,
    service: &str,
    traceparent: Option<&str>,
) -> (tonic::Code, SpanData) {
    let (code, metadata) = send(client, service, traceparent).await;
    (code, server_span(&trace_id(&metadata)).await)
}

/// Calls `Check` for `service`, with a caller's W3C `traceparent` when given: the call's code,
/// and the metadata of its reply or its error.
async fn send(
    client: &mut HealthClient<Channel>,
    service: &str,
    traceparent: Option<&str>,
) -> (tonic::Code, tonic::metadata::MetadataMap) {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    if let Some(traceparent) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
    }
    match client.check(request).await {
        Ok(reply) => (tonic::Code::Ok, reply.metadata().clone()),
        Err(status) => (status.code(), status.metadata().clone()),
    }
}

/// The server span of trace `trace_id`, once it has ended: moments after the reply, when the
/// response body has been sent.
async fn server_span(trace_id: &str) -> SpanData {
    for _ in 0..200 {
        let found = ended()
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.span_context.trace_id().to_string() == trace_id && s.span_kind == SpanKind::Server
            })
            .cloned();
        if let Some(span) = found {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen: Vec<String> = ended()
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|s| format!("{} {:?} {}", s.name, s.span_kind, s.span_context.trace_id()))
        .collect();
    panic!("no server span ended with the trace id {trace_id}: {seen:?}");
}

fn trace_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-trace-id")
        .expect("an x-trace-id header")
        .to_str()
        .unwrap()
        .to_owned()
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn int(span: &SpanData, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Value::I64(v)) => v,
        other => panic!("{key}: {other:?}, not an integer, on {:?}", span.attributes),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_goes_on_the_opentelemetry_span_brief_or_whole() {
    ended();
    // Defaults: a quick call gets its verdict and total only.
    let (addr, _reporter) = serve_with(DiagnoseLayer::new()).await;
    let mut quick = client(addr).await;
    let (code, span) = check(&mut quick, "").await;
    assert_eq!(code, tonic::Code::Ok);
    assert_eq!(
        attribute(&span, "holdup.verdict").map(|v| v.to_string()),
        Some("none".into())
    );
    assert!(int(&span, "holdup.total_us") >= 0);
    assert_eq!(int(&span, "rpc.grpc.status_code"), 0);
    assert_eq!(span.status, Status::Unset, "OK leaves the status unset");
    assert_eq!(
        attribute(&span, "holdup.busy_us"),
        None,
        "no split: too quick"
    );
    assert_eq!(attribute(&span, "rpc.method").unwrap().to_string(), "Check");
    assert_eq!(span.name, "grpc.health.v1.Health/Check");
    assert_eq!(
        span.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "no caller context: a root span"
    );

    // A caller's trace is continued: its trace id, under its span.
    let (_, span) = check_with(
        &mut quick,
        "",
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    )
    .await;
    assert_eq!(
        span.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");

    // An unknown service: NOT_FOUND, an error status with the call's message.
    let (code, span) = check(&mut quick, "no.such.Service").await;
    assert_eq!(code, tonic::Code::NotFound);
    assert_eq!(int(&span, "rpc.grpc.status_code"), 5);
    assert!(
        matches!(&span.status, Status::Error { description } if !description.is_empty()),
        "{:?}",
        span.status
    );

    // `detail_from: ZERO`: every call gets the whole split, as a late one does.
    let whole = DiagnoseLayer::new().with_config(EngineConfig {
        detail_from: Duration::ZERO,
        ..EngineConfig::default()
    });
    let (addr, _whole_reporter) = serve_with(whole).await;
    let mut whole = client(addr).await;
    let (_, span) = check(&mut whole, "").await;
    let total = int(&span, "holdup.total_us");
    for key in [
        "holdup.busy_us",
        "holdup.on_cpu_us",
        "holdup.cpu_wait_us",
        "holdup.scheduled_us",
        "holdup.idle_us",
        "holdup.queue_us",
        "holdup.blamed_us",
        "holdup.max_poll_us",
    ] {
        let part = int(&span, key);
        assert!((0..=total).contains(&part), "{key} {part} of {total}");
    }
    assert!(int(&span, "holdup.polls") >= 1);
    assert_eq!(int(&span, "rpc.grpc.status_code"), 0);
}

/// With `ResponseHeaders::WhenLate` a call that was not late and did not fail leaves its span
/// as the OpenTelemetry layer made it; a failed one gets its status, a late one its report.
/// Each call continues a caller's trace of its own, the only way to find its span: a quick
/// reply has no `x-trace-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_headers_when_late_a_quick_ok_calls_span_is_left_as_it_was() {
    ended();
    let when_late = |detail_from| {
        DiagnoseLayer::new().with_config(
            EngineConfig {
                detail_from,
                ..EngineConfig::default()
            }
            .response_headers(ResponseHeaders::WhenLate),
        )
    };
    let call = |client: &mut HealthClient<Channel>, service: &str, trace: &'static str| {
        let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
        let mut client = client.clone();
        let service = service.to_owned();
        async move {
            let (code, _) = send(&mut client, &service, Some(&traceparent)).await;
            (code, server_span(trace).await)
        }
    };

    // No call of this test reaches an hour.
    let (addr, _reporter) = serve_with(when_late(Duration::from_secs(3600))).await;
    let mut quick = client(addr).await;
    let (code, span) = call(&mut quick, "", "5a1e0000000000000000000000000001").await;
    assert_eq!(code, tonic::Code::Ok);
    for key in ["holdup.verdict", "holdup.total_us", "rpc.grpc.status_code"] {
        assert_eq!(
            attribute(&span, key),
            None,
            "{key} on {:?}",
            span.attributes
        );
    }
    assert_eq!(span.status, Status::Unset);
    assert_eq!(
        attribute(&span, "rpc.method").unwrap().to_string(),
        "Check",
        "the span itself is there, with the conventions' attributes"
    );

    let (code, span) = call(
        &mut quick,
        "no.such.Service",
        "5a1e0000000000000000000000000002",
    )
    .await;
    assert_eq!(code, tonic::Code::NotFound);
    assert_eq!(
        int(&span, "rpc.grpc.status_code"),
        5,
        "a failed call is reported"
    );
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert!(attribute(&span, "holdup.verdict").is_some());

    // Every call is late from a nanosecond: reported as by default.
    let (addr, _late_reporter) = serve_with(when_late(Duration::from_nanos(1))).await;
    let mut late = client(addr).await;
    let (code, span) = call(&mut late, "", "5a1e0000000000000000000000000003").await;
    assert_eq!(code, tonic::Code::Ok);
    assert!(
        attribute(&span, "holdup.verdict").is_some(),
        "{:?}",
        span.attributes
    );
    assert!(int(&span, "holdup.busy_us") >= 0, "the whole split");
    assert_eq!(int(&span, "rpc.grpc.status_code"), 0);
}
