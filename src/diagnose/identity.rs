//! Who a request is, as the requests it delays will name it: its gRPC method and its span.

use std::fmt;

use http::uri::PathAndQuery;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// A request, as a culprit is named. Cheap to share: one per request, behind an `Arc`.
#[derive(Debug)]
pub struct Identity {
    /// `/package.Service/Method`; a `PathAndQuery` clone shares the request's bytes.
    path: PathAndQuery,
    /// The request's OpenTelemetry span, when tracing gave it one. (Not the `tracing` span
    /// itself: culprits are remembered for a while, and must not keep spans open.)
    trace: Option<(TraceId, SpanId, TraceFlags)>,
}

impl Identity {
    pub(crate) fn new(path: PathAndQuery, context: &SpanContext) -> Self {
        let trace = context
            .is_valid()
            .then(|| (context.trace_id(), context.span_id(), context.trace_flags()));
        Self { path, trace }
    }

    /// The full method path without its leading slash: `holdup.v1.Lab/Fast`.
    pub fn full_method(&self) -> &str {
        self.path.path().trim_start_matches('/')
    }

    /// `(service, method)`: `("holdup.v1.Lab", "Fast")`. A path of another shape is its own
    /// service with an empty method.
    pub fn service_and_method(&self) -> (&str, &str) {
        split_method(self.full_method())
    }

    pub fn method(&self) -> &str {
        self.service_and_method().1
    }

    /// A request of `path` with no trace, as tests name one.
    #[cfg(test)]
    pub(crate) fn untraced(path: &'static str) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::new(
            PathAndQuery::from_static(path),
            &SpanContext::empty_context(),
        ))
    }

    /// 32 hex digits, or empty without a trace.
    pub fn trace_id(&self) -> String {
        self.trace
            .map(|(t, _, _)| hex(&t.to_bytes()))
            .unwrap_or_default()
    }

    /// 16 hex digits, or empty without a trace.
    pub fn span_id(&self) -> String {
        self.trace
            .map(|(_, s, _)| hex(&s.to_bytes()))
            .unwrap_or_default()
    }

    /// The first 8 hex digits of the trace id, as task names and logs show it.
    pub fn short_trace_id(&self) -> String {
        let mut id = self.trace_id();
        id.truncate(8);
        id
    }

    /// The span context to link to, if this request has one.
    pub fn span_context(&self) -> Option<SpanContext> {
        self.trace.map(|(trace, span, flags)| {
            SpanContext::new(trace, span, flags, true, TraceState::default())
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = self.method();
        let method = if method.is_empty() {
            self.full_method()
        } else {
            method
        };
        match self.trace {
            Some((trace, _, _)) => write!(f, "{method} {}", &trace.to_string()[..8]),
            None => f.write_str(method),
        }
    }
}

/// Lower-case hex of `bytes`, as OpenTelemetry and W3C trace context write ids. By hand: a
/// request writes its trace id three times (reply, `x-trace-id`, culprit names), and
/// `core::fmt`'s `{:032x}` cost about 700 instructions each.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits: Vec<u8> = bytes
        .iter()
        .flat_map(|&b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]])
        .collect();
    // Hex digits are ASCII: the check cannot fail.
    String::from_utf8(digits).unwrap_or_default()
}

/// `package.Service/Method` into its two parts.
pub fn split_method(full: &str) -> (&str, &str) {
    full.rsplit_once('/').unwrap_or((full, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_show_the_short_trace_id() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let identity = Identity::new(PathAndQuery::from_static("/holdup.v1.Lab/Fast"), &context);
        assert_eq!(identity.service_and_method(), ("holdup.v1.Lab", "Fast"));
        assert_eq!(identity.short_trace_id(), "4bf92f35");
        assert_eq!(identity.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            identity.trace_id(),
            context.trace_id().to_string(),
            "as OpenTelemetry writes it"
        );
        assert_eq!(identity.span_id(), "00f067aa0ba902b7");
        assert_eq!(identity.to_string(), "Fast 4bf92f35");
        let untraced = Identity::new(
            PathAndQuery::from_static("/x"),
            &SpanContext::empty_context(),
        );
        assert_eq!(untraced.trace_id(), "");
        assert_eq!(untraced.to_string(), "x");
    }
}
