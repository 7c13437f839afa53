//! The `holdup.v1.Lab` service: one file per cause of delay, and here the part they share —
//! validating a request, running its handler on the lab runtime under a monitor of its own,
//! honouring the caller's deadline, and attaching the delay split to the reply.

pub mod backend;
pub mod cpu;
pub mod fast;
pub mod rpc;
pub mod sleep;
pub mod support;
pub mod upstream;

use std::{future::Future, sync::Arc, time::Instant};

use tokio::{runtime, task::JoinHandle};
use tokio_metrics::TaskMonitor;
use tonic::{Code, Request, Response, Status, metadata::MetadataValue};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use rpc::Rpc;

use crate::{
    config::Limits,
    proto::{
        self,
        lab_server::{self, SERVICE_NAME},
    },
    runtime::spawn_named,
    telemetry::{
        delay_metrics::{SplitLabels, VerdictLabels},
        diagnostics::{Causes, QueueClock, Split, Timed},
        otel,
        watchdog::{self, LongPollSink},
    },
};
use support::{
    admission, compute_pool, deadline,
    error::LabError,
    metrics::{LabMetrics, RpcMetrics},
};

/// What every lab handler shares.
#[derive(Debug)]
pub struct LabState {
    /// Where handlers run (see `runtime.rs`).
    pub runtime: runtime::Handle,
    pub limits: Limits,
    pub backend: backend::Backend,
    pub compute: Arc<compute_pool::ComputePool>,
    pub upstream: upstream::UpstreamClient,
    pub metrics: LabMetrics,
    pub admission: admission::Admission,
}

impl LabState {
    /// Mirrors live state (pool, lab runtime) into the gauges before a scrape.
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
    causes: Causes,
    deadline: Option<Instant>,
    /// The server span (OpenTelemetry RPC conventions), continuing the caller's trace.
    span: tracing::Span,
}

impl Call {
    fn new<T>(rpc: Rpc, mode: &'static str, causes: Causes, request: &Request<T>) -> Self {
        let deadline =
            deadline::grpc_timeout(request.metadata()).map(|timeout| Instant::now() + timeout);
        let span = tracing::info_span!(
            target: "holdup::rpc",
            "rpc",
            otel.name = format!("{SERVICE_NAME}/{rpc}"),
            otel.kind = "server",
            otel.status_code = Empty,
            otel.status_message = Empty,
            rpc.system = "grpc",
            rpc.service = SERVICE_NAME,
            rpc.method = rpc.name(),
            rpc.grpc.status_code = Empty,
            holdup.mode = mode,
            holdup.total_us = Empty,
            holdup.busy_us = Empty,
            holdup.scheduled_us = Empty,
            holdup.idle_us = Empty,
            holdup.queue_us = Empty,
            holdup.polls = Empty,
            holdup.max_poll_us = Empty,
            holdup.verdict = Empty,
        );
        // Only fails if the span has already started, which it cannot have.
        let _ = span.set_parent(otel::extract(request.metadata()));
        Self {
            rpc,
            mode,
            causes,
            deadline,
            span,
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

    /// Runs `handler` as a task of its own on the lab runtime, measures it, and reports the
    /// result on the reply, the span and the metrics.
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
        let metrics = &self.state.metrics.rpc;
        metrics.started(call.rpc);
        let trace_id = otel::trace_id(&call.span.context());
        watchdog::attach(
            &call.span,
            LongPollSink {
                counter: self.state.metrics.delay.long_polls.clone(),
                rpc: call.rpc.name(),
            },
        );
        let mut unfinished = Unfinished {
            metrics,
            rpc: call.rpc,
            finished: false,
        };
        let outcome = self.execute(&call, started, handler).await;
        unfinished.finished = true;
        let elapsed = started.elapsed();
        let code = match &outcome {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        metrics.handled(call.rpc, code);
        metrics.observe_handling(call.rpc, elapsed.as_secs_f64(), &trace_id);
        call.span.record("rpc.grpc.status_code", code as i32);
        if let Err(status) = &outcome {
            if status.code() == Code::DeadlineExceeded || status.code() == Code::Cancelled {
                metrics.work_cancelled(call.rpc);
            }
            call.span.record("otel.status_code", "ERROR");
            call.span.record("otel.status_message", status.message());
        }
        let (mut reply, split) = outcome?;
        self.report_split(&call, &split);
        reply.set_diagnostics(split.to_proto(call.causes, trace_id.clone()));
        let mut response = Response::new(reply);
        if let Ok(value) = MetadataValue::try_from(trace_id.as_str())
            && !trace_id.is_empty()
        {
            response.metadata_mut().insert("x-trace-id", value);
        }
        Ok(response)
    }

    /// Spawns the handler under its monitor and waits for it, within the caller's deadline.
    async fn execute<R, F>(
        &self,
        call: &Call,
        started: Instant,
        handler: impl FnOnce(QueueClock) -> F,
    ) -> Result<(R, Split), Status>
    where
        F: Future<Output = Result<R, LabError>> + Send + 'static,
        R: Send + 'static,
    {
        let admitted = self.state.admission.admit(call.rpc).map_err(|e| {
            log_failure(call.rpc, &e);
            Status::from(e)
        })?;
        let queue = QueueClock::default();
        let monitor = TaskMonitor::new();
        let handler = handler(queue.clone());
        let handler = async move {
            let _slots = admitted;
            handler.await
        }
        .instrument(call.span.clone());
        let task = TaskMonitor::instrument(&monitor, Timed::new(handler));
        let name = if call.mode.is_empty() {
            call.rpc.name().to_owned()
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
                tracing::error!(rpc = call.rpc.name(), "handler panicked");
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
        let reply = result.map_err(|e| {
            log_failure(call.rpc, &e);
            Status::from(e)
        })?;
        Ok((reply, split))
    }

    /// Refuses a request before any work is scheduled; it still counts as handled.
    fn refuse(&self, rpc: Rpc, error: LabError) -> Status {
        log_failure(rpc, &error);
        let status = Status::from(error);
        self.state.metrics.rpc.started(rpc);
        self.state.metrics.rpc.handled(rpc, status.code());
        status
    }

    fn report_split(&self, call: &Call, split: &Split) {
        let metrics = &self.state.metrics.delay;
        let verdict = split.verdict(call.causes);
        for (component, time) in [
            ("busy", split.busy),
            ("scheduled", split.scheduled),
            ("idle", split.idle),
            ("queue", split.queue),
        ] {
            metrics
                .split
                .get_or_create(&SplitLabels {
                    grpc_method: call.rpc.name(),
                    component,
                })
                .observe(time.as_secs_f64());
        }
        metrics
            .verdicts
            .get_or_create(&VerdictLabels {
                grpc_method: call.rpc.name(),
                verdict,
            })
            .inc();
        let us = crate::telemetry::diagnostics::micros;
        let span = &call.span;
        span.record("holdup.total_us", us(split.total));
        span.record("holdup.busy_us", us(split.busy));
        span.record("holdup.scheduled_us", us(split.scheduled));
        span.record("holdup.idle_us", us(split.idle));
        span.record("holdup.queue_us", us(split.queue));
        span.record("holdup.polls", split.polls);
        span.record("holdup.max_poll_us", us(split.max_poll));
        span.record("holdup.verdict", verdict);
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
        let call = Call::new(Rpc::Fast, "", Causes::CPU, &request);
        self.run(call, |_| async move { Ok(fast::reply(message)) })
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
        let call = Call::new(
            Rpc::SlowBackend,
            plan.query.as_str_name(),
            Causes::waiting_on("backend"),
            &request,
        );
        plan.deadline = call.deadline;
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
            .map_err(|e| self.refuse(Rpc::CpuBound, e))?;
        let call = Call::new(Rpc::CpuBound, plan.mode_name(), plan.causes(), &request);
        let compute = Arc::clone(&self.state.compute);
        self.run(call, |queue| plan.run(compute, queue)).await
    }

    async fn sleep(
        &self,
        request: Request<proto::SleepRequest>,
    ) -> Result<Response<proto::SleepReply>, Status> {
        let plan = sleep::SleepPlan::new(request.get_ref(), &self.state.limits)
            .map_err(|e| self.refuse(Rpc::Sleep, e))?;
        let call = Call::new(Rpc::Sleep, plan.mode.as_str_name(), plan.causes(), &request);
        self.run(call, |_| plan.run()).await
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
        let call = Call::new(
            Rpc::UpstreamCall,
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
