//! `holdup upstream`: an HTTP service that is slow, jittery, failing or stalled on demand.
//!
//! `GET /work?latency_ms=&jitter_ms=&error_rate=&stall_rate=` answers after `latency_ms` plus
//! a uniform `0..=jitter_ms`; a `stall_rate` fraction of calls first hang for the simulator's
//! stall time, and an `error_rate` fraction answer 503. Parameters left out take the
//! simulator's flags. `GET /healthz` answers 200. `GET /metrics` is the simulator's own
//! Prometheus page: what the upstream itself saw of each `/work` call (see [`SimMetrics`]).

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{config::SimulatorConfig, http_server::HttpServer};

/// Longest latency or jitter one call may ask for.
pub const MAX_LATENCY_MS: u32 = 60_000;

/// Per-call overrides of the simulator's behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
pub struct WorkParams {
    pub latency_ms: Option<u32>,
    pub jitter_ms: Option<u32>,
    pub error_rate: Option<f64>,
    pub stall_rate: Option<f64>,
}

/// What `/work` answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkReply {
    /// Time the simulator spent on the call.
    pub served_us: u64,
    pub stalled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one call will do, drawn before any await (the RNG is not `Send`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fate {
    stall: Option<Duration>,
    delay: Duration,
    fail: bool,
}

fn fate(config: &SimulatorConfig, params: &WorkParams) -> Result<Fate, String> {
    let latency = params.latency_ms.unwrap_or(config.latency_ms);
    let jitter = params.jitter_ms.unwrap_or(config.jitter_ms);
    let error_rate = params.error_rate.unwrap_or(config.error_rate);
    let stall_rate = params.stall_rate.unwrap_or(config.stall_rate);
    if latency > MAX_LATENCY_MS || jitter > MAX_LATENCY_MS {
        return Err(format!(
            "latency_ms and jitter_ms must be in 0..={MAX_LATENCY_MS}"
        ));
    }
    for (name, rate) in [("error_rate", error_rate), ("stall_rate", stall_rate)] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("{name} must be in 0.0..=1.0, got {rate}"));
        }
    }
    let mut rng = rand::rng();
    let extra = if jitter == 0 {
        0
    } else {
        rng.random_range(0..=jitter)
    };
    Ok(Fate {
        stall: rng
            .random_bool(stall_rate)
            .then(|| Duration::from_millis(u64::from(config.stall_ms))),
        delay: Duration::from_millis(u64::from(latency) + u64::from(extra)),
        fail: rng.random_bool(error_rate),
    })
}

/// The simulator's server span, made with the OpenTelemetry API and its own tracer so that
/// it carries the service name `holdup-upstream` even inside `holdup serve`; it continues the
/// caller's trace from the `traceparent` header.
fn server_span(headers: &HeaderMap) -> Option<opentelemetry_sdk::trace::Span> {
    use opentelemetry::trace::{SpanKind, Tracer};
    let tracer = crate::telemetry::subscriber::upstream_tracer()?;
    let parent = crate::telemetry::otel::extract_http(headers);
    let span = tracer
        .span_builder("GET /work")
        .with_kind(SpanKind::Server)
        .with_attributes([
            opentelemetry::KeyValue::new("http.request.method", "GET"),
            opentelemetry::KeyValue::new("http.route", "/work"),
        ])
        .start_with_context(tracer, &parent);
    Some(span)
}

async fn work(
    State(config): State<SimulatorConfig>,
    Query(params): Query<WorkParams>,
    headers: HeaderMap,
) -> Response {
    use opentelemetry::trace::Span as _;
    let mut span = server_span(&headers);
    let response = simulate(config, params).await;
    if let Some(span) = span.as_mut() {
        let status = response.status();
        span.set_attribute(opentelemetry::KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_status(opentelemetry::trace::Status::error("simulated failure"));
        }
        span.end();
    }
    response
}

async fn simulate(config: SimulatorConfig, params: WorkParams) -> Response {
    let started = std::time::Instant::now();
    let fate = match fate(&config, &params) {
        Ok(fate) => fate,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    if let Some(stall) = fate.stall {
        tokio::time::sleep(stall).await;
    }
    tokio::time::sleep(fate.delay).await;
    let reply = WorkReply {
        served_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        stalled: fate.stall.is_some(),
        error: fate.fail.then(|| "simulated failure".to_owned()),
    };
    let status = if fate.fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(reply)).into_response()
}

/// The simulator's own Prometheus metrics, in a registry of its own (one per simulator), so
/// that `holdup upstream` can be scraped beside `holdup serve`: the latency the upstream saw
/// next to the latency holdup measured for the same calls; the difference is the network and
/// the client. A call is counted when it is answered; one whose caller gave up first is not.
#[derive(Debug)]
pub struct SimMetrics {
    registry: Registry,
    /// The simulator listener's connections (`holdup_transport_*{listener="simulator"}`).
    pub transport: crate::transport::TransportMetrics,
    requests: Family<CodeLabels, Counter>,
    duration: Family<CodeLabels, Histogram, fn() -> Histogram>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    /// The HTTP status of the answer (200, 503, or 400 for bad parameters).
    code: u16,
}

fn duration_histogram() -> Histogram {
    Histogram::new(crate::telemetry::metrics::LATENCY_BUCKETS)
}

impl Default for SimMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SimMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "holdup_sim_requests",
            "Calls to /work the upstream simulator answered, by HTTP status",
            requests.clone(),
        );
        let duration: Family<_, _, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "holdup_sim_request_duration",
            "Time the upstream simulator took to answer /work (stall + latency + jitter), by HTTP status",
            Unit::Seconds,
            duration.clone(),
        );
        let transport = crate::transport::TransportMetrics::register(&mut registry);
        Self {
            registry,
            transport,
            requests,
            duration,
        }
    }

    fn observe(&self, status: StatusCode, elapsed: Duration) {
        let labels = CodeLabels {
            code: status.as_u16(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Prometheus text format 0.0.4.
    ///
    /// # Errors
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Times each `/work` call and counts it by the status it was answered with.
async fn record(State(metrics): State<Arc<SimMetrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(response.status(), started.elapsed());
    response
}

async fn scrape(State(metrics): State<Arc<SimMetrics>>) -> Response {
    match metrics.encode() {
        Ok(body) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub fn router(config: SimulatorConfig, metrics: Arc<SimMetrics>) -> Router {
    Router::new()
        .route("/work", get(work))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&metrics), record))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(config)
        .merge(
            Router::new()
                .route("/metrics", get(scrape))
                .with_state(metrics),
        )
}

/// Binds the simulator: its address is known before it serves (`HttpServer::run_until`).
///
/// # Errors
/// The I/O error if `addr` cannot be bound.
pub async fn bind(
    addr: SocketAddr,
    config: SimulatorConfig,
    limits: crate::transport::ConnectionLimits,
) -> io::Result<HttpServer> {
    let metrics = Arc::new(SimMetrics::new());
    let transport = metrics.transport.clone();
    HttpServer::bind(
        addr,
        router(config, metrics),
        "simulator",
        limits,
        transport,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_failure_and_stall() {
        let config = SimulatorConfig::default();
        let params = WorkParams {
            latency_ms: Some(5),
            jitter_ms: Some(0),
            error_rate: Some(1.0),
            stall_rate: Some(1.0),
        };
        let fate = fate(&config, &params).unwrap();
        assert!(fate.fail);
        assert_eq!(fate.delay, Duration::from_millis(5));
        assert_eq!(
            fate.stall,
            Some(Duration::from_millis(u64::from(config.stall_ms)))
        );
    }

    #[tokio::test]
    async fn metrics_count_each_answer_by_status() {
        let config = SimulatorConfig {
            latency_ms: 0,
            ..SimulatorConfig::default()
        };
        let simulator = bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            crate::transport::ConnectionLimits::default(),
        )
        .await
        .expect("binds a loopback port");
        let base = format!("http://{}", simulator.local_addr().expect("bound"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(simulator.run_until(
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        let client = reqwest::Client::new();
        for query in ["", "?latency_ms=30", "?error_rate=1", "?error_rate=2"] {
            client
                .get(format!("{base}/work{query}"))
                .send()
                .await
                .expect("the simulator answers");
        }
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz answers");

        let page = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(
            page.headers()["content-type"],
            prometheus_text::CONTENT_TYPE,
            "Prometheus text format"
        );
        let page = page.text().await.expect("metrics body");
        let value = |series: &str| {
            page.lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        assert_eq!(
            value("holdup_sim_requests_total{code=\"200\"}"),
            Some(2.0),
            "{page}"
        );
        assert_eq!(
            value("holdup_sim_requests_total{code=\"503\"}"),
            Some(1.0),
            "{page}"
        );
        assert_eq!(
            value("holdup_sim_requests_total{code=\"400\"}"),
            Some(1.0),
            "{page}"
        );
        assert_eq!(
            value("holdup_sim_request_duration_seconds_count{code=\"200\"}"),
            Some(2.0),
            "{page}"
        );
        // The 30 ms call lands above the 25 ms bucket; the immediate one below it.
        assert_eq!(
            value("holdup_sim_request_duration_seconds_bucket{code=\"200\",le=\"0.025\"}"),
            Some(1.0),
            "{page}"
        );
        assert!(!page.contains("/healthz"), "only /work is counted: {page}");

        let _ = stop.send(());
        serving
            .await
            .expect("server task did not panic")
            .expect("server stopped cleanly");
    }

    #[test]
    fn refuses_bad_rates() {
        let params = WorkParams {
            error_rate: Some(2.0),
            ..WorkParams::default()
        };
        assert!(fate(&SimulatorConfig::default(), &params).is_err());
    }
}
