//! Jaeger v2's `/api/v3/traces…` answers: OTLP JSON (`{"result": {"resourceSpans": […]}}`),
//! ids in hex, times as nanosecond strings, 64-bit integers as strings. A search answers the
//! spans of every trace it found in one list; [`spans`] returns them all, and the caller
//! groups them by trace id.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::model::{Kind, Link, SPAN_ID_HEX, Span, TRACE_ID_HEX, Value, normalize_id};

/// Every span of an answer. A missing `resourceSpans` is an empty answer; anything that is not
/// the OTLP shape is an error naming what was wrong.
///
/// # Errors
/// What the answer lacks or holds that a span cannot have.
pub fn spans(answer: &Json) -> Result<Vec<Span>, String> {
    let result = answer.get("result").ok_or("no \"result\" in the answer")?;
    let mut spans = Vec::new();
    for resource in list(result, "resourceSpans")? {
        let attributes = match resource.get("resource") {
            Some(r) => attributes(r)?,
            None => BTreeMap::new(),
        };
        let service = attributes
            .get("service.name")
            .map(Value::text)
            .unwrap_or_else(|| "unknown_service".to_owned());
        for scope in list(resource, "scopeSpans")? {
            for span in list(scope, "spans")? {
                spans.push(span_of(span, &service)?);
            }
        }
    }
    Ok(spans)
}

/// The array at `key`: absent or `null` is empty, any other non-array an error.
fn list<'a>(json: &'a Json, key: &str) -> Result<&'a [Json], String> {
    match json.get(key) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(other) => Err(format!("\"{key}\" is not a list: {}", clip(other))),
    }
}

/// A value for an error message, cut to a readable length.
pub(crate) fn clip(json: &Json) -> String {
    let mut text = json.to_string();
    if text.len() > 80 {
        let cut = (0..=80)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn id(json: &Json, key: &str, width: usize) -> Result<String, String> {
    let text = json
        .get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("a span without \"{key}\": {}", clip(json)))?;
    normalize_id(text, width).ok_or_else(|| format!("\"{key}\" is not a hex id: {text:?}"))
}

/// OTLP JSON writes 64-bit integers as strings; a number is accepted too.
fn nanos(json: &Json, key: &str) -> Result<i64, String> {
    let value = json
        .get(key)
        .ok_or_else(|| format!("a span without \"{key}\""))?;
    let parsed = match value {
        Json::String(s) => s.parse::<u64>().ok(),
        Json::Number(n) => n.as_u64(),
        _ => None,
    };
    parsed
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| format!("\"{key}\" is not a time in nanoseconds: {}", clip(value)))
}

fn span_of(json: &Json, service: &str) -> Result<Span, String> {
    let trace_id = id(json, "traceId", TRACE_ID_HEX)?;
    let span_id = id(json, "spanId", SPAN_ID_HEX)?;
    let parent_id = match json.get("parentSpanId").and_then(Json::as_str) {
        None | Some("") => None,
        Some(_) => Some(id(json, "parentSpanId", SPAN_ID_HEX)?),
    };
    let start_ns = nanos(json, "startTimeUnixNano")?;
    let end_ns = nanos(json, "endTimeUnixNano")?.max(start_ns);
    let kind = match json.get("kind") {
        Some(Json::Number(n)) => Kind::parse(&n.to_string()),
        Some(Json::String(s)) => Kind::parse(s),
        _ => Kind::Unspecified,
    };
    let mut links = Vec::new();
    for link in list(json, "links")? {
        links.push(Link {
            trace_id: id(link, "traceId", TRACE_ID_HEX)?,
            span_id: id(link, "spanId", SPAN_ID_HEX)?,
            attributes: attributes(link)?,
        });
    }
    Ok(Span {
        trace_id,
        span_id,
        parent_id,
        service: service.to_owned(),
        operation: json
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
        kind,
        start_ns,
        end_ns,
        attributes: attributes(json)?,
        links,
    })
}

/// `"attributes": [{"key": k, "value": {"stringValue": v}}]` as a map.
fn attributes(json: &Json) -> Result<BTreeMap<String, Value>, String> {
    let mut map = BTreeMap::new();
    for kv in list(json, "attributes")? {
        let Some(key) = kv.get("key").and_then(Json::as_str) else {
            return Err(format!("an attribute without a key: {}", clip(kv)));
        };
        if let Some(value) = kv.get("value").and_then(any_value) {
            map.insert(key.to_owned(), value);
        }
    }
    Ok(map)
}

/// An OTLP `AnyValue`; arrays, maps and bytes are kept as their JSON text.
fn any_value(json: &Json) -> Option<Value> {
    let (kind, value) = json.as_object()?.iter().next()?;
    Some(match (kind.as_str(), value) {
        ("stringValue", Json::String(s)) => Value::Str(s.clone()),
        ("intValue", Json::String(s)) => {
            s.parse().map_or_else(|_| Value::Str(s.clone()), Value::Int)
        }
        ("intValue", Json::Number(n)) => Value::Int(n.as_i64()?),
        ("doubleValue", Json::Number(n)) => Value::Float(n.as_f64()?),
        ("boolValue", Json::Bool(b)) => Value::Bool(*b),
        (_, other) => Value::Str(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_a_span_with_its_service_attributes_and_links() {
        let answer = json!({"result": {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "holdup"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spanId": "00f067aa0ba902b7",
                "parentSpanId": "",
                "name": "holdup.v1.Lab/Fast",
                "kind": 2,
                "startTimeUnixNano": "1000",
                "endTimeUnixNano": "5000",
                "attributes": [
                    {"key": "holdup.total_us", "value": {"intValue": "4"}},
                    {"key": "holdup.verdict", "value": {"stringValue": "none"}}
                ],
                "links": [{"traceId": "ab", "spanId": "cd",
                           "attributes": [{"key": "holdup.share_us", "value": {"intValue": "3"}}]}]
            }]}]
        }]}});
        let spans = spans(&answer).expect("parses");
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.service, "holdup");
        assert_eq!(span.kind, Kind::Server);
        assert_eq!(span.parent_id, None);
        assert_eq!(span.duration_ns(), 4_000);
        assert_eq!(span.micros("holdup.total_us"), Some(4));
        assert_eq!(span.links[0].span_id, "00000000000000cd");
        assert_eq!(span.links[0].attributes["holdup.share_us"], Value::Int(3));
    }

    #[test]
    fn shapes_that_are_not_otlp_are_errors_not_panics() {
        for garbage in [
            json!([1, 2]),
            json!({"result": {"resourceSpans": 7}}),
            json!({"result": {"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": 5}]}]}]}}),
            json!({"result": {"resourceSpans": [{"scopeSpans": [{"spans": [{
                "traceId": "zz", "spanId": "01"}]}]}]}}),
            json!({"result": {"resourceSpans": [{"scopeSpans": [{"spans": [{
                "traceId": "01", "spanId": "01", "startTimeUnixNano": "-3",
                "endTimeUnixNano": "1"}]}]}]}}),
        ] {
            assert!(spans(&garbage).is_err(), "{garbage}");
        }
        assert_eq!(spans(&json!({"result": {}})), Ok(vec![]));
    }
}
