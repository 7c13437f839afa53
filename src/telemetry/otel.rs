//! OpenTelemetry: OTLP/gRPC export of spans (to Jaeger or any collector) and W3C trace
//! context propagation.
//!
//! Configuration is the standard `OTEL_*` environment: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (default `http://localhost:4317`), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` /
//! `OTEL_TRACES_SAMPLER_ARG` (default parent-based, ratio 1.0), `OTEL_BSP_*` for the batch
//! processor, `OTEL_TRACES_EXPORTER=none` to export nothing (requests still get trace ids:
//! replies, headers and culprits name them) and `OTEL_SDK_DISABLED=true` for no tracing at
//! all (no trace ids either). Spans are batched on the
//! SDK's own thread, so a slow or dead collector never delays a request; a dead collector
//! costs one warning (and a counter), not one log line per batch.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
    trace::TraceContextExt,
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use prometheus_client::metrics::counter::Counter;
use tonic::metadata::MetadataMap;

/// Why no tracer provider could be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP span exporter: {0}")]
pub struct OtelError(#[from] opentelemetry_otlp::ExporterBuildError);

/// What the `OTEL_*` environment asks of tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracing {
    /// Trace ids and OTLP export: the default.
    Export,
    /// No OpenTelemetry pipeline: no export (`OTEL_TRACES_EXPORTER=none`), or no
    /// OpenTelemetry at all (`OTEL_SDK_DISABLED=true`, the specification's switch). Requests
    /// still have trace ids, in replies, headers and culprit names: the diagnosis engine
    /// continues the caller's `traceparent` or makes one. A layer that built every span's data
    /// for nothing to read it cost a fifth of a `Fast` call's instructions.
    Off,
}

/// The tracing the environment asks for.
pub fn tracing_mode() -> Tracing {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true");
    let exporter_none = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    if disabled || exporter_none {
        Tracing::Off
    } else {
        Tracing::Export
    }
}

/// A tracer provider exporting over OTLP/gRPC as `service_name` (unless `OTEL_SERVICE_NAME`
/// says otherwise), to `endpoint` or, when `None`, where `OTEL_EXPORTER_OTLP_*` says. Must be called inside a tokio runtime that outlives it: the tonic channel
/// runs its connection task there.
///
/// # Errors
/// [`OtelError`] if the exporter cannot be built (for example a malformed endpoint).
pub fn tracer_provider(
    service_name: &str,
    endpoint: Option<&str>,
    failures: Counter,
) -> Result<SdkTracerProvider, OtelError> {
    use opentelemetry_otlp::WithExportConfig;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder.build()?;
    let endpoint = endpoint.map_or_else(
        || {
            std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .unwrap_or_else(|_| "http://localhost:4317".to_owned())
        },
        str::to_owned,
    );
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(Reporting {
            inner: exporter,
            endpoint,
            failing: AtomicBool::new(false),
            failures,
        })
        .build())
}

/// Wraps an exporter so that a failing collector is reported once, when it starts failing,
/// and once more when it recovers; every failed batch is counted.
#[derive(Debug)]
struct Reporting<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
    failures: Counter,
}

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(error) => {
                self.failures.inc();
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        %error,
                        spans,
                        "cannot export spans to the OTLP collector; requests are unaffected, \
                         further failures are only counted in holdup_otel_export_failures_total"
                    );
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "span export to the OTLP collector recovered");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Installs the W3C trace-context propagator process-wide.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Reads `traceparent` / `tracestate` from incoming gRPC metadata.
pub fn extract(metadata: &MetadataMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(metadata)))
}

/// Writes the context's `traceparent` / `tracestate` into outgoing HTTP headers.
pub fn inject(context: &Context, headers: &mut http::HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(context, &mut HeaderInjector(headers));
    });
}

/// Reads trace context from incoming HTTP headers.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// The 32-hex-digit trace id of `context`, or empty if it carries no valid span.
pub fn trace_id(context: &Context) -> String {
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
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

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        install_propagator();
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let context = extract(&metadata);
        assert_eq!(trace_id(&context), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut headers = http::HeaderMap::new();
        inject(&context, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
