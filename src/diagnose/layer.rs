//! The tower layer that diagnoses every request of a tonic server: one `.layer(...)`.
//!
//! For each request it opens the server span (OpenTelemetry RPC conventions, continuing the
//! caller's `traceparent`), measures the request's future, and when the response is ready puts
//! the report in the `holdup-diagnosis` header (and the trace id in `x-trace-id`), on the span,
//! in Prometheus and, for a long blamed wait, in the log. The span stays open until the
//! response body has been sent, and takes its gRPC status from the trailers.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, uri::PathAndQuery};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt;
use tokio::runtime::Handle;
use tower_layer::Layer;
use tower_service::Service;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    clock::now_ns,
    diagnosis::Diagnosis,
    engine::{Engine, EngineConfig},
    identity::{Identity, split_method},
    measured::Measured,
    metrics::DiagnoseMetrics,
    stage_layer,
    timeline::Timeline,
};

/// The response header that carries the diagnosis (format: [`Report::header_value`]).
///
/// [`Report::header_value`]: super::report::Report::header_value
pub const DIAGNOSIS_HEADER: &str = "holdup-diagnosis";
/// The response header that carries the request's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// A request header (`holdup-timeline: 1`) that asks for the full timeline of polls and waits
/// (the Lab returns it in `Diagnostics.timeline`).
pub const TIMELINE_HEADER: &str = "holdup-timeline";

/// The target of the request spans the layer opens (name `rpc`).
pub const REQUEST_SPAN_TARGET: &str = "holdup::rpc";

/// Adds the diagnosis engine to a tonic server: `Server::builder().layer(DiagnoseLayer::new())`.
#[derive(Debug, Clone, Default)]
pub struct DiagnoseLayer {
    engine: Arc<Engine>,
    handlers: Option<Handle>,
}

impl DiagnoseLayer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_config(mut self, config: EngineConfig) -> Self {
        Arc::make_mut(&mut self.engine).config = config;
        self
    }

    /// Records into `metrics` (made by [`DiagnoseMetrics::register`] in the server's registry).
    pub fn with_metrics(mut self, metrics: DiagnoseMetrics) -> Self {
        Arc::make_mut(&mut self.engine).metrics = Some(metrics);
        self
    }

    /// Runs every request's handler on `handlers`, a runtime of its own, instead of on the
    /// runtime that serves the connections. Then a request that arrives while every handler
    /// worker is blocked is still read and handed over at once, and its wait for a worker is
    /// measured and blamed; on one runtime it would sit unread in the socket, unseen.
    pub fn handlers_on(mut self, handlers: Handle) -> Self {
        self.handlers = Some(handlers);
        self
    }
}

impl<S> Layer<S> for DiagnoseLayer {
    type Service = Diagnose<S>;

    fn layer(&self, inner: S) -> Diagnose<S> {
        Diagnose {
            inner,
            engine: Arc::clone(&self.engine),
            handlers: self.handlers.clone(),
        }
    }
}

/// The service [`DiagnoseLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct Diagnose<S> {
    inner: S,
    engine: Arc<Engine>,
    handlers: Option<Handle>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Diagnose<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<DiagnosedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let started = now_ns();
        let timeline = start(&self.engine, &request, started);
        request
            .extensions_mut()
            .insert(Diagnosis(Arc::clone(&timeline)));
        // The clone that was made ready is the one to call (tower's `Clone` + `poll_ready` rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = inner.call(request);
        // The service's future runs in the request's span: here, or in the handler task (which
        // enters it itself) while this side only waits for it.
        let in_span = self.handlers.is_none();
        let future: BoxFuture<Result<http::Response<ResBody>, S::Error>> = match &self.handlers {
            None => Box::pin(future),
            Some(handlers) => {
                let label = timeline.identity.method().to_owned();
                match Diagnosis(Arc::clone(&timeline)).spawn(&label, handlers, future) {
                    Ok(join) => Box::pin(joined(join)),
                    Err(_) => Box::pin(std::future::ready(Ok(status_only(
                        14,
                        "server shutting down",
                    )))),
                }
            }
        };
        ResponseFuture {
            inner: Measured::outer(Arc::clone(&timeline), future, started, in_span),
            timeline: Some(timeline),
        }
    }
}

/// Opens the request's span and timeline.
fn start<B>(engine: &Arc<Engine>, request: &http::Request<B>, started: u64) -> Arc<Timeline> {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let full = path.path().trim_start_matches('/');
    let (service, method) = split_method(full);
    let span = tracing::info_span!(
        target: REQUEST_SPAN_TARGET,
        "rpc",
        otel.name = full,
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_message = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        holdup.total_us = Empty,
        holdup.busy_us = Empty,
        holdup.on_cpu_us = Empty,
        holdup.cpu_wait_us = Empty,
        holdup.scheduled_us = Empty,
        holdup.idle_us = Empty,
        holdup.queue_us = Empty,
        holdup.blamed_us = Empty,
        holdup.polls = Empty,
        holdup.max_poll_us = Empty,
        holdup.verdict = Empty,
        holdup.waited_in = Empty,
        holdup.culprits = Empty,
    );
    // Only fails if the span has already started, which it cannot have.
    let _ = span.set_parent(crate::telemetry::otel::extract_http(request.headers()));
    let context = span.context().span().span_context().clone();
    let identity = Arc::new(Identity::new(path, &context));
    let want_events = request
        .headers()
        .get(TIMELINE_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1" || v.as_bytes().eq_ignore_ascii_case(b"true"));
    let timeline = Arc::new(Timeline::new(
        identity,
        span,
        Arc::clone(engine),
        started,
        want_events,
    ));
    stage_layer::attach(&timeline.span, &timeline);
    timeline
}

/// The handler task's result; a panicked or aborted task answers INTERNAL / UNAVAILABLE.
async fn joined<E, B: Default>(
    join: tokio::task::JoinHandle<Result<http::Response<B>, E>>,
) -> Result<http::Response<B>, E> {
    let mut join = AbortOnDrop(join);
    match (&mut join.0).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            tracing::error!("request handler panicked");
            Ok(status_only(13, "handler panicked"))
        }
        Err(_) => Ok(status_only(14, "server shutting down")),
    }
}

/// Aborts the handler task when the caller stops waiting for it (client gone, deadline).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A trailers-only gRPC response with `code` and `message`.
fn status_only<B: Default>(code: u16, message: &'static str) -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    response
}

pin_project_lite::pin_project! {
    /// The measured request; on completion, the report goes out.
    pub struct ResponseFuture<B, E> {
        #[pin]
        inner: Measured<BoxFuture<Result<http::Response<B>, E>>>,
        timeline: Option<Arc<Timeline>>,
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<http::Response<DiagnosedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(timeline) = this.timeline.take() else {
            // Polled after completion: the inner future already said so.
            return Poll::Pending;
        };
        let report = timeline.report(now_ns());
        let span = timeline.span.clone();
        Poll::Ready(match result {
            Ok(mut response) => {
                let headers = response.headers_mut();
                let trailers_only = grpc_status(headers);
                if let Ok(value) = HeaderValue::from_str(&report.header_value()) {
                    headers.insert(DIAGNOSIS_HEADER, value);
                }
                let trace_id = report.identity.trace_id();
                if let Ok(value) = HeaderValue::from_str(&trace_id)
                    && !trace_id.is_empty()
                {
                    headers.insert(TRACE_ID_HEADER, value);
                }
                timeline
                    .engine
                    .finish(&report, &span, trailers_only != Some(UNIMPLEMENTED));
                let span = match trailers_only {
                    Some(_) => {
                        record_status(&span, response.headers());
                        None
                    }
                    None => Some(span),
                };
                Ok(response.map(|inner| DiagnosedBody { inner, span }))
            }
            Err(e) => {
                timeline.engine.finish(&report, &span, false);
                Err(e)
            }
        })
    }
}

const UNIMPLEMENTED: u16 = 12;

fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The gRPC status (from trailers, or headers of a trailers-only response) on the span.
fn record_status(span: &tracing::Span, headers: &http::HeaderMap) {
    let Some(code) = grpc_status(headers) else {
        return;
    };
    // An integer attribute, as OpenTelemetry's RPC conventions have it (a `u16` would be
    // recorded as a string: see `engine::record_on_span`).
    span.record("rpc.grpc.status_code", i64::from(code));
    if code != 0 {
        span.record("otel.status_code", "ERROR");
        if let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) {
            span.record("otel.status_message", message);
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body; it holds the request's span open until the trailers pass.
    pub struct DiagnosedBody<B> {
        #[pin]
        inner: B,
        span: Option<tracing::Span>,
    }
}

impl<B: Default> Default for DiagnosedBody<B> {
    /// An empty body with no span: for responses made around the diagnosed service.
    fn default() -> Self {
        Self {
            inner: B::default(),
            span: None,
        }
    }
}

impl<B: Body> Body for DiagnosedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(span) = this.span.take()
                {
                    record_status(&span, trailers);
                }
            }
            Some(Err(_)) | None => {
                this.span.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
