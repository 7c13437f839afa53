//! A call's gRPC status, read from its trailers (or a trailers-only response's headers), as
//! the request span records it under OpenTelemetry's RPC conventions.

use http::{HeaderMap, HeaderName};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// `UNIMPLEMENTED`: the server has no such method.
pub(crate) const UNIMPLEMENTED: u16 = 12;

/// The first value of `name`, as `HeaderMap::get` gives it. Every response's head and
/// trailers are read, and they hold a few entries: comparing their names is cheaper than
/// `get`'s hash of a custom name (about 170 instructions each, callgrind).
fn first<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a http::HeaderValue> {
    const SCAN_UP_TO: usize = 8;
    if headers.len() > SCAN_UP_TO {
        return headers.get(name);
    }
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// A `grpc-status` value's code: decimal digits that fit a `u16`. Read by hand: every call's
/// trailers carry one, and `to_str` then `str::parse` cost 27 instructions a call more
/// (callgrind, the benchmark's echo).
fn code_of(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u16, |code, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        code.checked_mul(10)?.checked_add(u16::from(digit))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrpcStatus<'a> {
    pub code: u16,
    /// `grpc-message`, for a status other than OK.
    pub message: Option<&'a str>,
}

impl<'a> GrpcStatus<'a> {
    /// The status in `headers`, if they carry one.
    pub(crate) fn of(headers: &'a HeaderMap) -> Option<Self> {
        let code = first(headers, &GRPC_STATUS).and_then(|v| code_of(v.as_bytes()))?;
        let message = (code != 0)
            .then(|| first(headers, &GRPC_MESSAGE).and_then(|v| v.to_str().ok()))
            .flatten();
        Some(Self { code, message })
    }

    /// The span's `otel.status_code`: `ERROR` for any status but OK, else left unset.
    pub(crate) fn otel_status(&self) -> Option<&'static str> {
        (self.code != 0).then_some("ERROR")
    }

    /// On the request's span alone, for a status that comes after the diagnosis was recorded
    /// (a stream's trailers, or a reply whose trailers were not ready with its head).
    pub(crate) fn record(&self, timeline: &crate::timeline::Timeline) {
        #[cfg(feature = "opentelemetry")]
        if let Some(context) = timeline.otel_context() {
            crate::otel::record_status(context, *self);
            return;
        }
        let span = &timeline.span;
        // An integer attribute, as OpenTelemetry's RPC conventions have it (a `u16` would be
        // recorded as a string through `Debug`).
        span.record("rpc.grpc.status_code", i64::from(self.code));
        if let Some(status) = self.otel_status() {
            span.record("otel.status_code", status);
            if let Some(message) = self.message {
                span.record("otel.status_message", message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_and_its_message_come_from_the_trailers() {
        let mut trailers = HeaderMap::new();
        assert_eq!(GrpcStatus::of(&trailers), None);
        trailers.insert(GRPC_STATUS, "0".parse().unwrap());
        trailers.insert(GRPC_MESSAGE, "ignored on OK".parse().unwrap());
        let ok = GrpcStatus::of(&trailers).unwrap();
        assert_eq!((ok.code, ok.message, ok.otel_status()), (0, None, None));
        trailers.insert(GRPC_STATUS, "14".parse().unwrap());
        trailers.insert(GRPC_MESSAGE, "backend down".parse().unwrap());
        let failed = GrpcStatus::of(&trailers).unwrap();
        assert_eq!(
            (failed.code, failed.message, failed.otel_status()),
            (14, Some("backend down"), Some("ERROR"))
        );
        trailers.insert(GRPC_STATUS, "not a number".parse().unwrap());
        assert_eq!(GrpcStatus::of(&trailers), None);
    }

    #[test]
    fn a_code_is_decimal_digits_that_fit() {
        for (digits, code) in [
            ("0", Some(0)),
            ("14", Some(14)),
            ("007", Some(7)),
            ("65535", Some(u16::MAX)),
            ("65536", None),
            ("", None),
            ("1a", None),
            ("+1", None),
            (" 1", None),
            ("-1", None),
        ] {
            assert_eq!(code_of(digits.as_bytes()), code, "{digits:?}");
        }
    }

    #[test]
    fn the_first_value_is_read_in_small_and_large_maps_alike() {
        for others in [0, 3, 20] {
            let mut headers = HeaderMap::new();
            for i in 0..others {
                let name = HeaderName::try_from(format!("x-other-{i}")).unwrap();
                headers.insert(name, "v".parse().unwrap());
            }
            headers.append(GRPC_STATUS, "5".parse().unwrap());
            headers.append(GRPC_STATUS, "0".parse().unwrap());
            headers.insert(GRPC_MESSAGE, "gone".parse().unwrap());
            let status = GrpcStatus::of(&headers);
            assert_eq!(
                status.map(|s| (s.code, s.message)),
                Some((5, Some("gone"))),
                "with {others} other headers"
            );
        }
    }
}
