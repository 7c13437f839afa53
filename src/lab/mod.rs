//! The `holdup.v1.Lab` service: one file per cause of delay, and here the part they share —
//! validating a request, running its handler on the lab runtime under a monitor of its own,
//! honouring the caller's deadline, and attaching the delay split to the reply.

pub mod backend;
pub mod compute_pool;
pub mod cpu;
pub mod deadline;
pub mod error;
pub mod fast;
pub mod retry;
pub mod sleep;
pub mod upstream;
pub mod validate;

use std::{future::Future, sync::Arc, time::Instant};

use tokio::{runtime, task::JoinHandle};
use tokio_metrics::TaskMonitor;
use tonic::{Request, Response, Status};

use crate::{
    config::Limits,
    proto::{self, lab_server},
    runtime::spawn_named,
    telemetry::diagnostics::{Causes, QueueClock, Split, Timed},
};
use error::LabError;

/// What every lab handler shares.
#[derive(Debug)]
pub struct LabState {
    /// Where handlers run (see `runtime.rs`).
    pub runtime: runtime::Handle,
    pub limits: Limits,
    pub backend: backend::Backend,
    pub compute: Arc<compute_pool::ComputePool>,
    pub upstream: upstream::UpstreamClient,
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct Lab {
    state: Arc<LabState>,
}

/// A reply that carries `Diagnostics`.
pub trait WithDiagnostics {
    fn set_diagnostics(&mut self, diagnostics: proto::Diagnostics);
}

macro_rules! with_diagnostics {
    ($($reply:ty),*) => {$(
        impl WithDiagnostics for $reply {
            fn set_diagnostics(&mut self, diagnostics: proto::Diagnostics) {
                self.diagnostics = Some(diagnostics);
            }
        }
    )*};
}

with_diagnostics!(
    proto::FastReply,
    proto::SlowBackendReply,
    proto::CpuBoundReply,
    proto::SleepReply,
    proto::UpstreamCallReply
);

/// One validated call, ready to run.
struct Call {
    rpc: &'static str,
    mode: &'static str,
    causes: Causes,
    deadline: Option<Instant>,
}

impl Call {
    fn new<T>(rpc: &'static str, mode: &'static str, causes: Causes, request: &Request<T>) -> Self {
        let deadline =
            deadline::grpc_timeout(request.metadata()).map(|timeout| Instant::now() + timeout);
        Self {
            rpc,
            mode,
            causes,
            deadline,
        }
    }
}

/// Aborts the handler task when the transport side stops waiting for it (the client went
/// away, or the deadline passed), so that its next await is its last.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Lab {
    pub fn new(state: LabState) -> Self {
        Self {
            state: Arc::new(state),
        }
    }

    pub fn state(&self) -> &Arc<LabState> {
        &self.state
    }

    /// Runs `handler` as a task of its own on the lab runtime and measures it.
    async fn run<R, F>(
        &self,
        call: Call,
        handler: impl FnOnce(QueueClock) -> F,
    ) -> Result<Response<R>, Status>
    where
        F: Future<Output = Result<R, LabError>> + Send + 'static,
        R: WithDiagnostics + Send + 'static,
    {
        let started = Instant::now();
        let queue = QueueClock::default();
        let monitor = TaskMonitor::new();
        let task = monitor.instrument(Timed::new(handler(queue.clone())));
        let name = if call.mode.is_empty() {
            call.rpc.to_owned()
        } else {
            format!("{} {}", call.rpc, call.mode)
        };
        let join = spawn_named(&name, &self.state.runtime, task)
            .map_err(|_| Status::from(LabError::ShuttingDown))?;
        let mut join = AbortOnDrop(join);
        let joined = match call.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), &mut join.0)
                .await
                .map_err(|_| {
                    Status::from(LabError::DeadlineExceeded {
                        during: format!("in {name} after {} ms", started.elapsed().as_millis()),
                    })
                })?,
            None => (&mut join.0).await,
        };
        let (result, polls) = joined.map_err(|e| {
            if e.is_panic() {
                tracing::error!(rpc = call.rpc, "handler panicked");
                Status::internal("handler panicked")
            } else {
                Status::from(LabError::ShuttingDown)
            }
        })?;
        let split = Split::from_metrics(
            started.elapsed(),
            &monitor.cumulative(),
            polls,
            queue.total(),
        );
        let mut reply = result.map_err(|e| {
            log_failure(call.rpc, &e);
            Status::from(e)
        })?;
        reply.set_diagnostics(split.to_proto(call.causes, String::new()));
        Ok(Response::new(reply))
    }
}

fn log_failure(rpc: &str, error: &LabError) {
    match error {
        LabError::InvalidArgument { .. } => tracing::debug!(rpc, %error, "refused"),
        _ => tracing::warn!(rpc, %error, "failed"),
    }
}

/// Refuses a request before any work is scheduled.
fn refuse(rpc: &str, error: LabError) -> Status {
    log_failure(rpc, &error);
    Status::from(error)
}

#[tonic::async_trait]
impl lab_server::Lab for Lab {
    async fn fast(
        &self,
        request: Request<proto::FastRequest>,
    ) -> Result<Response<proto::FastReply>, Status> {
        let call = Call::new("Fast", "", Causes::CPU, &request);
        let message = fast::plan(request.into_inner()).map_err(|e| refuse("Fast", e))?;
        self.run(call, |_| async move { Ok(fast::reply(message)) })
            .await
    }

    async fn slow_backend(
        &self,
        request: Request<proto::SlowBackendRequest>,
    ) -> Result<Response<proto::SlowBackendReply>, Status> {
        let state = Arc::clone(&self.state);
        let plan =
            backend::BackendPlan::new(request.get_ref(), &state.limits, state.backend.seed_rows())
                .map_err(|e| refuse("SlowBackend", e))?;
        let call = Call::new(
            "SlowBackend",
            plan.query.as_str_name(),
            Causes::waiting_on("backend"),
            &request,
        );
        self.run(
            call,
            |queue| async move { state.backend.run(plan, queue).await },
        )
        .await
    }

    async fn cpu_bound(
        &self,
        request: Request<proto::CpuBoundRequest>,
    ) -> Result<Response<proto::CpuBoundReply>, Status> {
        let plan = cpu::CpuPlan::new(request.get_ref(), &self.state.limits)
            .map_err(|e| refuse("CpuBound", e))?;
        let call = Call::new("CpuBound", plan.mode_name(), plan.causes(), &request);
        let compute = Arc::clone(&self.state.compute);
        self.run(call, |queue| plan.run(compute, queue)).await
    }

    async fn sleep(
        &self,
        request: Request<proto::SleepRequest>,
    ) -> Result<Response<proto::SleepReply>, Status> {
        let plan = sleep::SleepPlan::new(request.get_ref(), &self.state.limits)
            .map_err(|e| refuse("Sleep", e))?;
        let call = Call::new("Sleep", plan.mode.as_str_name(), plan.causes(), &request);
        self.run(call, |_| plan.run()).await
    }

    async fn upstream_call(
        &self,
        request: Request<proto::UpstreamCallRequest>,
    ) -> Result<Response<proto::UpstreamCallReply>, Status> {
        let plan = upstream::UpstreamPlan::new(request.get_ref(), &self.state.limits)
            .map_err(|e| refuse("UpstreamCall", e))?;
        let mode = if plan.new_client {
            "new-client"
        } else {
            "shared-client"
        };
        let call = Call::new(
            "UpstreamCall",
            mode,
            Causes::waiting_on("upstream"),
            &request,
        );
        let deadline = call.deadline;
        let client = self.state.upstream.clone();
        self.run(call, |_| async move { client.call(plan, deadline).await })
            .await
    }
}
