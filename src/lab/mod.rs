//! The `holdup.v1.Lab` service: one file per cause of delay, and here the part they share —
//! validating a request, running its handler as a task of its own on the lab runtime (measured
//! as the request by the diagnosis engine), honouring the caller's deadline, and putting the
//! engine's report in the reply.

pub mod backend;
pub mod cpu;
mod diagnostics;
pub mod fast;
pub mod rpc;
pub mod sleep;
pub mod support;
pub mod upstream;

use std::{future::Future, sync::Arc, time::Instant};

use tokio::{runtime, task::JoinHandle};
use tonic::{Code, Request, Response, Status};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use rpc::Rpc;

use crate::{
    config::Limits,
    diagnose::Diagnosis,
    proto::{self, lab_server},
};
use support::{
    admission, compute_pool, deadline,
    error::LabError,
    metrics::{LabMetrics, RpcMetrics},
};

/// Microseconds of `d`, as replies report durations.
pub(crate) fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What every lab handler shares.
#[derive(Debug)]
pub struct LabState {
    /// The runtime that serves the requests (its metrics are sampled for Prometheus).
    pub runtime: runtime::Handle,
    pub limits: Limits,
    pub backend: backend::Backend,
    pub compute: Arc<compute_pool::ComputePool>,
    pub upstream: upstream::UpstreamClient,
    pub metrics: LabMetrics,
    pub admission: admission::Admission,
}

impl LabState {
    /// Mirrors live state (pool, runtime) into the gauges before a scrape.
    pub fn sample_gauges(&self) {
        self.backend.sample_gauges();
        self.metrics.runtime.sample(&self.runtime);
    }
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
    rpc: Rpc,
    mode: &'static str,
    deadline: Option<Instant>,
    /// The request's diagnosis (and server span), from the diagnosis layer.
    diagnosis: Diagnosis,
}

impl Call {
    /// # Errors
    /// INTERNAL when the server was built without the diagnosis layer, which the Lab needs.
    fn new<T>(rpc: Rpc, mode: &'static str, request: &Request<T>) -> Result<Self, Status> {
        let diagnosis = request
            .extensions()
            .get::<Diagnosis>()
            .cloned()
            .ok_or_else(|| Status::internal("the Lab needs the diagnosis layer"))?;
        // From the request's arrival, not from now: tonic's own timer on the same header
        // started then and would answer CANCELLED if it fired before ours.
        let deadline =
            deadline::grpc_timeout(request.metadata()).map(|timeout| diagnosis.arrived() + timeout);
        if !mode.is_empty() {
            diagnosis.span().set_attribute("holdup.mode", mode);
        }
        Ok(Self {
            rpc,
            mode,
            deadline,
            diagnosis,
        })
    }

    /// The handler task's name: the RPC and its mode, as tokio-console shows it.
    fn label(&self) -> String {
        if self.mode.is_empty() {
            self.rpc.name().to_owned()
        } else {
            format!("{} {}", self.rpc, self.mode)
        }
    }
}

/// Counts a call whose caller went away before it finished (the transport drops the handler
/// future): as cancelled work, and as handled with code `Canceled`.
struct Unfinished<'a> {
    metrics: &'a RpcMetrics,
    rpc: Rpc,
    finished: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        tracing::debug!(rpc = self.rpc.name(), "caller went away; work stopped");
        self.metrics.work_cancelled(self.rpc);
        self.metrics.handled(self.rpc, Code::Cancelled);
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

    /// Runs `handler` (inline, or as a named task of its own when the console is on), measured
    /// as the request by the diagnosis engine, and puts the engine's report in the reply.
    async fn run<R, F>(&self, call: Call, handler: F) -> Result<Response<R>, Status>
    where
        F: Future<Output = Result<R, LabError>> + Send + 'static,
        R: WithDiagnostics + Send + 'static,
    {
        let started = Instant::now();
        let metrics = &self.state.metrics.rpc;
        metrics.started(call.rpc);
        let mut unfinished = Unfinished {
            metrics,
            rpc: call.rpc,
            finished: false,
        };
        let outcome = self.execute(&call, started, handler).await;
        unfinished.finished = true;
        let code = match &outcome {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        metrics.handled(call.rpc, code);
        let trace_id = call.diagnosis.identity().trace_id();
        metrics.observe_handling(call.rpc, started.elapsed().as_secs_f64(), trace_id);
        if let Err(status) = &outcome
            && matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
        {
            metrics.work_cancelled(call.rpc);
        }
        let mut reply = outcome?;
        reply.set_diagnostics(proto::Diagnostics::from(&call.diagnosis.report()));
        Ok(Response::new(reply))
    }

    /// Runs the handler, measured, within the caller's deadline.
    async fn execute<R, F>(&self, call: &Call, started: Instant, handler: F) -> Result<R, Status>
    where
        F: Future<Output = Result<R, LabError>> + Send + 'static,
        R: Send + 'static,
    {
        let admitted = self.state.admission.admit(call.rpc).map_err(|e| {
            log_failure(call.rpc, &e);
            Status::from(e)
        })?;
        // In the request's span: the diagnosis enters it at each poll of the task.
        let handler = async move {
            let _slots = admitted;
            handler.await
        };
        // With tokio-console on, each handler is a task of its own named by its RPC and mode,
        // so that the console shows which one never yields. Else it runs inline in its
        // request's task: no spawn, no hand-over, no wake across tasks.
        if !crate::diagnose::tasks_are_named() {
            let result = match call.deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), handler)
                    .await
                    .map_err(|_| {
                        Status::from(LabError::DeadlineExceeded {
                            during: format!(
                                "in {} after {} ms",
                                call.label(),
                                started.elapsed().as_millis()
                            ),
                        })
                    })?,
                None => handler.await,
            };
            return result.map_err(|e| {
                log_failure(call.rpc, &e);
                Status::from(e)
            });
        }
        // Named only here, where a task needs its name: the inline path never formats one.
        let label = call.label();
        let join = call
            .diagnosis
            .spawn(&label, &self.state.runtime, handler)
            .map_err(|_| Status::from(LabError::ShuttingDown))?;
        let mut join = AbortOnDrop(join);
        let joined = match call.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), &mut join.0)
                .await
                .map_err(|_| {
                    Status::from(LabError::DeadlineExceeded {
                        during: format!("in {label} after {} ms", started.elapsed().as_millis()),
                    })
                })?,
            None => (&mut join.0).await,
        };
        let result = joined.map_err(|e| {
            if e.is_panic() {
                tracing::error!(rpc = call.rpc.name(), "handler panicked");
                Status::internal("handler panicked")
            } else {
                Status::from(LabError::ShuttingDown)
            }
        })?;
        result.map_err(|e| {
            log_failure(call.rpc, &e);
            Status::from(e)
        })
    }

    /// Refuses a request before any work is scheduled; it still counts as handled.
    fn refuse(&self, rpc: Rpc, error: LabError) -> Status {
        log_failure(rpc, &error);
        let status = Status::from(error);
        self.state.metrics.rpc.started(rpc);
        self.state.metrics.rpc.handled(rpc, status.code());
        status
    }
}

fn log_failure(rpc: Rpc, error: &LabError) {
    let rpc = rpc.name();
    match error {
        LabError::InvalidArgument { .. } => tracing::debug!(rpc, %error, "refused"),
        _ => tracing::warn!(rpc, %error, "failed"),
    }
}

#[tonic::async_trait]
impl lab_server::Lab for Lab {
    async fn fast(
        &self,
        request: Request<proto::FastRequest>,
    ) -> Result<Response<proto::FastReply>, Status> {
        let message =
            fast::plan(request.get_ref().clone()).map_err(|e| self.refuse(Rpc::Fast, e))?;
        let call = Call::new(Rpc::Fast, "", &request)?;
        self.run(call, async move { Ok(fast::reply(message)) })
            .await
    }

    async fn slow_backend(
        &self,
        request: Request<proto::SlowBackendRequest>,
    ) -> Result<Response<proto::SlowBackendReply>, Status> {
        let state = Arc::clone(&self.state);
        let mut plan =
            backend::BackendPlan::new(request.get_ref(), &state.limits, state.backend.seed_rows())
                .map_err(|e| self.refuse(Rpc::SlowBackend, e))?;
        let call = Call::new(Rpc::SlowBackend, plan.query.as_str_name(), &request)?;
        plan.deadline = call.deadline;
        self.run(call, async move { state.backend.run(plan).await })
            .await
    }

    async fn cpu_bound(
        &self,
        request: Request<proto::CpuBoundRequest>,
    ) -> Result<Response<proto::CpuBoundReply>, Status> {
        let plan = cpu::CpuPlan::new(request.get_ref(), &self.state.limits)
            .map_err(|e| self.refuse(Rpc::CpuBound, e))?;
        let call = Call::new(Rpc::CpuBound, plan.mode_name(), &request)?;
        let compute = Arc::clone(&self.state.compute);
        self.run(call, plan.run(compute)).await
    }

    async fn sleep(
        &self,
        request: Request<proto::SleepRequest>,
    ) -> Result<Response<proto::SleepReply>, Status> {
        let plan = sleep::SleepPlan::new(request.get_ref(), &self.state.limits)
            .map_err(|e| self.refuse(Rpc::Sleep, e))?;
        let call = Call::new(Rpc::Sleep, plan.mode.as_str_name(), &request)?;
        self.run(call, plan.run()).await
    }

    async fn upstream_call(
        &self,
        request: Request<proto::UpstreamCallRequest>,
    ) -> Result<Response<proto::UpstreamCallReply>, Status> {
        let plan = upstream::UpstreamPlan::new(request.get_ref(), &self.state.limits)
            .map_err(|e| self.refuse(Rpc::UpstreamCall, e))?;
        let mode = if plan.new_client {
            "new-client"
        } else {
            "shared-client"
        };
        let call = Call::new(Rpc::UpstreamCall, mode, &request)?;
        let deadline = call.deadline;
        let client = self.state.upstream.clone();
        self.run(call, async move { client.call(plan, deadline).await })
            .await
    }
}
