//! A service that is not the Lab: the hello-world greeter of tonic's own examples, diagnosed by
//! holdup's engine exactly as the guide's "Diagnose your own service" (docs/your-service.md)
//! tells you to add it.
//!
//! Its handler misbehaves on purpose according to the name it greets, written as ordinary code
//! is written (plain `tracing` spans, nothing that names a verdict):
//!
//! - `spin`: about 200 ms of CPU inline;
//! - `block`: `std::thread::sleep` for 200 ms;
//! - `mutex`: takes a `std::sync::Mutex` and keeps it 200 ms: a second `mutex` call waits for it;
//! - `wait`: `tokio::time::sleep` for 200 ms inside a `cache.refresh` span;
//! - anything else: answers at once.
//!
//! ```sh
//! cargo run --example diagnosed_greeter -- --listen 127.0.0.1:50061
//! grpcurl -plaintext -v -d '{"name":"spin"}' 127.0.0.1:50061 helloworld.Greeter/SayHello
//! ```
//!
//! Flags: `--listen ADDR` (default 127.0.0.1:50061), `--workers N` (the runtime's worker
//! threads, default 2). One runtime reads the sockets and runs the handlers, as in most
//! services: `holdup_diagnose::arrival::serve` stamps each request with the kernel's receive
//! time, so a request that waited behind a blocked worker before any code read it still says
//! so, and names who held the workers.
#![forbid(unsafe_code)]

use std::{
    future::Future,
    io::IsTerminal,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use holdup::diagnose::{DiagnoseLayer, StageFilter, StageLayer, arrival, install_hooks};
use opentelemetry::trace::TracerProvider as _;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, service::Routes};
use tracing::Instrument;
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("helloworld");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("helloworld_descriptor");
}

use pb::{
    HelloReply, HelloRequest,
    greeter_server::{Greeter, GreeterServer},
};

/// How long each misbehaviour lasts.
pub const MISBEHAVE: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Clone)]
pub struct MyGreeter {
    /// Shared state behind a blocking lock, as in many services.
    cache: Arc<Mutex<u64>>,
}

#[tonic::async_trait]
impl Greeter for MyGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        match name.as_str() {
            "spin" => {
                let _render = tracing::info_span!("render").entered();
                spin(MISBEHAVE);
            }
            "block" => std::thread::sleep(MISBEHAVE),
            "mutex" => {
                let mut hits = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                std::thread::sleep(MISBEHAVE);
                *hits += 1;
            }
            "wait" => {
                tokio::time::sleep(MISBEHAVE)
                    .instrument(tracing::info_span!("cache.refresh"))
                    .await;
            }
            _ => {}
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello {name}!"),
        }))
    }
}

/// Busy arithmetic for `time`: the CPU-heavy code a handler should not run inline.
fn spin(time: Duration) -> u64 {
    let until = Instant::now() + time;
    let mut x = 1u64;
    while Instant::now() < until {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    x
}

/// Serves the greeter (and reflection) on `listener` until `shutdown`, diagnosed, each request
/// stamped with its arrival by the kernel.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Reflection, both versions: grpcurl before 1.9 speaks only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
    };
    let routes = Routes::new(GreeterServer::new(MyGreeter::default()))
        .add_service(reflection().build_v1().context("building reflection")?)
        .add_service(
            reflection()
                .build_v1alpha()
                .context("building reflection")?,
        )
        .prepare();
    // The diagnosis layer: one line; `arrival::serve` stamps each request before it runs.
    let service = tower::ServiceBuilder::new()
        .layer(DiagnoseLayer::new())
        .service(routes);
    arrival::serve(listener, service, shutdown)
        .await
        .context("serving")
}

/// A runtime with the diagnosis engine's poll hooks, so that blame can name any task.
///
/// # Errors
/// The I/O error if the runtime cannot start.
pub fn runtime(name: &str, workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    install_hooks(&mut builder);
    builder
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// Worker threads of the runtime (it reads the sockets and runs the handlers).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs, trace ids for every request (no exporter: add your own), and the engine's stage layer.
    let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .build()
        .tracer("greeter");
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(EnvFilter::new("info")),
        )
        // INFO and above: h2 and hyper open dozens of TRACE spans per request, and an
        // unfiltered OpenTelemetry layer would build a span for each (9x bare tonic's CPU).
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(LevelFilter::INFO),
        )
        .with(StageLayer::new().with_filter(StageFilter))
        .init();
    runtime("greeter", args.workers.max(1))?.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!("greeter listening on {}", listener.local_addr()?);
        serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })
}
