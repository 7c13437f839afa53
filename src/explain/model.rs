//! A trace as `holdup explain` reasons about it, whichever Jaeger API it came from: spans with
//! their service, times in nanoseconds since the epoch, parent, attributes and links. The two
//! parsers (`otlp_json`, `ui_json`) build it; everything after them reads only this.

use std::collections::BTreeMap;

/// One attribute value. OTLP has more shapes (arrays, maps, bytes); holdup reads none of
/// them, so they are kept as their JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    /// The value as a whole number: an integer, a float (truncated) or a string holding one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            // Saturating: attributes are times in microseconds, far inside i64.
            Self::Float(f) if f.is_finite() => Some(*f as i64),
            Self::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The value as text (numbers in decimal).
    pub fn text(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

/// What a span stands for in its service, as OpenTelemetry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    /// OTLP's number (`2` server) or name (`SPAN_KIND_SERVER`), or Jaeger's `span.kind` tag.
    pub fn parse(text: &str) -> Self {
        let word = text
            .trim()
            .trim_start_matches("SPAN_KIND_")
            .to_ascii_lowercase();
        match word.as_str() {
            "1" | "internal" => Self::Internal,
            "2" | "server" => Self::Server,
            "3" | "client" => Self::Client,
            "4" | "producer" => Self::Producer,
            "5" | "consumer" => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// A link from a span to a span of (usually) another trace. holdup links a request that
/// waited for a runtime worker to each request that held one (`holdup.link = "culprit"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: String,
    pub span_id: String,
    /// Empty when the API does not carry link attributes (Jaeger's `/api/traces`).
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// `None` for a span without a parent; a parent the trace lacks is still named here.
    pub parent_id: Option<String>,
    pub service: String,
    pub operation: String,
    pub kind: Kind,
    /// Nanoseconds since the Unix epoch.
    pub start_ns: i64,
    /// Never before `start_ns`.
    pub end_ns: i64,
    pub attributes: BTreeMap<String, Value>,
    pub links: Vec<Link>,
}

impl Span {
    pub fn duration_ns(&self) -> i64 {
        self.end_ns - self.start_ns
    }

    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// A whole-number attribute in microseconds (holdup's `*_us` fields), clamped to
    /// `0..=MAX_MICROS` so that sums of them never overflow, whatever a span claims.
    pub fn micros(&self, key: &str) -> Option<i64> {
        self.attr(key)?.as_i64().map(clamp_micros)
    }

    pub fn text(&self, key: &str) -> Option<String> {
        self.attr(key).map(Value::text).filter(|t| !t.is_empty())
    }
}

/// The largest duration an attribute is taken to hold: a year, far beyond any request, and
/// small enough that millions of them add up inside an `i64`.
pub const MAX_MICROS: i64 = 365 * 86_400 * 1_000_000;

/// `us` within `0..=MAX_MICROS`.
pub fn clamp_micros(us: i64) -> i64 {
    us.clamp(0, MAX_MICROS)
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

impl Trace {
    /// The index of the span with id `span_id` (the first, should ids repeat).
    pub fn find(&self, span_id: &str) -> Option<usize> {
        self.spans.iter().position(|s| s.span_id == span_id)
    }

    /// The distinct service names, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self.spans.iter().map(|s| s.service.clone()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// `id` as `width` lower-case hex digits (left-padded with zeros), or `None` when it is not
/// hex or too long. Jaeger's older JSON drops leading zeros of a trace id.
pub fn normalize_id(id: &str, width: usize) -> Option<String> {
    let id = id.trim();
    if id.is_empty() || id.len() > width || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("{id:0>width$}").to_ascii_lowercase())
}

/// Width of a trace id and a span id in hex digits.
pub const TRACE_ID_HEX: usize = 32;
pub const SPAN_ID_HEX: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_padded_and_lower_cased() {
        assert_eq!(
            normalize_id("ABC", TRACE_ID_HEX).as_deref(),
            Some("00000000000000000000000000000abc")
        );
        assert_eq!(normalize_id("xyz", SPAN_ID_HEX), None);
        assert_eq!(normalize_id("", SPAN_ID_HEX), None);
        assert_eq!(normalize_id(&"a".repeat(17), SPAN_ID_HEX), None);
    }

    #[test]
    fn kinds_from_every_spelling() {
        assert_eq!(Kind::parse("2"), Kind::Server);
        assert_eq!(Kind::parse("SPAN_KIND_CLIENT"), Kind::Client);
        assert_eq!(Kind::parse("server"), Kind::Server);
        assert_eq!(Kind::parse("what"), Kind::Unspecified);
    }

    #[test]
    fn values_as_numbers() {
        assert_eq!(Value::Str(" 12 ".into()).as_i64(), Some(12));
        assert_eq!(Value::Float(f64::NAN).as_i64(), None);
        assert_eq!(Value::Bool(true).as_i64(), None);
    }
}
