//! The client of Jaeger's query API: a trace by id, and a search by service, operation and
//! time window. Jaeger v2 answers `/api/v3/traces` (OTLP JSON); `/api/traces` (the UI's JSON)
//! is what Jaeger v1 and some proxies have. `Api::Auto` asks v3 first and falls back to the
//! older API only when the v3 route itself is missing, not when a trace is.
//!
//! Answers are read in chunks up to [`MAX_BODY_BYTES`]: a search of many traces is large, but
//! never held without bound.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde_json::Value as Json;

use super::{
    error::ExplainError,
    model::{TRACE_ID_HEX, Trace, normalize_id},
    otlp_json, ui_json,
};

/// Where `holdup explain` looks when not told: Jaeger's all-in-one on this machine.
pub const DEFAULT_JAEGER_URL: &str = "http://127.0.0.1:16686";

/// How long one request to Jaeger may take, answer included: a search of a thousand traces
/// from the in-memory store answers in well under a second; ten seconds leaves room for a
/// remote storage backend.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting may take: an unreachable Jaeger should say so quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest answer read: a search of the default depth, with holdup's few spans per trace,
/// is a few MiB; far more means a search far wider than an explanation needs.
pub const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// How much of an error answer an error message quotes.
const QUOTED_BODY: usize = 200;

/// Which of Jaeger's query APIs to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `/api/v3` (Jaeger v2), else `/api/traces` where the server has no v3 route.
    Auto,
    /// `/api/v3/traces` only.
    V3,
    /// `/api/traces` only (the UI's API).
    V1,
}

/// Which API an answer came from, as the output names it.
pub const V3_NAME: &str = "api/v3";
pub const V1_NAME: &str = "api/traces";

/// A search: traces with a span of `service` (and `operation`) that started in the last
/// `since`, at most `depth` of them.
#[derive(Debug, Clone)]
pub struct Search {
    pub service: String,
    pub operation: Option<String>,
    pub since: Duration,
    pub depth: usize,
}

/// A Jaeger query service.
#[derive(Debug, Clone)]
pub struct Jaeger {
    base: Url,
    api: Api,
    http: reqwest::Client,
}

/// One HTTP answer, read whole.
struct Answer {
    url: String,
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Result<Json, ExplainError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ExplainError::malformed(&self.url, format!("not JSON ({e})")))
    }

    /// A 404 that Jaeger's v3 gateway wrote (`{"error": {"httpCode": 404, …}}`): the route
    /// exists and found nothing. Anything else (a plain "404 page not found") means no route.
    fn is_gateway_not_found(&self) -> bool {
        self.status == 404
            && serde_json::from_slice::<Json>(&self.body)
                .ok()
                .is_some_and(|j| j.get("error").is_some_and(Json::is_object))
    }

    /// A 404 that Jaeger's `/api/traces` wrote (`{"errors": [{"code": 404, …}]}`), not a
    /// server without that route.
    fn is_ui_not_found(&self) -> bool {
        self.status == 404
            && serde_json::from_slice::<Json>(&self.body)
                .ok()
                .is_some_and(|j| j.get("errors").is_some_and(Json::is_array))
    }

    fn status_error(&self) -> ExplainError {
        let text = String::from_utf8_lossy(&self.body);
        let mut body: String = text.trim().chars().take(QUOTED_BODY).collect();
        if text.trim().chars().count() > QUOTED_BODY {
            body.push('…');
        }
        ExplainError::Status {
            url: self.url.clone(),
            status: self.status,
            body,
        }
    }
}

impl Jaeger {
    /// A client of the query service at `base` (`http://host:16686`, or with a path prefix).
    ///
    /// # Errors
    /// [`ExplainError::Unreachable`] when no HTTP client can be built (no TLS backend).
    pub fn new(base: Url, api: Api, timeout: Duration) -> Result<Self, ExplainError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .build()
            .map_err(|source| ExplainError::Unreachable {
                url: base.to_string(),
                source,
            })?;
        Ok(Self { base, api, http })
    }

    /// The base URL, as errors and the output name it.
    pub fn url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `base` + `path` (which starts with `/`), with `query` appended.
    fn endpoint(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_query(None);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    async fn get(&self, url: Url) -> Result<Answer, ExplainError> {
        let shown = url.to_string();
        let unreachable = |source| ExplainError::Unreachable {
            url: shown.clone(),
            source,
        };
        let too_large = || ExplainError::TooLarge {
            url: shown.clone(),
            limit: MAX_BODY_BYTES,
        };
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(too_large());
        }
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            url: shown,
            status,
            body,
        })
    }

    /// The trace `trace_id` (hex, up to 32 digits), and the API it came from.
    ///
    /// # Errors
    /// [`ExplainError::TraceNotFound`] when Jaeger has no such trace; the others when Jaeger
    /// cannot be reached or answers what its API does not.
    pub async fn trace(&self, trace_id: &str) -> Result<(Trace, &'static str), ExplainError> {
        let wanted =
            normalize_id(trace_id, TRACE_ID_HEX).ok_or_else(|| ExplainError::TraceNotFound {
                trace_id: trace_id.to_owned(),
                url: self.url(),
            })?;
        let not_found = || ExplainError::TraceNotFound {
            trace_id: wanted.clone(),
            url: self.url(),
        };
        if self.api != Api::V1 {
            let answer = self
                .get(self.endpoint(&format!("/api/v3/traces/{wanted}"), &[]))
                .await?;
            match answer.status {
                200 => {
                    let spans = otlp_json::spans(&answer.json()?)
                        .map_err(|reason| ExplainError::malformed(&answer.url, reason))?;
                    let spans: Vec<_> =
                        spans.into_iter().filter(|s| s.trace_id == wanted).collect();
                    if spans.is_empty() {
                        return Err(not_found());
                    }
                    return Ok((
                        Trace {
                            trace_id: wanted,
                            spans,
                        },
                        V3_NAME,
                    ));
                }
                404 if answer.is_gateway_not_found() => return Err(not_found()),
                404 if self.api == Api::Auto => {}
                _ => return Err(answer.status_error()),
            }
        }
        let answer = self
            .get(self.endpoint(&format!("/api/traces/{wanted}"), &[]))
            .await?;
        match answer.status {
            200 => {}
            404 if answer.is_ui_not_found() => return Err(not_found()),
            _ => return Err(answer.status_error()),
        }
        let traces = ui_json::traces(&answer.json()?)
            .map_err(|reason| ExplainError::malformed(&answer.url, reason))?;
        let spans: Vec<_> = traces
            .into_iter()
            .flat_map(|t| t.spans)
            .filter(|s| s.trace_id == wanted)
            .collect();
        if spans.is_empty() {
            return Err(not_found());
        }
        Ok((
            Trace {
                trace_id: wanted,
                spans,
            },
            V1_NAME,
        ))
    }

    /// The traces a search finds (none is not an error here), and the API they came from.
    ///
    /// # Errors
    /// As for [`Jaeger::trace`].
    pub async fn search(
        &self,
        search: &Search,
    ) -> Result<(Vec<Trace>, &'static str), ExplainError> {
        let now = SystemTime::now();
        let from = now.checked_sub(search.since).unwrap_or(UNIX_EPOCH);
        if self.api != Api::V1 {
            let mut query = vec![
                ("query.service_name", search.service.clone()),
                ("query.start_time_min", rfc3339(from)),
                ("query.start_time_max", rfc3339(now)),
                ("query.num_traces", search.depth.to_string()),
            ];
            if let Some(operation) = &search.operation {
                query.push(("query.operation_name", operation.clone()));
            }
            let answer = self.get(self.endpoint("/api/v3/traces", &query)).await?;
            match answer.status {
                200 => {
                    let spans = otlp_json::spans(&answer.json()?)
                        .map_err(|reason| ExplainError::malformed(&answer.url, reason))?;
                    return Ok((group(spans), V3_NAME));
                }
                404 if answer.is_gateway_not_found() => return Ok((Vec::new(), V3_NAME)),
                404 if self.api == Api::Auto => {}
                _ => return Err(answer.status_error()),
            }
        }
        let mut query = vec![
            ("service", search.service.clone()),
            ("start", micros_since_epoch(from).to_string()),
            ("end", micros_since_epoch(now).to_string()),
            ("limit", search.depth.to_string()),
        ];
        if let Some(operation) = &search.operation {
            query.push(("operation", operation.clone()));
        }
        let answer = self.get(self.endpoint("/api/traces", &query)).await?;
        if answer.status != 200 {
            return Err(answer.status_error());
        }
        let traces = ui_json::traces(&answer.json()?)
            .map_err(|reason| ExplainError::malformed(&answer.url, reason))?;
        Ok((traces, V1_NAME))
    }
}

/// Spans of many traces (a v3 search answers them in one list) into traces, in the order each
/// trace first appears.
fn group(spans: Vec<super::model::Span>) -> Vec<Trace> {
    let mut traces: Vec<Trace> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for span in spans {
        let at = *index.entry(span.trace_id.clone()).or_insert_with(|| {
            traces.push(Trace {
                trace_id: span.trace_id.clone(),
                spans: Vec::new(),
            });
            traces.len() - 1
        });
        traces[at].spans.push(span);
    }
    traces
}

fn micros_since_epoch(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// `time` as RFC 3339 in UTC with microseconds (`2025-11-13T16:44:30.123456Z`), what the v3
/// search parameters take. By hand: one date formatter does not justify a date crate.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 into a proleptic Gregorian (year, month, day): Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is in 1..=31 and month in 1..=12 by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_763_052_270_123_456);
        assert_eq!(rfc3339(t), "2025-11-13T16:44:30.123456Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn endpoints_keep_a_path_prefix_and_encode_parameters() {
        let jaeger = Jaeger::new(
            Url::parse("http://127.0.0.1:16686/jaeger/").expect("a URL"),
            Api::Auto,
            DEFAULT_TIMEOUT,
        )
        .expect("a client");
        assert_eq!(
            jaeger
                .endpoint(
                    "/api/traces",
                    &[("operation", "holdup.v1.Lab/Fast x".into())]
                )
                .as_str(),
            "http://127.0.0.1:16686/jaeger/api/traces?operation=holdup.v1.Lab%2FFast+x"
        );
        assert_eq!(jaeger.url(), "http://127.0.0.1:16686/jaeger");
    }
}
