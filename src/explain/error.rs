//! Why an explanation could not be made. Every variant names the Jaeger URL it asked (and the
//! trace id, where there is one), so the message alone says what to check.

/// An error of `holdup explain`.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// No HTTP answer at all: nothing listens there, a timeout, a refused TLS handshake.
    #[error("cannot reach Jaeger at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Jaeger answered, but has no trace with this id.
    #[error("trace {trace_id} not found in Jaeger at {url}")]
    TraceNotFound { trace_id: String, url: String },
    /// A search that found no trace to explain.
    #[error("no trace of {what} in Jaeger at {url} since {since}")]
    NoTraces {
        what: String,
        since: String,
        url: String,
    },
    /// An HTTP status other than success or "not found".
    #[error("Jaeger at {url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// An answer that is not what Jaeger's query API sends.
    #[error("Jaeger at {url} sent a response holdup cannot read: {reason}")]
    Malformed { url: String, reason: String },
    /// An answer over the size limit, cut off rather than held in memory.
    #[error("Jaeger at {url} sent more than {limit} bytes; narrow the search")]
    TooLarge { url: String, limit: usize },
}

impl ExplainError {
    pub(crate) fn malformed(url: &str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            url: url.to_owned(),
            reason: reason.into(),
        }
    }
}
