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
use tower_layer::Layer;
use tower_service::Service;
use tracing::field::Empty;

use super::{
    arrival::{Arrival, Source},
    clock::now_ns,
    diagnosis::Diagnosis,
    engine::{Engine, EngineConfig, ResponseHeaders},
    grpc_status::{GrpcStatus, UNIMPLEMENTED},
    identity::{Identity, split_method, traceparent_trace_id},
    measured::{Measured, Meter},
    report::Report,
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

/// The header names the layer reads and writes on every request, parsed once: a `&str` name
/// is parsed and hashed again at each use.
mod names {
    use http::HeaderName;
    pub(super) const DIAGNOSIS: HeaderName = HeaderName::from_static(super::DIAGNOSIS_HEADER);
    pub(super) const TRACE_ID: HeaderName = HeaderName::from_static(super::TRACE_ID_HEADER);
    pub(super) const TIMELINE: HeaderName = HeaderName::from_static(super::TIMELINE_HEADER);
    pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
}

/// Time in the layers in front of this one (from the request task's first poll to `call`)
/// counted apart from the wait for a worker when it is at least this (ns). Passing through
/// them takes microseconds; below this the time stays in the first poll's wait, as it is where
/// the server does not say when the task first ran.
const OUTER_LAYERS_FROM: u64 = 1_000_000;

/// The target of the request spans the layer opens (name `rpc`).
pub const REQUEST_SPAN_TARGET: &str = "holdup::rpc";

/// Adds the diagnosis engine to a tonic server: `Server::builder().layer(DiagnoseLayer::new())`.
#[derive(Debug, Clone, Default)]
pub struct DiagnoseLayer {
    engine: Arc<Engine>,
}

#[cfg(feature = "prometheus")]
use super::metrics::DiagnoseMetrics;

impl DiagnoseLayer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_config(mut self, config: EngineConfig) -> Self {
        Arc::make_mut(&mut self.engine).config = config;
        self
    }

    /// Records into `metrics` (made by [`DiagnoseMetrics::register`] in the server's registry).
    #[cfg(feature = "prometheus")]
    pub fn with_metrics(mut self, metrics: DiagnoseMetrics) -> Self {
        Arc::make_mut(&mut self.engine).metrics = Some(metrics);
        self
    }
}

impl<S> Layer<S> for DiagnoseLayer {
    type Service = Diagnose<S>;

    fn layer(&self, inner: S) -> Diagnose<S> {
        super::occupancy::warn_once_if_unhooked();
        Diagnose {
            inner,
            engine: Arc::clone(&self.engine),
        }
    }
}

/// The service [`DiagnoseLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct Diagnose<S> {
    inner: S,
    engine: Arc<Engine>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Diagnose<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body + Unpin,
{
    type Response = http::Response<DiagnosedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The request arrived when its bytes reached the machine (the kernel's stamp) or when
        // its connection task read them, if the server stamped it there; else now. Every
        // instant from then to its first poll is a wait for a worker, measured and blamed.
        let now = now_ns();
        #[cfg(feature = "tonic")]
        stamp_from_connect_info(&mut request);
        let stamped = request.extensions().get::<Arrival>().map(Arrival::arrival);
        if stamped.is_none() {
            say_once_unstamped();
        }
        let started = stamped.map_or(now, |(at, _)| at.min(now));
        let version = request.version();
        let timeline = start(
            &self.engine,
            &request,
            started,
            stamped.map(|(_, source)| source),
        );
        // Where the server said when the request's task first ran (`arrival::serve`), the
        // time from then to now was in the layers in front of this one, not a wait for a
        // worker.
        let ready_since = match crate::arrival::task_first_polled() {
            Some(first) if first > started && now.saturating_sub(first) >= OUTER_LAYERS_FROM => {
                timeline.outside_layers(first, now);
                now
            }
            _ => started,
        };
        request
            .extensions_mut()
            .insert(Diagnosis(Arc::clone(&timeline)));
        // The inner service is called here, not moved into the future, so the one made ready
        // is called as it is: a clone (`mem::replace`, for futures that own the service) cost
        // every call an inner service's clone and drop, two atomic counts on an `Arc` the
        // workers share for tonic's `Routes`.
        let future = self.inner.call(request);
        ResponseFuture {
            inner: Measured::outer(Arc::clone(&timeline), future, ready_since, true),
            timeline: Some(timeline),
            http1: version < http::Version::HTTP_2,
        }
    }
}

/// On tonic's own server over [`arrival::incoming`](crate::arrival::incoming): the request's
/// [`Arrival`] from its connection's read marks, read now (the newest bytes the connection had
/// read by now: this request's, or later ones, a lower bound then), unless a connection-level
/// service stamped it already; and tonic's `TcpConnectInfo` back in its extensions, which
/// `Request::remote_addr` reads.
#[cfg(feature = "tonic")]
fn stamp_from_connect_info<B>(request: &mut http::Request<B>) {
    let extensions = request.extensions_mut();
    let Some(info) = extensions.get::<crate::arrival::StampedConnectInfo>() else {
        return;
    };
    let arrival = extensions
        .get::<Arrival>()
        .is_none()
        .then(|| info.marks().arrival_now());
    let tcp = info.tcp().clone();
    if let Some(arrival) = arrival {
        extensions.insert(arrival);
    }
    extensions.insert(tcp);
}

/// Says once, at the first request without an [`Arrival`], what the engine cannot see then:
/// a held-out service on tonic's own `serve` read `verdict=none` for calls a blocked worker
/// had delayed by hundreds of milliseconds, and nothing said why.
fn say_once_unstamped() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::info!(
            target: "holdup_diagnose",
            "requests reach the layer without an arrival stamp: each is measured from its own              task's first poll, so a wait before that (a worker held by a blocking call while              the request's bytes or its connection's task waited) is not seen; serve tonic with              Server::serve_with_incoming(holdup_diagnose::arrival::incoming(listener)?)              (feature `tonic`), or any tower service with holdup_diagnose::arrival::serve              (feature `serve`)"
        );
    });
}

/// Opens the request's span and timeline.
fn start<B>(
    engine: &Arc<Engine>,
    request: &http::Request<B>,
    started: u64,
    arrival: Option<Source>,
) -> Arc<Timeline> {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let full = path.path().trim_start_matches('/');
    // Field values are evaluated only for a span someone wants, so `split_method` runs only
    // then, and once for both fields (two splits were 128 instructions a call, callgrind).
    let split = std::cell::OnceCell::new();
    let span = tracing::info_span!(
        target: REQUEST_SPAN_TARGET,
        "rpc",
        otel.name = full,
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_message = Empty,
        rpc.system = "grpc",
        rpc.service = split.get_or_init(|| split_method(full)).0,
        rpc.method = split.get_or_init(|| split_method(full)).1,
        rpc.grpc.status_code = Empty,
        // For a subscriber without OpenTelemetry, the verdict, total, longest wait and
        // culprits; with it, the report goes on the OpenTelemetry span as attributes
        // (`otel::record`), with the split and the arrival's source. Each field declared here
        // costs every request a slot in the OpenTelemetry layer's attribute list, late or not,
        // and that list, with the layer's five of its own (code location, thread), must stay
        // under 1 KiB: past it glibc serves it from its large bins (callgrind, the benchmark's
        // echo: 1 300 instructions more per call at 18 attributes than at 17).
        holdup.total_us = Empty,
        holdup.verdict = Empty,
        holdup.waited_in = Empty,
        holdup.culprits = Empty,
    );
    let asked = Asked::of(request.headers());
    let (identity, _otel) = identify(path, &span, request.headers(), asked.traceparent);
    let mut timeline = Timeline::new(
        Arc::new(identity),
        span,
        Arc::clone(engine),
        started,
        asked.timeline,
    );
    timeline.arrival = arrival;
    #[cfg(feature = "opentelemetry")]
    {
        timeline.otel = _otel;
    }
    Arc::new(timeline)
}

/// The request headers the engine reads, found in one pass: a `HeaderMap::get` hashes the
/// name each time (about 170 instructions), a pass compares a handful of names.
#[derive(Debug, Default)]
struct Asked<'a> {
    /// `holdup-timeline: 1` (or `true`): the caller wants the full timeline.
    timeline: bool,
    traceparent: Option<&'a [u8]>,
}

impl<'a> Asked<'a> {
    fn of(headers: &'a http::HeaderMap) -> Self {
        let mut asked = Self::default();
        let mut timeline_seen = false;
        for (name, value) in headers {
            // The first value of each, as `get` gives.
            if *name == names::TRACEPARENT && asked.traceparent.is_none() {
                asked.traceparent = Some(value.as_bytes());
            } else if *name == names::TIMELINE && !timeline_seen {
                timeline_seen = true;
                let v = value.as_bytes();
                asked.timeline = v == b"1" || v.eq_ignore_ascii_case(b"true");
            }
        }
        asked
    }
}

/// The request's ids: its span's, when OpenTelemetry gives the span a context (continuing the
/// caller's trace), with that context; else the caller's trace id (from `traceparent`), or a
/// new one.
fn identify(
    path: PathAndQuery,
    span: &tracing::Span,
    headers: &http::HeaderMap,
    traceparent: Option<&[u8]>,
) -> (Identity, Option<OtelContext>) {
    #[cfg(feature = "opentelemetry")]
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        // No span, no context: the caller's trace id is read from `traceparent` below
        // without asking the propagator.
        let context = (!span.is_disabled()).then(|| {
            // A caller that sent no trace context leaves the span where tracing put it (under
            // the span current in the request's task, if any, else a root): setting an empty
            // parent would only make it a root, for a span lookup and a lock.
            let caller = super::otel::extract(headers);
            if caller.has_active_span() {
                // Only fails if the span has already started, which it cannot have.
                let _ = span.set_parent(caller);
            }
            span.context()
        });
        if let Some(context) = context {
            let ids = context.span().span_context().clone();
            if ids.is_valid() {
                let identity = Identity::traced(
                    path,
                    ids.trace_id().to_bytes(),
                    ids.span_id().to_bytes(),
                    ids.trace_flags().to_u8(),
                );
                return (identity, Some(context));
            }
        }
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, headers);
    let identity = Identity::generated(path, traceparent.and_then(traceparent_trace_id));
    (identity, None)
}

/// The OpenTelemetry context of a request span (feature `opentelemetry`).
#[cfg(feature = "opentelemetry")]
type OtelContext = opentelemetry::Context;
#[cfg(not(feature = "opentelemetry"))]
type OtelContext = std::convert::Infallible;

pin_project_lite::pin_project! {
    /// The measured request; on completion, the report goes out.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Measured<F>,
        timeline: Option<Arc<Timeline>>,
        // Over HTTP/1.x a trailer goes out only if the head declared it.
        http1: bool,
    }
}

/// Frames of the response body polled before its head goes out, to learn whether the call is
/// over (a unary reply: its message and trailers are ready at once) or goes on (a stream).
const PEEK_FRAMES: usize = 2;

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body + Unpin,
{
    type Output = Result<http::Response<DiagnosedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this.inner.as_mut().poll(cx));
        let Some(timeline) = this.timeline.take() else {
            // Polled after completion: the inner future already said so.
            return Poll::Pending;
        };
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                let report = timeline.report(now_ns());
                let _left = timeline.engine.finish(&report, &timeline, false, None);
                return Poll::Ready(Err(e));
            }
        };
        let trailers_only = GrpcStatus::of(response.headers()).map(|s| s.code);
        // A reply whose frames are all ready now is over: its header is its whole diagnosis.
        // Else the call goes on (a stream, or a reply still being written), and its body
        // meters the rest, for the trailer.
        let mut peeked = Peeked::default();
        let mut over = trailers_only.is_some() || response.body().is_end_stream();
        while !over && peeked.len() < PEEK_FRAMES {
            match Pin::new(response.body_mut()).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    over = frame.is_trailers();
                    peeked.push(Ok(frame));
                }
                Poll::Ready(Some(Err(e))) => {
                    peeked.push(Err(e));
                    over = true;
                }
                Poll::Ready(None) => over = true,
                Poll::Pending => break,
            }
        }
        // The reply was ready when the poll that made it ended: the frames peeked since are
        // the transport's, and a clock read (about 25 ns) is saved.
        let now = this.inner.last_poll_end();
        let report = timeline.report(now);
        let headers = response.headers_mut();
        let config = &timeline.engine.config;
        let head = config.head_for(&report, over);
        if head && let Some(value) = diagnosis_value(&timeline, &report, !over) {
            headers.insert(names::DIAGNOSIS, value);
        }
        if !over {
            if head {
                // The whole call's diagnosis comes as a trailer: HTTP/1.1 (hyper) sends only
                // the trailers its head declares (and only to a client that sent
                // `TE: trailers`).
                headers.append(http::header::TRAILER, TRAILER_DECLARED);
            } else if *this.http1 {
                // `WhenLate`: the head says nothing, and the trailers may have both, if the
                // call turns out late. Over HTTP/2 nothing needs declaring: a quick stream's
                // head stays as it was.
                headers.append(http::header::TRAILER, TRAILER_DECLARED);
                headers.append(http::header::TRAILER, TRACE_ID_DECLARED);
            }
        }
        if head {
            insert_trace_id(headers, &report);
        }
        let answered = trailers_only != Some(UNIMPLEMENTED);
        let state = if over {
            // The status is known when the trailers were peeked (or the response is only
            // trailers): it goes on the span with the diagnosis.
            let trailers = match trailers_only {
                Some(_) => Some(response.headers()),
                None => peeked.trailers(),
            };
            let status = trailers.and_then(GrpcStatus::of);
            let left = timeline.engine.finish(&report, &timeline, answered, status);
            // The span stays open until the trailers pass, and takes its status from them if
            // it has none yet.
            BodyState::Reported {
                timeline: trailers_only.is_none().then_some(timeline),
                status_pending: status.is_none(),
                left,
            }
        } else {
            BodyState::Streaming {
                meter: Meter::new(&timeline, 0, now),
                timeline,
                answered,
            }
        };
        Poll::Ready(Ok(response.map(|inner| DiagnosedBody {
            inner,
            peeked,
            state,
        })))
    }
}

/// The `holdup-diagnosis` value (`partial`: of a call that goes on after its head): the whole
/// split, or only the verdict and total for a request too quick to explain
/// ([`EngineConfig::detail_from`]).
///
/// A sub-millisecond `verdict=none` value repeats (eleven of them), so HPACK may index it and
/// send it again as one byte. Any other value rarely repeats (a whole split never; a brief one
/// under a larger `detail_from` seldom), and is kept out of the table.
fn diagnosis_value(timeline: &Timeline, report: &Report, partial: bool) -> Option<HeaderValue> {
    let detailed = timeline.engine.config.detailed(report);
    if !detailed
        && !partial
        && let Some(quick) = report.quick_header_value()
    {
        return Some(quick);
    }
    let mut value = if detailed {
        report.header_value()
    } else {
        report.brief_header_value()
    };
    if partial {
        value.push_str(PARTIAL);
    }
    unique_value(value)
}

/// The request's id as `x-trace-id`.
fn insert_trace_id(headers: &mut http::HeaderMap, report: &Report) {
    if let Some(value) = report.identity.trace_id_header() {
        headers.insert(names::TRACE_ID, unique(value));
    }
}

/// A header value that is different on every response. Marked sensitive: HPACK then sends it
/// as a literal, never indexed, instead of adding to the connection's dynamic table an entry
/// no later response will match (measured: the table's lookups and `memcmp` were about 3 %
/// of a bare echo's CPU with the engine).
fn unique_value(value: String) -> Option<HeaderValue> {
    HeaderValue::try_from(value).ok().map(unique)
}

/// `value`, marked as one that differs on every response: see [`unique_value`].
fn unique(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// The frames (or the error) polled before a response's head went out, handed out in order:
/// at most [`PEEK_FRAMES`], kept inline (no allocation per request).
struct Peeked<D, E> {
    frames: [Option<Result<Frame<D>, E>>; PEEK_FRAMES],
    next: usize,
    len: usize,
}

impl<D: bytes::Buf, E> Peeked<D, E> {
    /// Bytes of the data frames not yet handed on.
    fn data_len(&self) -> u64 {
        self.frames
            .iter()
            .flatten()
            .filter_map(|f| f.as_ref().ok()?.data_ref())
            .map(|d| d.remaining() as u64)
            .sum()
    }
}

impl<D, E> Peeked<D, E> {
    /// The trailers among the frames, if they were polled.
    fn trailers(&self) -> Option<&http::HeaderMap> {
        self.frames
            .iter()
            .flatten()
            .find_map(|f| f.as_ref().ok()?.trailers_ref())
    }
}

impl<D, E> Default for Peeked<D, E> {
    fn default() -> Self {
        Self {
            frames: std::array::from_fn(|_| None),
            next: 0,
            len: 0,
        }
    }
}

impl<D, E> Peeked<D, E> {
    fn push(&mut self, frame: Result<Frame<D>, E>) {
        if let Some(slot) = self.frames.get_mut(self.len) {
            *slot = Some(frame);
            self.len += 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn pop_front(&mut self) -> Option<Result<Frame<D>, E>> {
        let frame = self.frames.get_mut(self.next)?.take()?;
        self.next += 1;
        Some(frame)
    }

    fn is_empty(&self) -> bool {
        self.next >= self.len
    }
}

/// The `trailer` header of a partial head. A constant: `from_static` at run time would check
/// its bytes on every streaming response.
const TRAILER_DECLARED: HeaderValue = HeaderValue::from_static(DIAGNOSIS_HEADER);
/// The `Trailer` value for the id, declared with [`ResponseHeaders::WhenLate`].
const TRACE_ID_DECLARED: HeaderValue = HeaderValue::from_static(TRACE_ID_HEADER);

/// Appended to the header of a call that goes on after its head: the whole call's diagnosis
/// comes in the `holdup-diagnosis` trailer.
const PARTIAL: &str = " partial=head";

/// What the body still owes the diagnosis.
#[derive(Debug)]
enum BodyState {
    /// Reported at the head; the span is held open until the trailers pass, and takes their
    /// status unless it has it already. Held through the timeline, not a clone of the span:
    /// that would be a registry look-up and a call into every layer, twice. The timeline's
    /// record then lives until the body ends, as the span did; a wake after the report is
    /// recorded in it and read by no one.
    Reported {
        timeline: Option<Arc<Timeline>>,
        status_pending: bool,
        /// The span was left as it was (`EngineConfig::leaves_span`): an OK status leaves it
        /// so.
        left: bool,
    },
    /// A call that goes on: its polls are metered, and its end reports the whole call.
    Streaming {
        timeline: Arc<Timeline>,
        meter: Meter,
        answered: bool,
    },
    Done,
}

pin_project_lite::pin_project! {
    /// The response body: it holds the request's span open until the trailers pass, and for a
    /// call that goes on after its head, meters it and puts the whole call's diagnosis in the
    /// trailers.
    pub struct DiagnosedBody<B: Body> {
        #[pin]
        inner: B,
        // Frames (or the error) polled before the head went out.
        peeked: Peeked<B::Data, B::Error>,
        state: BodyState,
    }

    impl<B: Body> PinnedDrop for DiagnosedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // A stream the client left (or that failed) before its end: reported as far as it got.
            let this = this.project();
            finish_stream(this.state, None);
        }
    }
}

impl<B: Body + Default> Default for DiagnosedBody<B> {
    /// An empty body with no span: for responses made around the diagnosed service.
    fn default() -> Self {
        Self {
            inner: B::default(),
            peeked: Peeked::default(),
            state: BodyState::Done,
        }
    }
}

/// Ends a streaming call's diagnosis: the report on the span, in metrics and the log, and in
/// `trailers` when there are some.
fn finish_stream(state: &mut BodyState, trailers: Option<&mut http::HeaderMap>) {
    match std::mem::replace(state, BodyState::Done) {
        BodyState::Streaming {
            timeline, answered, ..
        } => {
            let report = timeline.report(now_ns());
            let config = &timeline.engine.config;
            let shown = config.trailers_for(&report);
            let value = shown
                .then(|| diagnosis_value(&timeline, &report, false))
                .flatten();
            let status = trailers.as_deref().and_then(GrpcStatus::of);
            let _left = timeline.engine.finish(&report, &timeline, answered, status);
            if let Some(trailers) = trailers {
                if let Some(value) = value {
                    trailers.insert(names::DIAGNOSIS, value);
                }
                // With `WhenLate` the head had no id: a late stream's trailers give it.
                if shown && config.headers == ResponseHeaders::WhenLate {
                    insert_trace_id(trailers, &report);
                }
            }
        }
        BodyState::Reported {
            timeline: Some(timeline),
            status_pending: true,
            left,
        } => {
            if let Some(status) = trailers.as_deref().and_then(GrpcStatus::of)
                && !(left && status.code == 0)
            {
                status.record(&timeline);
            }
        }
        BodyState::Reported { .. } | BodyState::Done => {}
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
        let mut frame = match this.peeked.pop_front() {
            Some(frame) => Some(frame),
            None => {
                let inner = this.inner;
                let polled = match this.state {
                    BodyState::Streaming {
                        timeline, meter, ..
                    } => meter.poll(timeline, cx, true, |cx| inner.poll_frame(cx)),
                    _ => inner.poll_frame(cx),
                };
                ready!(polled)
            }
        };
        match &mut frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_mut() {
                    finish_stream(this.state, Some(trailers));
                }
            }
            // A stream that ends without trailers of its own (an axum `Body::from_stream`,
            // anything not gRPC): the diagnosis its head promised comes in trailers of ours.
            None if matches!(this.state, BodyState::Streaming { .. }) => {
                let mut trailers = http::HeaderMap::new();
                finish_stream(this.state, Some(&mut trailers));
                if !trailers.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            Some(Err(_)) | None => finish_stream(this.state, None),
        }
        Poll::Ready(frame)
    }

    /// Not while a streaming call's trailer is still owed: told the body is over, hyper
    /// would end the stream without polling for it.
    fn is_end_stream(&self) -> bool {
        self.peeked.is_empty()
            && !matches!(self.state, BodyState::Streaming { .. })
            && self.inner.is_end_stream()
    }

    /// The inner body's hint counts only what it has left: the frames read ahead of the head
    /// are added back, or an exact hint of what remains (axum's `Full`, 0 once read) would
    /// make hyper send an empty body.
    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let ahead = self.peeked.data_len();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(ahead));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(ahead));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_asked_for_are_their_first_values_as_get_gives() {
        let mut headers = http::HeaderMap::new();
        assert!(!Asked::of(&headers).timeline);
        headers.append(names::TIMELINE, HeaderValue::from_static("0"));
        headers.append(names::TIMELINE, HeaderValue::from_static("1"));
        headers.append(names::TRACEPARENT, HeaderValue::from_static("first"));
        headers.append(names::TRACEPARENT, HeaderValue::from_static("second"));
        let asked = Asked::of(&headers);
        assert!(!asked.timeline, "get gives the first value, 0");
        assert_eq!(asked.traceparent, Some(&b"first"[..]));
        headers.insert(names::TIMELINE, HeaderValue::from_static("TRUE"));
        assert!(Asked::of(&headers).timeline);
    }
}
