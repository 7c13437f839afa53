//! The call a load run repeats: one Lab RPC with its parameters, sent under a deadline, and
//! what came back of it (the reply's `Diagnostics`, or the gRPC status code).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tonic::{Code, Request, transport::Channel};

use crate::{
    lab::Rpc,
    proto::{
        CpuBoundRequest, CpuMode, Diagnostics, FastRequest, Query, SleepMode, SleepRequest,
        SlowBackendRequest, UpstreamCallRequest, lab_client::LabClient,
    },
};

/// Extra time the client waits past the gRPC deadline it sent, so that the server's own
/// DEADLINE_EXCEEDED (with its message) normally arrives before the client gives up.
pub const CLIENT_SLACK: Duration = Duration::from_millis(250);

/// One Lab RPC and its request, exactly as it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcSpec {
    Fast(FastRequest),
    Sleep(SleepRequest),
    Cpu(CpuBoundRequest),
    Backend(SlowBackendRequest),
    Upstream(UpstreamCallRequest),
}

/// What one call ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An OK reply and the delay split it carried (`None` if a server sent none).
    Ok(Option<Diagnostics>),
    /// A gRPC error status; a client-side timeout counts as DEADLINE_EXCEEDED.
    Failed(Code),
}

/// A call factory: given a sequence number, the future of one call. Boxed so that the
/// schedules can be driven by a fake in unit tests.
pub type Caller = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

impl RpcSpec {
    /// The `Fast` canary, the probe every experiment runs beside its pressure.
    pub fn fast() -> Self {
        Self::Fast(FastRequest {
            message: "probe".into(),
        })
    }

    pub fn sleep(mode: SleepMode, duration_ms: u32) -> Self {
        Self::Sleep(SleepRequest {
            mode: mode.into(),
            duration_ms,
        })
    }

    pub fn cpu(mode: CpuMode, work_ms: u32) -> Self {
        Self::Cpu(CpuBoundRequest {
            mode: mode.into(),
            work_ms,
            iterations: 0,
        })
    }

    pub fn backend(hold_ms: u32, query: Query, key: u32) -> Self {
        Self::Backend(SlowBackendRequest {
            hold_ms,
            query: query.into(),
            key,
        })
    }

    /// The RPC this call is.
    pub fn rpc(&self) -> Rpc {
        match self {
            Self::Fast(_) => Rpc::Fast,
            Self::Sleep(_) => Rpc::Sleep,
            Self::Cpu(_) => Rpc::CpuBound,
            Self::Backend(_) => Rpc::SlowBackend,
            Self::Upstream(_) => Rpc::UpstreamCall,
        }
    }

    /// A short human description, e.g. `CpuBound INLINE work_ms=50`.
    pub fn describe(&self) -> String {
        let rpc = self.rpc();
        match self {
            Self::Fast(_) => rpc.name().to_owned(),
            Self::Sleep(r) => format!(
                "{rpc} {} duration_ms={}",
                r.mode().as_str_name(),
                r.duration_ms
            ),
            Self::Cpu(r) if r.iterations > 0 => {
                format!(
                    "{rpc} {} iterations={}",
                    r.mode().as_str_name(),
                    r.iterations
                )
            }
            Self::Cpu(r) => format!("{rpc} {} work_ms={}", r.mode().as_str_name(), r.work_ms),
            Self::Backend(r) => format!("{rpc} {} hold_ms={}", r.query().as_str_name(), r.hold_ms),
            Self::Upstream(r) => describe_upstream(r),
        }
    }

    /// Sends the call once with `timeout` as its gRPC deadline; with `timeline`, asks for the
    /// reply's whole timeline.
    pub async fn invoke(&self, channel: Channel, timeout: Duration, timeline: bool) -> Outcome {
        let mut client = LabClient::new(channel);
        let call = async {
            let diagnostics = match self {
                Self::Fast(r) => {
                    client
                        .fast(with_deadline(r, timeout, timeline))
                        .await?
                        .into_inner()
                        .diagnostics
                }
                Self::Sleep(r) => {
                    client
                        .sleep(with_deadline(r, timeout, timeline))
                        .await?
                        .into_inner()
                        .diagnostics
                }
                Self::Cpu(r) => {
                    client
                        .cpu_bound(with_deadline(r, timeout, timeline))
                        .await?
                        .into_inner()
                        .diagnostics
                }
                Self::Backend(r) => {
                    client
                        .slow_backend(with_deadline(r, timeout, timeline))
                        .await?
                        .into_inner()
                        .diagnostics
                }
                Self::Upstream(r) => {
                    client
                        .upstream_call(with_deadline(r, timeout, timeline))
                        .await?
                        .into_inner()
                        .diagnostics
                }
            };
            Ok::<_, tonic::Status>(diagnostics)
        };
        match tokio::time::timeout(timeout + CLIENT_SLACK, call).await {
            Ok(Ok(diagnostics)) => Outcome::Ok(diagnostics),
            Ok(Err(status)) => Outcome::Failed(status.code()),
            Err(_elapsed) => Outcome::Failed(Code::DeadlineExceeded),
        }
    }

    /// A [`Caller`] that sends this call over `channels`, round robin.
    pub fn caller(&self, channels: Vec<Channel>, timeout: Duration, timeline: bool) -> Caller {
        let spec = Arc::new(self.clone());
        let channels = Arc::new(channels);
        Arc::new(move |n| {
            let spec = Arc::clone(&spec);
            let channels = Arc::clone(&channels);
            Box::pin(async move {
                let Some(channel) = pick(&channels, n) else {
                    return Outcome::Failed(Code::Unavailable);
                };
                spec.invoke(channel, timeout, timeline).await
            })
        })
    }
}

fn pick(channels: &[Channel], n: u64) -> Option<Channel> {
    let len = u64::try_from(channels.len()).ok().filter(|&l| l > 0)?;
    let index = usize::try_from(n % len).ok()?;
    channels.get(index).cloned()
}

fn with_deadline<T: Clone>(message: &T, timeout: Duration, timeline: bool) -> Request<T> {
    let mut request = Request::new(message.clone());
    request.set_timeout(timeout);
    if timeline {
        request.metadata_mut().insert(
            crate::diagnose::TIMELINE_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
    }
    request
}

fn describe_upstream(r: &UpstreamCallRequest) -> String {
    let mut parts = vec![format!(
        "{} {}",
        Rpc::UpstreamCall,
        if r.new_client {
            "new-client"
        } else {
            "shared-client"
        }
    )];
    let fields: [(&str, Option<String>); 6] = [
        ("latency_ms", r.latency_ms.map(|v| v.to_string())),
        ("jitter_ms", r.jitter_ms.map(|v| v.to_string())),
        ("error_rate", r.error_rate.map(|v| v.to_string())),
        ("stall_rate", r.stall_rate.map(|v| v.to_string())),
        (
            "attempt_timeout_ms",
            r.attempt_timeout_ms.map(|v| v.to_string()),
        ),
        ("max_retries", r.max_retries.map(|v| v.to_string())),
    ];
    parts.extend(
        fields
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}={v}"))),
    );
    parts.join(" ")
}

/// The status code as gRPC spells it (`DEADLINE_EXCEEDED`), for reports.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_rpc_mode_and_parameters() {
        assert_eq!(RpcSpec::fast().describe(), "Fast");
        assert_eq!(
            RpcSpec::cpu(CpuMode::Inline, 50).describe(),
            "CpuBound INLINE work_ms=50"
        );
        assert_eq!(
            RpcSpec::sleep(SleepMode::Blocking, 100).describe(),
            "Sleep BLOCKING duration_ms=100"
        );
        let upstream = RpcSpec::Upstream(UpstreamCallRequest {
            latency_ms: Some(20),
            attempt_timeout_ms: Some(150),
            ..Default::default()
        });
        assert_eq!(
            upstream.describe(),
            "UpstreamCall shared-client latency_ms=20 attempt_timeout_ms=150"
        );
    }

    #[test]
    fn codes_are_spelled_as_grpc_spells_them() {
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }
}
