//! The one place a `tracing` subscriber is built: one registry, with a filter per layer.
//!
//! - fmt: human logs to stderr, filtered by `RUST_LOG` (default `info`);
//! - OpenTelemetry: holdup's spans and events, exported over OTLP (see `otel.rs`);
//! - console-subscriber: tokio's task instrumentation, served to tokio-console;
//! - the diagnosis engine's stage layer (`crate::diagnose::StageLayer`): which stage span a
//!   request waits in.
//!
//! Per-layer filters let the console see tokio's trace-level task events while the log
//! stays quiet.
//!
//! The layers are a `Vec` of boxed layers, not `Option`s: an absent `Option` layer tells
//! tracing it wants every callsite, which turns every TRACE span and event of every library
//! (h2 opens about fifty spans per call, tokio one per task and timer) into a span in the
//! registry that no layer reads. Measured: a third of a `Fast` call's instructions.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use prometheus_client::metrics::counter::Counter;
use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterFn, Targets},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use super::{
    console_budget::{self, ConsoleFilter, ConsoleGate, DEFAULT_CONSOLE_BUDGET},
    otel,
};
use crate::diagnose::{StageAndResourceFilter, StageFilter, StageLayer};
use crate::runtime::OwnedRuntime;

/// Completed tasks stay in the console subscriber this long. The console's default (an hour)
/// keeps every finished request in memory. A client that is watching loses nothing to a short
/// retention: the subscriber keeps a finished task until its last update has been sent, and the
/// TUI then keeps it on screen for its own 6 s (`--retain-for`). Retention only decides what a
/// client that connects later still sees, and bounds what the console holds to the task budget
/// times this. Measured under closed-loop `Fast` load: RSS 218 MB at 10 s, 96 MB at 3 s, the
/// same throughput within the run's noise; 5 s halves the memory and still shows a late client
/// the last few seconds.
pub const DEFAULT_CONSOLE_RETENTION: Duration = Duration::from_secs(5);

/// Events (new tasks, resources) waiting for the console's aggregator. Its default, 102 400,
/// leaves the console's memory unbounded: the aggregator wakes once a second, or when the
/// buffer is half full, and each wake drains at most 128 events (tokio's cooperative budget
/// counts its non-blocking receive), so at the task budget's 250 new tasks a second the
/// backlog grew by about 120 tasks, each holding its two histograms, every second: RSS rose
/// 8 MB/s, to 1 GB in 120 s, at 1 000 and at 5 000 calls/s alike. With 1 024 the buffer is
/// half full within a few seconds, the aggregator drains it at once, and RSS stayed at
/// 118-136 MB. (The per-poll events of connection timers used to hide this, by filling the
/// buffer hundreds of times a second.) `TOKIO_CONSOLE_BUFFER_CAPACITY` overrides it.
pub const CONSOLE_EVENT_BUFFER: usize = 1_024;

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The service name spans carry unless `OTEL_SERVICE_NAME` overrides it.
    pub service_name: &'static str,
    /// Serve tokio-console's gRPC API here; `None` disables the console.
    pub console: Option<SocketAddr>,
    pub console_retention: Duration,
    /// New tasks a second the console sees (see `console_budget`).
    pub console_budget: u32,
    /// Export spans here instead of where `OTEL_EXPORTER_OTLP_ENDPOINT` says (for tests).
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "holdup",
            console: None,
            console_retention: DEFAULT_CONSOLE_RETENTION,
            console_budget: DEFAULT_CONSOLE_BUDGET,
            otlp_endpoint: None,
        }
    }
}

/// What `init` set up, kept so that spans can be flushed at exit.
#[derive(Debug)]
pub struct Telemetry {
    providers: Vec<SdkTracerProvider>,
    /// Where the console API listens (port 0 in the config replaced by the port bound); the
    /// configured address when it could not be bound (a warning said so).
    console: Option<SocketAddr>,
    /// Runs the OTLP exporters' gRPC connections, apart from the runtimes that serve requests.
    _export_runtime: Option<OwnedRuntime>,
}

/// The tracer the upstream simulator uses, so its spans carry a service name of their own
/// even when it runs inside `holdup serve`.
static UPSTREAM_TRACER: OnceLock<SdkTracer> = OnceLock::new();
/// Failed OTLP exports, shared by every metrics registry in the process.
static EXPORT_FAILURES: OnceLock<Counter> = OnceLock::new();

/// How long the exit waits for buffered spans to reach the collector. A collector that
/// answers takes milliseconds; the SDK's own default (5 s, and one provider after another)
/// made a server whose collector was down exit seconds after its grace, past what the
/// README promises and what a pod's termination period allows for.
pub const SPAN_FLUSH_AT_EXIT: Duration = Duration::from_millis(500);

pub fn upstream_tracer() -> Option<&'static SdkTracer> {
    UPSTREAM_TRACER.get()
}

pub fn export_failures() -> Counter {
    EXPORT_FAILURES.get_or_init(Counter::default).clone()
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("a global tracing subscriber is already set")]
    AlreadySet,
    #[error("cannot start the telemetry export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Otel(#[from] otel::OtelError),
}

/// Installs the global subscriber. Call once per process.
///
/// # Errors
/// [`TelemetryError`] if a subscriber is already installed or export cannot be set up.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let fmt = fmt_layer().with_filter(log_filter());

    otel::install_propagator();
    let (providers, export_runtime) = match otel::tracing_mode() {
        otel::Tracing::Export => {
            let runtime = OwnedRuntime::start("holdup-otel", 1).map_err(TelemetryError::Runtime)?;
            let providers = {
                let _enter = runtime.handle().enter();
                let endpoint = config.otlp_endpoint.as_deref();
                vec![
                    otel::tracer_provider(config.service_name, endpoint, export_failures())?,
                    otel::tracer_provider("holdup-upstream", endpoint, export_failures())?,
                ]
            };
            (providers, Some(runtime))
        }
        otel::Tracing::Off => (Vec::new(), None),
    };
    let otel_layer = match providers.as_slice() {
        [main, upstream] => {
            let _ = UPSTREAM_TRACER.set(upstream.tracer("holdup-upstream"));
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(main.tracer("holdup"))
                    // Per-span busy/idle times and thread ids: two registry look-ups on every
                    // poll of every traced future, for attributes the engine's split says
                    // better.
                    .with_tracked_inactivity(false)
                    .with_threads(false)
                    .with_filter(Targets::new().with_target("holdup", Level::INFO)),
            )
        }
        _ => None,
    };

    let mut console = None;
    let console_layer = config.console.map(|addr| {
        let (layer, server) = console_subscriber::ConsoleLayer::builder()
            .event_buffer_capacity(CONSOLE_EVENT_BUFFER)
            .with_default_env()
            .server_addr(addr)
            .retention(config.console_retention)
            .build();
        console = Some(spawn_console_server(addr, server).unwrap_or(addr));
        // Request task names carry a short trace id only when the console will show them.
        crate::diagnose::name_tasks_through(console_budget::decide_next_spawn);
        layer.with_filter(ConsoleFilter::new(config.console_budget))
    });

    // tokio's resources are read only with the console on: they are TRACE, which the
    // console pays for anyway; without it they took `--no-console` from 1.5x to 2.1x bare's
    // CPU per call. The Lab's own stages name its waits either way.
    let mut layers = vec![fmt.boxed(), stage_layer(console_layer.is_some())];
    layers.extend(otel_layer.map(Layer::boxed));
    if let Some(console_layer) = console_layer {
        // Before the console's own layer: it decides first, and for every layer.
        layers.push(ConsoleGate.with_filter(ConsoleGate).boxed());
        layers.push(console_layer.boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| TelemetryError::AlreadySet)?;
    Ok(Telemetry {
        providers,
        console,
        _export_runtime: export_runtime,
    })
}

/// Serves the console API on a thread of its own, and says where it listens; a port already in
/// use costs a warning (and `None`), not the service.
///
/// Bound here, before `serve` prints the banner that names the address: bound on the console's
/// thread, a console (or a test) that connected as soon as it read the banner could be refused
/// (seen once in CI, under a loaded machine). Connections made before the thread accepts wait
/// in the listener's backlog. Bound once, so port 0 is the port the banner names.
fn spawn_console_server(
    addr: SocketAddr,
    server: console_subscriber::Server,
) -> Option<SocketAddr> {
    let bound = std::net::TcpListener::bind(addr).and_then(|listener| {
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    });
    let (listener, local) = match bound {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("holdup: tokio-console disabled: cannot serve on {addr}: {e}");
            return None;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("holdup-console".into())
        .spawn(move || {
            // The console's own work must not show up as tasks in the console.
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("holdup: tokio-console disabled: cannot start its runtime: {e}");
                    return;
                }
            };
            if let Err(e) = runtime.block_on(serve_console(listener, server)) {
                eprintln!("holdup: tokio-console disabled: cannot serve on {addr}: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "tokio-console disabled: cannot spawn its thread");
    }
    Some(local)
}

/// What `console_subscriber::Server::serve` does, on a listener already bound: its aggregator
/// runs as long as the API is served.
async fn serve_console(
    listener: std::net::TcpListener,
    server: console_subscriber::Server,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let console_subscriber::ServerParts {
        instrument_server,
        aggregator,
        ..
    } = server.into_parts();
    let aggregate = tokio::spawn(aggregator.run());
    let served = tonic::transport::Server::builder()
        .add_service(instrument_server)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await;
    aggregate.abort();
    Ok(served?)
}

/// No exporters, for tools and tests: the diagnosis engine's stage layer, logs to stderr only
/// when `logs` (filtered by `RUST_LOG`), and, with `trace_ids`, an OpenTelemetry layer that
/// exports nothing but gives every request a trace id (so that blame can name culprits by it).
/// A no-op if a subscriber is already installed.
pub fn init_local(logs: bool, trace_ids: bool) {
    let fmt = logs.then(|| fmt_layer().with_filter(log_filter()));
    let otel_layer = trace_ids.then(|| {
        otel::install_propagator();
        let provider = SdkTracerProvider::builder().build();
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("holdup"))
            .with_filter(Targets::new().with_target("holdup", Level::INFO))
    });
    let mut layers = vec![stage_layer(true)];
    layers.extend(fmt.map(Layer::boxed));
    layers.extend(otel_layer.map(Layer::boxed));
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

/// `HOLDUP_LAB_STAGES=off`: the diagnosis engine sees none of the Lab's own spans (their
/// `holdup.stage` kinds and OpenTelemetry attributes), only tokio's
/// resources, so it names every wait from measurement alone, as it would in a service that
/// labels nothing. The experiment catalogue run with it shows how much measurement recovers.
pub const LAB_STAGES_ENV: &str = "HOLDUP_LAB_STAGES";

/// The engine's stage layer; with `resources`, reading tokio's resources too
/// ([`StageAndResourceFilter`]).
fn stage_layer<S>(resources: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let off = std::env::var(LAB_STAGES_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("off"));
    if off {
        let unlabelled = tracing_subscriber::filter::filter_fn(|meta| {
            StageLayer::wants_resource(meta)
                || StageLayer::wants(meta) && !meta.target().starts_with("holdup::")
        });
        StageLayer::new().with_filter(unlabelled).boxed()
    } else if resources {
        // Timers and locks named, and a pool's holders blamed, with no stage needed.
        StageLayer::new()
            .with_filter(StageAndResourceFilter)
            .boxed()
    } else {
        StageLayer::new().with_filter(StageFilter).boxed()
    }
}

/// What the log shows: `RUST_LOG` (default `info`), but not the request spans of the
/// diagnosis engine. The log layer formats every field of every span it sees when it opens
/// and at every record, for the span context of events logged inside it; for the request
/// span that was a sixth of a `Fast` call's instructions, for a context the engine's own
/// log lines already carry (`rpc`, `trace_id`). Jaeger gets the span and its fields.
fn log_filter<S>() -> impl tracing_subscriber::layer::Filter<S> {
    use tracing_subscriber::filter::FilterExt;
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    env.and(FilterFn::new(|meta: &Metadata<'_>| {
        !(meta.is_span() && meta.target() == crate::diagnose::REQUEST_SPAN_TARGET)
    }))
}

/// Logs to stderr, in colour only on a terminal.
fn fmt_layer<S>() -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    fn() -> std::io::Stderr,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr as fn() -> std::io::Stderr)
        .with_ansi(std::io::stderr().is_terminal())
}

impl Telemetry {
    /// Where the console API listens, if it is on: the configured address, with the port the
    /// listener got for port 0. An address that could not be bound is returned as configured
    /// (a warning said so at start-up), so the banner still names what was asked for.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console
    }

    /// Exports every span still buffered. Blocks; call outside async code or at exit.
    pub fn flush(&self) {
        for provider in &self.providers {
            if let Err(e) = provider.force_flush() {
                tracing::debug!(error = %e, "flushing spans failed");
            }
        }
    }

    /// Flushes and stops the exporters, all at once and for at most [`SPAN_FLUSH_AT_EXIT`].
    /// Blocks; call once, at exit.
    pub fn shutdown(&self) {
        std::thread::scope(|scope| {
            for provider in &self.providers {
                scope.spawn(move || {
                    if let Err(e) = provider.shutdown_with_timeout(SPAN_FLUSH_AT_EXIT) {
                        eprintln!(
                            "holdup: spans still buffered at exit could not reach the collector \
                             within {} ms and were dropped ({e})",
                            SPAN_FLUSH_AT_EXIT.as_millis()
                        );
                    }
                });
            }
        });
    }
}
