//! Jaeger's `/api/traces…` answers, the JSON its UI reads (and Jaeger v1's only API):
//! `{"data": [{"traceID", "spans": […], "processes": {…}}]}`, times in microseconds, the
//! parent a `CHILD_OF` reference, OpenTelemetry links `FOLLOWS_FROM` references (without
//! their attributes), the span kind a `span.kind` tag.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::model::{Kind, Link, SPAN_ID_HEX, Span, TRACE_ID_HEX, Trace, Value, normalize_id};
use super::otlp_json::clip;

/// Every trace of an answer (`data` absent or `null`: none).
///
/// # Errors
/// What the answer lacks or holds that a trace cannot have.
pub fn traces(answer: &Json) -> Result<Vec<Trace>, String> {
    if !answer.is_object() {
        return Err(format!("not a JSON object: {}", clip(answer)));
    }
    let mut traces = Vec::new();
    for trace in list(answer, "data")? {
        let processes = trace.get("processes");
        let mut spans = Vec::new();
        for span in list(trace, "spans")? {
            spans.push(span_of(span, processes)?);
        }
        let trace_id = match trace.get("traceID").and_then(Json::as_str) {
            Some(t) => normalize_id(t, TRACE_ID_HEX)
                .ok_or_else(|| format!("\"traceID\" is not a hex id: {t:?}"))?,
            None => spans
                .first()
                .map(|s| s.trace_id.clone())
                .unwrap_or_default(),
        };
        traces.push(Trace { trace_id, spans });
    }
    Ok(traces)
}

fn list<'a>(json: &'a Json, key: &str) -> Result<&'a [Json], String> {
    match json.get(key) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(other) => Err(format!("\"{key}\" is not a list: {}", clip(other))),
    }
}

fn id(json: &Json, key: &str, width: usize) -> Result<String, String> {
    let text = json
        .get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("no \"{key}\" in {}", clip(json)))?;
    normalize_id(text, width).ok_or_else(|| format!("\"{key}\" is not a hex id: {text:?}"))
}

fn micros(json: &Json, key: &str) -> Result<i64, String> {
    json.get(key)
        .and_then(Json::as_u64)
        .and_then(|us| i64::try_from(us).ok()?.checked_mul(1_000))
        .ok_or_else(|| format!("\"{key}\" is not a time in microseconds: {}", clip(json)))
}

fn span_of(json: &Json, processes: Option<&Json>) -> Result<Span, String> {
    let trace_id = id(json, "traceID", TRACE_ID_HEX)?;
    let span_id = id(json, "spanID", SPAN_ID_HEX)?;
    let start_ns = micros(json, "startTime")?;
    let end_ns = start_ns.saturating_add(micros(json, "duration")?);
    let mut parent_id = None;
    let mut links = Vec::new();
    for reference in list(json, "references")? {
        let target_span = id(reference, "spanID", SPAN_ID_HEX)?;
        match reference.get("refType").and_then(Json::as_str) {
            Some("CHILD_OF") if parent_id.is_none() => parent_id = Some(target_span),
            Some("FOLLOWS_FROM") => links.push(Link {
                trace_id: id(reference, "traceID", TRACE_ID_HEX)?,
                span_id: target_span,
                attributes: BTreeMap::new(),
            }),
            _ => {}
        }
    }
    let mut attributes = BTreeMap::new();
    for tag in list(json, "tags")? {
        let Some(key) = tag.get("key").and_then(Json::as_str) else {
            return Err(format!("a tag without a key: {}", clip(tag)));
        };
        let value = match tag.get("value") {
            Some(Json::String(s)) => Value::Str(s.clone()),
            Some(Json::Bool(b)) => Value::Bool(*b),
            Some(Json::Number(n)) => n
                .as_i64()
                .map(Value::Int)
                .or_else(|| n.as_f64().map(Value::Float))
                .unwrap_or_else(|| Value::Str(n.to_string())),
            Some(other) => Value::Str(other.to_string()),
            None => continue,
        };
        attributes.insert(key.to_owned(), value);
    }
    let kind = attributes
        .get("span.kind")
        .map_or(Kind::Unspecified, |k| Kind::parse(&k.text()));
    let service = json
        .get("processID")
        .and_then(Json::as_str)
        .and_then(|p| processes?.get(p)?.get("serviceName")?.as_str())
        .unwrap_or("unknown_service")
        .to_owned();
    Ok(Span {
        trace_id,
        span_id,
        parent_id,
        service,
        operation: json
            .get("operationName")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
        kind,
        start_ns,
        end_ns,
        attributes,
        links,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_parent_links_kind_and_service() {
        let answer = json!({"data": [{
            "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
            "spans": [{
                "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spanID": "00f067aa0ba902b7",
                "operationName": "holdup.v1.Lab/Fast",
                "references": [
                    {"refType": "CHILD_OF", "traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "1"},
                    {"refType": "FOLLOWS_FROM", "traceID": "ff", "spanID": "2"}
                ],
                "startTime": 10, "duration": 5,
                "tags": [{"key": "span.kind", "type": "string", "value": "server"},
                         {"key": "holdup.total_us", "type": "int64", "value": 5}],
                "processID": "p1"
            }],
            "processes": {"p1": {"serviceName": "holdup"}}
        }]});
        let traces = traces(&answer).expect("parses");
        let span = &traces[0].spans[0];
        assert_eq!(span.service, "holdup");
        assert_eq!(span.kind, Kind::Server);
        assert_eq!(span.parent_id.as_deref(), Some("0000000000000001"));
        assert_eq!(span.links.len(), 1);
        assert_eq!((span.start_ns, span.end_ns), (10_000, 15_000));
        assert_eq!(span.micros("holdup.total_us"), Some(5));
    }

    #[test]
    fn garbage_is_an_error() {
        for garbage in [
            json!("text"),
            json!({"data": {"spans": []}}),
            json!({"data": [{"spans": [{"traceID": "01"}]}]}),
            json!({"data": [{"spans": [{"traceID": "01", "spanID": "01", "startTime": -1}]}]}),
        ] {
            assert!(traces(&garbage).is_err(), "{garbage}");
        }
        assert_eq!(traces(&json!({"data": null})), Ok(vec![]));
    }
}
