//! Who a request is, as the requests it delays will name it: its gRPC method and its ids.
//!
//! Every request has ids, traced or not: the W3C trace and span ids of its span when
//! OpenTelemetry gave it one, else the caller's `traceparent` trace id with a span id of our
//! own, else ids the engine makes. Two culprits of the same method are then always told apart
//! (`GetFeature 4bf92f35`, `GetFeature 0af76519`), with or without a tracing pipeline.

use std::{
    cell::{Cell, RefCell},
    fmt,
    hash::{BuildHasher, Hasher},
};

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;

/// A request, as a culprit is named. Cheap to share: one per request, behind an `Arc`.
#[derive(Debug)]
pub struct Identity {
    /// `/package.Service/Method`; a `PathAndQuery` clone shares the request's bytes.
    path: PathAndQuery,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// W3C trace flags of the span (bit 0: sampled), for the links to it.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    flags: u8,
    /// Whether the ids are a real span's, which a culprit link can point at; made-up ids name
    /// the request but no span exists under them.
    traced: bool,
}

impl Identity {
    /// A request with the ids of its span.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn traced(
        path: PathAndQuery,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        flags: u8,
    ) -> Self {
        Self {
            path,
            trace_id,
            span_id,
            flags,
            traced: true,
        }
    }

    /// A request without a span: the caller's trace id if it sent one, else a new one, and a
    /// new span id.
    pub(crate) fn generated(path: PathAndQuery, caller_trace: Option<[u8; 16]>) -> Self {
        let trace_id = caller_trace.unwrap_or_else(|| {
            let mut id = [0; 16];
            id[..8].copy_from_slice(&random_u64().to_be_bytes());
            id[8..].copy_from_slice(&random_u64().to_be_bytes());
            id
        });
        Self {
            path,
            trace_id,
            span_id: random_u64().to_be_bytes(),
            flags: 0,
            traced: false,
        }
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

    /// A request of `path` with made-up ids, as tests name one.
    #[cfg(test)]
    pub(crate) fn untraced(path: &'static str) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::generated(PathAndQuery::from_static(path), None))
    }

    /// 32 hex digits: the W3C trace id, or the one the engine made for an untraced request.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The trace id as an `x-trace-id` value: made from the digits on the stack, with no
    /// `String` between (a second check of its bytes, and an allocation it does not need),
    /// into a slice of this thread's [`header_bytes`].
    pub(crate) fn trace_id_header(&self) -> Option<http::HeaderValue> {
        http::HeaderValue::from_maybe_shared(header_bytes(&hex_digits(&self.trace_id).0)).ok()
    }

    /// 16 hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// Whether the ids belong to a span a tracing backend has (else the engine made them).
    pub fn is_traced(&self) -> bool {
        self.traced
    }

    /// The first 8 hex digits of the trace id, as task names and logs show it.
    pub fn short_trace_id(&self) -> String {
        hex(&self.trace_id[..4])
    }

    /// The span context to link to, if this request has a real span.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn span_context(&self) -> Option<opentelemetry::trace::SpanContext> {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        self.traced.then(|| {
            SpanContext::new(
                TraceId::from_bytes(self.trace_id),
                SpanId::from_bytes(self.span_id),
                TraceFlags::new(self.flags),
                true,
                TraceState::default(),
            )
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
        write!(f, "{method} {}", self.short_trace_id())
    }
}

/// Lower-case hex of `bytes` (at most 16), as OpenTelemetry and W3C trace context write ids.
fn hex(bytes: &[u8]) -> String {
    let (digits, len) = hex_digits(bytes);
    // Hex digits are ASCII: the check passes, on its fast path for ASCII.
    String::from_utf8(digits[..len].to_vec()).unwrap_or_default()
}

/// Bytes cut per buffer of [`header_bytes`]: 128 trace ids.
const HEADER_BUFFER: usize = 4096;

thread_local! {
    /// This thread's buffer for [`header_bytes`]: what is left of it after the values cut.
    static HEADER_BYTES: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `digits` as `Bytes` cut from this thread's buffer, which a header value is made of. A value
/// copied into an allocation of its own cost every response a `malloc` and a `free` (about 200
/// instructions, callgrind on the benchmark's echo); a slice of a shared buffer costs a
/// reference count, and a buffer every 128 responses. A buffer is freed when the last value
/// cut from it is dropped: soon, as h2 drops a head once it has encoded it.
fn header_bytes(digits: &[u8]) -> Bytes {
    HEADER_BYTES.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.capacity() - buffer.len() < digits.len() {
            *buffer = BytesMut::with_capacity(HEADER_BUFFER.max(digits.len()));
        }
        buffer.extend_from_slice(digits);
        buffer.split().freeze()
    })
}

/// The hex digits of `bytes` (at most 16; more are left out) and how many there are. By
/// hand, by index, on the stack: `core::fmt`'s `{:032x}` cost about 700 instructions per trace
/// id, and a `String::push` per digit (a capacity and char-width check each) 374 (callgrind).
fn hex_digits(bytes: &[u8]) -> ([u8; 32], usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; 32];
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    (out, bytes.len().min(16) * 2)
}

/// The trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`), if valid and
/// not all zeros.
pub(crate) fn traceparent_trace_id(value: &[u8]) -> Option<[u8; 16]> {
    let mut parts = value.split(|&b| b == b'-');
    let (version, trace) = (parts.next()?, parts.next()?);
    if version.len() != 2 || version == b"ff" || trace.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in trace.chunks(2).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        id[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    (id != [0; 16]).then_some(id)
}

/// 64 random bits, never zero (W3C ids must not be all zeros): a per-thread xorshift seeded
/// from std's randomly keyed hasher. Ids name requests; they need to differ, not to be secret.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(&hasher as *const _ as usize);
            hasher.finish() | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// `package.Service/Method` into its two parts.
///
/// Scanned back from the end by hand: a method name is a few bytes, and `rsplit_once`'s
/// word-at-a-time `memrchr` costs more to set up than this loop takes to find the `/`
/// (callgrind, the benchmark's `holdup.v1.Lab/Fast`: 77 instructions a call against about 20),
/// which the request span pays twice (service and method).
pub fn split_method(full: &str) -> (&str, &str) {
    match full.bytes().rposition(|b| b == b'/') {
        Some(slash) => (&full[..slash], &full[slash + 1..]),
        None => (full, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_values_cut_from_one_buffer_stay_apart() {
        // More values than one buffer holds, all alive at once: each keeps its own digits
        // across the buffer's change.
        let ids: Vec<_> = (0..300u16)
            .map(|n| {
                let mut trace = [0u8; 16];
                trace[14..].copy_from_slice(&n.to_be_bytes());
                Identity::traced(PathAndQuery::from_static("/a.B/C"), trace, [1; 8], 1)
            })
            .collect();
        let values: Vec<_> = ids.iter().map(|id| id.trace_id_header().unwrap()).collect();
        for (n, value) in values.iter().enumerate() {
            assert_eq!(
                value.to_str().unwrap(),
                format!("{}{n:04x}", "0".repeat(28))
            );
        }
    }

    #[test]
    fn a_method_splits_at_its_last_slash() {
        assert_eq!(
            split_method("holdup.v1.Lab/Fast"),
            ("holdup.v1.Lab", "Fast")
        );
        assert_eq!(split_method("a/b/c"), ("a/b", "c"));
        assert_eq!(split_method("/x"), ("", "x"));
        assert_eq!(split_method("Service/"), ("Service", ""));
        assert_eq!(split_method("no-slash"), ("no-slash", ""));
        assert_eq!(split_method(""), ("", ""));
        // A multi-byte character before the slash: the split is on a char boundary.
        assert_eq!(split_method("é.Svc/Méthode"), ("é.Svc", "Méthode"));
    }

    #[test]
    fn names_split_and_show_the_short_trace_id() {
        let mut trace = [0u8; 16];
        trace.copy_from_slice(&[
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ]);
        let span = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        let identity = Identity::traced(
            PathAndQuery::from_static("/holdup.v1.Lab/Fast"),
            trace,
            span,
            1,
        );
        assert_eq!(identity.service_and_method(), ("holdup.v1.Lab", "Fast"));
        assert_eq!(identity.short_trace_id(), "4bf92f35");
        assert_eq!(identity.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            identity.trace_id_header().unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(identity.span_id(), "00f067aa0ba902b7");
        assert_eq!(identity.to_string(), "Fast 4bf92f35");
    }

    #[test]
    fn untraced_requests_still_have_distinct_ids() {
        let a = Identity::generated(PathAndQuery::from_static("/s.S/GetFeature"), None);
        let b = Identity::generated(PathAndQuery::from_static("/s.S/GetFeature"), None);
        assert_eq!(a.trace_id().len(), 32);
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.to_string(), b.to_string(), "culprits must be told apart");
        assert!(!a.is_traced());
    }

    #[test]
    fn a_callers_traceparent_gives_the_trace_id() {
        let id = traceparent_trace_id(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(hex(&id.unwrap()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            traceparent_trace_id(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(traceparent_trace_id(b"00-4BF92F-x-01"), None);
        assert_eq!(traceparent_trace_id(b"garbage"), None);
        let made = Identity::generated(PathAndQuery::from_static("/s.S/M"), id);
        assert_eq!(made.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
