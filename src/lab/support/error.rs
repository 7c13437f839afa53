//! What can go wrong inside a lab RPC, and the gRPC status each failure becomes.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A request field outside its documented range; the message names field and range.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error(
        "database pool exhausted: no connection free within {timeout_ms} ms (pool size {pool_size}); \
         fewer concurrent SlowBackend calls or a larger --db-pool-size"
    )]
    PoolTimeout { timeout_ms: u128, pool_size: u32 },
    #[error("database unavailable: {0}")]
    Database(#[source] sqlx::Error),
    #[error(
        "compute pool full: {queued} jobs already wait for {threads} threads (--compute-queue); retry later"
    )]
    ComputeQueueFull { queued: usize, threads: usize },
    #[error("too many {what} in flight (limit {limit}, {flag}); retry later")]
    Overloaded {
        what: String,
        limit: usize,
        flag: &'static str,
    },
    /// CPU work asked for in rounds that ran past the server's CPU cap.
    #[error(
        "iterations: {asked} rounds ran past --max-cpu-ms ({cap_ms} ms) and stopped after {ran}; \
         ask for fewer iterations, or for work_ms"
    )]
    CpuCapReached { asked: u64, ran: u64, cap_ms: u32 },
    #[error("upstream failed after {attempts} attempt(s): {log}")]
    UpstreamFailed { attempts: u32, log: String },
    #[error("deadline exceeded {during}")]
    DeadlineExceeded { during: String },
    #[error("server is shutting down")]
    ShuttingDown,
    /// A mode this server refuses by configuration (`--refuse-blocking-modes`).
    #[error(
        "mode {mode} is refused by this server (--refuse-blocking-modes): it blocks a lab worker; use {instead}"
    )]
    ModeRefused { mode: String, instead: &'static str },
    #[error("internal error: {0}")]
    Internal(String),
}

impl LabError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::PoolTimeout { .. } | Self::Database(_) | Self::UpstreamFailed { .. } => {
                Code::Unavailable
            }
            Self::ShuttingDown => Code::Unavailable,
            Self::ComputeQueueFull { .. }
            | Self::Overloaded { .. }
            | Self::CpuCapReached { .. } => Code::ResourceExhausted,
            Self::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Self::ModeRefused { .. } => Code::FailedPrecondition,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<sqlx::Error> for LabError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(err)
    }
}

impl From<LabError> for Status {
    fn from(err: LabError) -> Self {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Status::new(err.code(), message)
    }
}
