//! OpenTelemetry glue (feature `opentelemetry`): the caller's context from the request's
//! headers, through whatever propagator the application installed (W3C trace context, B3, …).

use opentelemetry::{Context, propagation::Extractor};

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
