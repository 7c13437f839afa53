//! OpenTelemetry glue (feature `opentelemetry`): the caller's context from the request's
//! headers, through whatever propagator the application installed (W3C trace context, B3, …).

use opentelemetry::{
    Context, KeyValue,
    propagation::Extractor,
    trace::{SpanRef, Status, TraceContextExt},
};

use crate::{
    grpc_status::GrpcStatus,
    report::{Report, culprit_label, micros, signed},
};

/// The context the global propagator finds in `headers`.
pub(crate) fn extract(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The report on the request's OpenTelemetry span, set on it directly: the verdict and total;
/// for a `detailed` report the split, the longest wait, the culprits and a link to each
/// culprit's span (Jaeger shows them as references); and the call's `status` when known.
///
/// Not through the tracing span's fields: a `record` costs each layer a span lookup, and the
/// OpenTelemetry layer a lock, a list of updates and a `String` per text value (callgrind, the
/// benchmark's echo: 2 080 instructions for the brief record, against about 750 here), and
/// every declared field costs every request a slot, late or not. The attributes are the same,
/// so Jaeger and `holdup explain` read them as before.
pub(crate) fn record(
    context: &Context,
    report: &Report,
    detailed: bool,
    status: Option<GrpcStatus<'_>>,
) {
    let span = context.span();
    let s = &report.split;
    let us = |key: &'static str, ns: u64| KeyValue::new(key, signed(micros(ns)));
    let code = status.map(|s| KeyValue::new("rpc.grpc.status_code", i64::from(s.code)));
    let brief = [
        Some(us("holdup.total_us", s.total)),
        Some(KeyValue::new("holdup.verdict", report.verdict().as_str())),
        code,
        report
            .arrival
            .map(|source| KeyValue::new("holdup.arrival", source.as_str())),
    ];
    span.set_attributes(brief.into_iter().flatten());
    if let Some(status) = status {
        record_status_on(&span, status);
    }
    if !detailed {
        return;
    }
    span.set_attributes([
        us("holdup.busy_us", s.busy),
        us("holdup.on_cpu_us", s.on_cpu),
        us("holdup.cpu_wait_us", s.cpu_wait),
        us("holdup.scheduled_us", s.scheduled),
        us("holdup.idle_us", s.idle_total()),
        us("holdup.queue_us", s.queue()),
        us("holdup.blamed_us", s.blamed),
        KeyValue::new("holdup.polls", signed(s.polls)),
        us("holdup.max_poll_us", s.max_poll),
    ]);
    if let Some(wait) = report.longest_wait() {
        span.set_attribute(KeyValue::new("holdup.waited_in", wait.stage));
    }
    if !report.culprits.is_empty() {
        let names: Vec<String> = report.culprits.iter().map(culprit_label).collect();
        span.set_attribute(KeyValue::new("holdup.culprits", names.join(",")));
    }
    for culprit in &report.culprits {
        if let Some(linked) = culprit.request().and_then(|c| c.span_context()) {
            span.add_link(
                linked,
                vec![
                    KeyValue::new("holdup.link", "culprit"),
                    us("holdup.share_us", culprit.share),
                ],
            );
        }
    }
}

/// A status that comes after the report (a stream's trailers, or a reply whose trailers were
/// not ready with its head), on the OpenTelemetry span directly.
pub(crate) fn record_status(context: &Context, status: GrpcStatus<'_>) {
    let span = context.span();
    span.set_attribute(KeyValue::new(
        "rpc.grpc.status_code",
        i64::from(status.code),
    ));
    record_status_on(&span, status);
}

/// An error status, as tracing-opentelemetry makes one of `otel.status_code` and
/// `otel.status_message`; OK leaves the status unset, as the RPC conventions have it.
fn record_status_on(span: &SpanRef<'_>, status: GrpcStatus<'_>) {
    if status.otel_status().is_some() {
        span.set_status(Status::error(status.message.unwrap_or("").to_owned()));
    }
}
