//! `UpstreamCall`: a slow or failing HTTP upstream, called the way it should be — one shared
//! pooled client, a per-attempt timeout, bounded retries with jittered backoff that never
//! outlive the caller's deadline — or, on request, with a new client per call (the
//! anti-pattern: a new connection, and its handshake, every time).

use std::time::{Duration, Instant};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::support::{error::LabError, retry, validate};
use crate::{
    config::Limits,
    lab::micros,
    proto::{UpstreamAttempt, UpstreamCallReply, UpstreamCallRequest},
    simulator::{MAX_LATENCY_MS, WorkParams, WorkReply},
    telemetry::{
        metrics::{LatencyHistogram, latency_histogram, register_fields},
        otel,
    },
};

/// How one HTTP attempt to the upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// A 2xx answer with a body the client could read.
    Ok,
    /// Any other HTTP answer.
    HttpError,
    /// The per-attempt timeout (or the caller's deadline) passed first.
    Timeout,
    /// No connection could be made.
    ConnectError,
    /// The connection failed during the exchange.
    TransportError,
}

impl AttemptOutcome {
    /// The word the reply's `attempt_log`, the span and the `outcome` label carry.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::HttpError => "http-error",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect-error",
            Self::TransportError => "transport-error",
        }
    }
}

impl EncodeLabelValue for AttemptOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: AttemptOutcome,
}

/// The attempts in Prometheus: `holdup_upstream_attempts_total` and
/// `holdup_upstream_attempt_duration_seconds`, by outcome.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    attempts: Family<OutcomeLabels, Counter>,
    attempt_duration: Family<OutcomeLabels, Histogram, LatencyHistogram>,
}

impl UpstreamMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(latency_histogram),
        };
        register_fields!(registry.sub_registry_with_prefix("holdup_upstream"), metrics, {
            attempts: "HTTP attempts to the upstream, by outcome \
                       (ok, http-error, timeout, connect-error, transport-error)",
            attempt_duration [Seconds]: "Duration of each upstream attempt, by outcome",
        });
        metrics
    }

    fn record(&self, outcome: AttemptOutcome, duration: Duration) {
        let labels = OutcomeLabels { outcome };
        self.attempts.get_or_create(&labels).inc();
        self.attempt_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }
}

/// Per-attempt timeout when the request sets none.
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u32 = 1_000;
/// Retries when the request sets none.
pub const DEFAULT_RETRIES: u32 = 2;
/// Longest per-attempt timeout a request may set.
pub const MAX_ATTEMPT_TIMEOUT_MS: u32 = 60_000;

#[derive(Debug, Clone)]
pub struct UpstreamClient {
    base: String,
    shared: reqwest::Client,
    metrics: UpstreamMetrics,
}

impl UpstreamClient {
    /// # Errors
    /// The reqwest error if the client cannot be built.
    pub fn new(base: String, metrics: UpstreamMetrics) -> Result<Self, reqwest::Error> {
        Ok(Self {
            base,
            shared: Self::builder().build()?,
            metrics,
        })
    }

    fn builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder().tcp_nodelay(true)
    }

    /// Runs the attempts of `plan`, stopping at `deadline`.
    ///
    /// # Errors
    /// UNAVAILABLE when every attempt failed, DEADLINE_EXCEEDED when the deadline left no
    /// room for another attempt.
    pub async fn call(
        &self,
        plan: UpstreamPlan,
        deadline: Option<Instant>,
    ) -> Result<UpstreamCallReply, LabError> {
        let client = if plan.new_client {
            // THE ANTI-PATTERN, on purpose: a fresh client has an empty connection pool.
            Self::builder()
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| LabError::Internal(format!("building an HTTP client: {e}")))?
        } else {
            self.shared.clone()
        };
        let url = format!("{}/work?{}", self.base, plan.query_string());
        let mut log: Vec<UpstreamAttempt> = Vec::new();
        for number in 1..=plan.max_retries + 1 {
            let backoff = retry::backoff(number - 1, &mut rand::rng());
            let mut timeout = plan.attempt_timeout;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < backoff + retry::MIN_ATTEMPT {
                    return Err(LabError::DeadlineExceeded {
                        during: format!(
                            "before upstream attempt {number}: {} ms left{}",
                            left.as_millis(),
                            summary(&log)
                        ),
                    });
                }
                timeout = timeout.min(left - backoff);
            }
            // A stage of kind `timer`: the diagnosis engine counts the backoff as `timer`.
            tokio::time::sleep(backoff)
                .instrument(tracing::info_span!(
                    target: "holdup::upstream",
                    "upstream.backoff",
                    holdup.stage = "timer"
                ))
                .await;
            let attempt = attempt(&client, &url, timeout, number, backoff).await;
            self.metrics.record(attempt.outcome, attempt.duration);
            let cut_by_deadline =
                attempt.outcome == AttemptOutcome::Timeout && timeout < plan.attempt_timeout;
            let status = attempt.http_status;
            log.push(attempt.log(number, backoff));
            if let Some(reply) = attempt.reply {
                return Ok(UpstreamCallReply {
                    attempts: number,
                    upstream_status: status,
                    attempt_log: log,
                    client: if plan.new_client { "new" } else { "shared" }.to_owned(),
                    upstream_served_us: reply.served_us,
                    diagnostics: None,
                });
            }
            if cut_by_deadline {
                return Err(LabError::DeadlineExceeded {
                    during: format!("during upstream attempt {number}{}", summary(&log)),
                });
            }
            if (400..500).contains(&status) && status != 429 {
                return Err(LabError::Internal(format!(
                    "upstream refused the request (HTTP {status}){}",
                    summary(&log)
                )));
            }
        }
        Err(LabError::UpstreamFailed {
            attempts: plan.max_retries + 1,
            log: summary(&log).trim_start_matches("; ").to_owned(),
        })
    }
}

/// `"; attempt 1: timeout after 1000 ms; attempt 2: HTTP 503 …"`, or empty.
fn summary(log: &[UpstreamAttempt]) -> String {
    log.iter()
        .map(|a| {
            let what = if a.outcome == AttemptOutcome::HttpError.name() {
                format!("HTTP {}", a.http_status)
            } else {
                a.outcome.clone()
            };
            format!(
                "; attempt {}: {what} after {} ms",
                a.number,
                a.duration_us / 1_000
            )
        })
        .collect()
}

/// Largest upstream reply read. The simulator's is under a hundred bytes; an `--upstream-url`
/// that answers with more is not the simulator, and its body is not read into memory whole
/// (an attempt may last up to a minute, time enough for gigabytes on loopback).
pub const MAX_UPSTREAM_REPLY_BYTES: usize = 64 * 1024;

/// The reply's body as a [`WorkReply`]: `Ok(None)` when it is not one or is larger than
/// [`MAX_UPSTREAM_REPLY_BYTES`] (an HTTP error of the attempt), `Err` when the connection fails.
async fn read_reply(mut response: reqwest::Response) -> Result<Option<WorkReply>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_UPSTREAM_REPLY_BYTES as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_UPSTREAM_REPLY_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&body).ok())
}

struct Attempted {
    outcome: AttemptOutcome,
    /// 0 when no HTTP answer came.
    http_status: u32,
    duration: Duration,
    reply: Option<WorkReply>,
}

impl Attempted {
    /// The attempt as the reply's `attempt_log` shows it.
    fn log(&self, number: u32, backoff: Duration) -> UpstreamAttempt {
        UpstreamAttempt {
            number,
            duration_us: micros(self.duration),
            http_status: self.http_status,
            outcome: self.outcome.name().to_owned(),
            backoff_us: micros(backoff),
        }
    }
}

async fn attempt(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    number: u32,
    backoff: Duration,
) -> Attempted {
    let span = tracing::info_span!(
        target: "holdup::upstream",
        "upstream.attempt",
        otel.name = "GET /work",
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = "GET",
        url.full = url,
        http.response.status_code = Empty,
        // Signed: tracing-opentelemetry exports unsigned integers as strings, and OTel's
        // conventions (and typed trace queries) want integers.
        holdup.attempt = i64::from(number),
        holdup.backoff_us = i64::try_from(micros(backoff)).unwrap_or(i64::MAX),
        holdup.timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
        holdup.outcome = Empty,
    );
    // The upstream continues this attempt's trace: its span becomes a child of this one.
    let mut headers = http::HeaderMap::new();
    otel::inject(&span.context(), &mut headers);
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let response = client.get(url).headers(headers).send().await?;
        let status = response.status().as_u16();
        let body = read_reply(response).await?;
        Ok::<_, reqwest::Error>((status, body))
    })
    .instrument(span.clone())
    .await;
    let duration = started.elapsed();
    let (http_status, outcome, reply) = match result {
        Err(_elapsed) => (0, AttemptOutcome::Timeout, None),
        Ok(Err(e)) if e.is_connect() => (0, AttemptOutcome::ConnectError, None),
        Ok(Err(_)) => (0, AttemptOutcome::TransportError, None),
        Ok(Ok((status, Some(body)))) if (200..300).contains(&status) => {
            (u32::from(status), AttemptOutcome::Ok, Some(body))
        }
        Ok(Ok((status, _))) => (u32::from(status), AttemptOutcome::HttpError, None),
    };
    span.record("holdup.outcome", outcome.name());
    if http_status != 0 {
        span.record("http.response.status_code", i64::from(http_status));
    }
    if outcome != AttemptOutcome::Ok {
        span.record("otel.status_code", "ERROR");
    }
    Attempted {
        outcome,
        http_status,
        duration,
        reply,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamPlan {
    pub params: WorkParams,
    pub attempt_timeout: Duration,
    pub max_retries: u32,
    pub new_client: bool,
}

impl UpstreamPlan {
    /// # Errors
    /// INVALID_ARGUMENT for any field out of its range.
    pub fn new(request: &UpstreamCallRequest, limits: &Limits) -> Result<Self, LabError> {
        let ms = |field, value: Option<u32>| {
            value
                .map(|v| validate::in_range(field, v, 0, MAX_LATENCY_MS, None))
                .transpose()
        };
        let rate = |field, value: Option<f64>| value.map(|v| validate::rate(field, v)).transpose();
        let params = WorkParams {
            latency_ms: ms("latency_ms", request.latency_ms)?,
            jitter_ms: ms("jitter_ms", request.jitter_ms)?,
            error_rate: rate("error_rate", request.error_rate)?,
            stall_rate: rate("stall_rate", request.stall_rate)?,
        };
        let attempt_timeout = validate::in_range(
            "attempt_timeout_ms",
            request
                .attempt_timeout_ms
                .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT_MS),
            1,
            MAX_ATTEMPT_TIMEOUT_MS,
            None,
        )?;
        let max_retries = validate::in_range(
            "max_retries",
            request.max_retries.unwrap_or(DEFAULT_RETRIES),
            0,
            limits.max_retries,
            Some("--max-retries"),
        )?;
        Ok(Self {
            params,
            attempt_timeout: Duration::from_millis(u64::from(attempt_timeout)),
            max_retries,
            new_client: request.new_client,
        })
    }

    fn query_string(&self) -> String {
        let p = &self.params;
        [
            p.latency_ms.map(|v| format!("latency_ms={v}")),
            p.jitter_ms.map(|v| format!("jitter_ms={v}")),
            p.error_rate.map(|v| format!("error_rate={v}")),
            p.stall_rate.map(|v| format!("stall_rate={v}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("&")
    }
}
