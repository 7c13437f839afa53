//! A bare tonic server for the benchmark (`tests/bench/run.sh`): `holdup.v1.Lab` with `Fast`
//! answered inline and every other RPC unimplemented. No lab runtime, no delay split, no
//! telemetry, no limits: what tonic alone costs, so that what holdup's instrumentation adds
//! can be measured against it under the same load.
//!
//! Usage: `cargo run --release --example bare_echo -- [ADDR] [THREADS] [--diagnose] [--otel]
//! [--hand-over] [--arrival] [--when-late]` (default 127.0.0.1:50052, 2 threads). `--arrival` serves with the
//! engine through `holdup_diagnose::arrival::serve` (kernel-stamped arrivals) instead of
//! tonic's server.
//!
//! `--diagnose` adds holdup's diagnosis engine the way its guide (docs/your-service.md) tells a
//! user to: the runtime's poll hooks, the stage layer in the subscriber, and `DiagnoseLayer` on
//! the server, handlers on the same runtime. `--otel` adds an OpenTelemetry layer (trace ids,
//! no exporter) to the subscriber, alone or with `--diagnose`. The benchmark runs each, so the engine's own
//! cost per call is measured against bare tonic, and against tonic with OpenTelemetry.
//!
//! `--hand-over` answers `Fast` the way `holdup serve` runs every handler: as a task of its own
//! on a second runtime of `THREADS` workers, awaited by the transport's task. Nothing else is
//! added, so it measures what that design costs by itself: two wake-ups across threads per
//! call, the floor under any `holdup serve` figure.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use anyhow::Context;
use holdup::diagnose::{DiagnoseLayer, StageFilter, StageLayer, install_hooks};
use holdup::proto::{
    self,
    lab_server::{Lab, LabServer},
};
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

/// Threads of the server's runtime when none are given: as many as `holdup serve` uses for
/// its handlers by default on the two-core machines this is measured on.
const DEFAULT_THREADS: usize = 2;

struct Bare {
    /// The runtime handlers are handed over to (`--hand-over`); `None`: answered inline.
    handlers: Option<tokio::runtime::Handle>,
}

fn fast_only() -> Status {
    Status::unimplemented("bare_echo answers Fast only")
}

#[tonic::async_trait]
impl Lab for Bare {
    async fn fast(
        &self,
        request: Request<proto::FastRequest>,
    ) -> Result<Response<proto::FastReply>, Status> {
        let message = request.into_inner().message;
        let reply = |message| proto::FastReply {
            message,
            diagnostics: None,
        };
        match &self.handlers {
            None => Ok(Response::new(reply(message))),
            Some(handlers) => handlers
                .spawn(async move { reply(message) })
                .await
                .map(Response::new)
                .map_err(|e| Status::internal(format!("handler task failed: {e}"))),
        }
    }

    async fn slow_backend(
        &self,
        _: Request<proto::SlowBackendRequest>,
    ) -> Result<Response<proto::SlowBackendReply>, Status> {
        Err(fast_only())
    }

    async fn cpu_bound(
        &self,
        _: Request<proto::CpuBoundRequest>,
    ) -> Result<Response<proto::CpuBoundReply>, Status> {
        Err(fast_only())
    }

    async fn sleep(
        &self,
        _: Request<proto::SleepRequest>,
    ) -> Result<Response<proto::SleepReply>, Status> {
        Err(fast_only())
    }

    async fn upstream_call(
        &self,
        _: Request<proto::UpstreamCallRequest>,
    ) -> Result<Response<proto::UpstreamCallReply>, Status> {
        Err(fast_only())
    }
}

/// The subscriber: with `otel`, trace ids for every request (no exporter: a user's would go
/// here); with `diagnose`, the engine's stage layer.
///
/// No `Option` layer: one that is `None` tells the registry it wants every callsite
/// (tracing-subscriber's `Option<Layer>` answers `Interest::always()`), so with the engine
/// alone every DEBUG span of h2 and hyper became a span in the registry, entered at every
/// poll: a cost no user who follows the guide pays.
fn subscriber(otel: bool, diagnose: bool) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::{Layer as _, layer::SubscriberExt, util::SubscriberInitExt};
    let otel_layer = || {
        let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .build()
            .tracer("bare_echo");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    };
    let registry = tracing_subscriber::registry();
    match (otel, diagnose) {
        (true, true) => registry
            .with(otel_layer())
            .with(StageLayer::new().with_filter(StageFilter))
            .init(),
        (true, false) => registry.with(otel_layer()).init(),
        (false, true) => registry
            .with(StageLayer::new().with_filter(StageFilter))
            .init(),
        // No subscriber, as a bare tonic server has; but set, so that tracing's `log` feature
        // (on in this build for holdup's sqlx, not in a plain tonic server's) does not turn
        // every disabled span of h2 and hyper into a `log` record check: measured with
        // callgrind, 11 000 instructions per call (72 500 against 61 500), a cost the plain
        // server does not pay.
        (false, false) => {
            let _ = tracing::subscriber::set_global_default(
                tracing::subscriber::NoSubscriber::default(),
            );
        }
    }
}

/// The server span an OpenTelemetry user gives each request without the engine (`--otel`
/// alone): the RPC conventions' attributes and the caller's context, as the engine's own
/// request span has them. With the engine, its span is the server span, so the two rows
/// compare a traced server with and without the engine, not a span against none.
fn server_span(request: &http::Request<()>) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let full = request.uri().path().trim_start_matches('/');
    let (service, method) = full.split_once('/').unwrap_or((full, ""));
    let span = tracing::info_span!(
        "rpc",
        otel.name = full,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(holdup::telemetry::otel::extract_http(request.headers()));
    span
}

fn main() -> anyhow::Result<()> {
    let diagnose = std::env::args().any(|a| a == "--diagnose");
    let hand_over = std::env::args().any(|a| a == "--hand-over");
    let otel = std::env::args().any(|a| a == "--otel");
    // Served through `holdup_diagnose::arrival::serve`, with the engine: what a user of the
    // crate's one-runtime serve loop pays, against `--diagnose` on tonic's own server.
    let arrival = std::env::args().any(|a| a == "--arrival");
    // The engine's cheapest setting: its two headers only on late calls.
    let when_late = std::env::args().any(|a| a == "--when-late");
    let diagnose = diagnose || arrival;
    let mut args = std::env::args().skip(1).filter(|a| {
        !matches!(
            a.as_str(),
            "--diagnose" | "--hand-over" | "--otel" | "--arrival" | "--when-late"
        )
    });
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:50052".into())
        .parse()
        .context("the first argument must be a listen address like 127.0.0.1:50052")?;
    let threads: usize = match args.next() {
        Some(n) => n
            .parse()
            .context("the second argument must be a number of threads")?,
        None => DEFAULT_THREADS,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    subscriber(otel, diagnose);
    if diagnose {
        install_hooks(&mut builder);
    }
    let runtime = builder
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let handlers = if hand_over {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .thread_name("handlers")
                .enable_all()
                .build()
                .context("starting the handlers' runtime")?,
        )
    } else {
        None
    };
    let layer = || {
        let headers = if when_late {
            holdup::diagnose::ResponseHeaders::WhenLate
        } else {
            holdup::diagnose::ResponseHeaders::Always
        };
        DiagnoseLayer::new()
            .with_config(holdup::diagnose::EngineConfig::default().response_headers(headers))
    };
    let bare = || Bare {
        handlers: handlers.as_ref().map(|r| r.handle().clone()),
    };
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        let with = [
            (diagnose, ", diagnosed"),
            (otel, ", OpenTelemetry"),
            (hand_over, ", handlers handed over"),
            (arrival, ", served by arrival::serve"),
            (when_late, ", headers when late"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, what)| *what)
        .collect::<String>();
        println!("bare_echo listening on {bound} ({threads} threads{with})");
        if arrival {
            // The crate's own accept loop: kernel receive timestamps, each request stamped in
            // its connection task, hyper-util's auto builder (Nagle off there too).
            let routes = tonic::service::Routes::new(LabServer::new(bare())).prepare();
            let service = tower::ServiceBuilder::new().layer(layer()).service(routes);
            return holdup::diagnose::arrival::serve(listener, service, holdup::shutdown::signal())
                .await
                .context("serving");
        }
        // Nagle off, as holdup does: the comparison is of request paths, not of socket options.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = if diagnose {
            Server::builder()
                .layer(layer())
                .add_service(LabServer::new(bare()))
                .serve_with_incoming_shutdown(incoming, holdup::shutdown::signal())
                .await
        } else if otel {
            Server::builder()
                .trace_fn(server_span)
                .add_service(LabServer::new(bare()))
                .serve_with_incoming_shutdown(incoming, holdup::shutdown::signal())
                .await
        } else {
            Server::builder()
                .add_service(LabServer::new(bare()))
                .serve_with_incoming_shutdown(incoming, holdup::shutdown::signal())
                .await
        };
        served.context("serving")
    })
}
