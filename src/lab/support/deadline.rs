//! The caller's deadline, from the `grpc-timeout` header.

use std::time::Duration;

use http::HeaderName;
use tonic::metadata::MetadataMap;

/// Parsed once: a `&str` key is parsed into a name at every look-up (measured with callgrind,
/// a few hundred instructions on every call of the Lab).
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The timeout the caller set, if any. Malformed values are ignored, as gRPC specifies.
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    parse(metadata.as_ref().get(GRPC_TIMEOUT)?.to_str().ok()?)
}

/// Parses the gRPC wire format: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse("S"), None);
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("12x"), None);
        assert_eq!(parse("-1S"), None);
    }
}
