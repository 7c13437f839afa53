//! The `holdup` binary: parse the command line, set up telemetry, run the chosen command.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use holdup::{
    cli::{Cli, Command, ServeArgs, UpstreamArgs},
    config::{ServeConfig, SimulatorConfig},
    runtime,
    server::Server,
    shutdown, simulator,
    telemetry::subscriber::{self, Telemetry, TelemetryConfig},
    transport::ConnectionLimits,
};

/// mimalloc instead of glibc's malloc: every request allocates its span, timeline, header
/// and reply, and glibc's arenas cost more per allocation under two busy runtimes (measured:
/// docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits.h EX_USAGE: the configuration was wrong, nothing was started.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let command = match Cli::try_parse() {
        Ok(cli) => cli.command(),
        // A flag clap cannot parse is a usage error like any other: exit 64, not clap's 2.
        Err(error) if error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(EX_USAGE);
        }
        // --help and --version.
        Err(info) => info.exit(),
    };
    let result = match command {
        Command::Serve(args) => serve(&args),
        Command::Upstream(args) => upstream(&args),
        Command::Load(args) => load(&args),
        Command::Experiment(args) => experiment(&args),
        Command::Explain(args) => explain(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("holdup: {message}");
            ExitCode::from(EX_USAGE)
        }
        Err(Failure::Run(error)) => {
            eprintln!("holdup: {error:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Run(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Run(error)
    }
}

fn usage(error: impl ToString) -> Failure {
    Failure::Usage(error.to_string())
}

/// The one runtime of `holdup serve` (and `holdup upstream`): it reads the sockets and runs
/// the handlers, as in most services; every request's arrival is stamped by the kernel, so a
/// wait for its workers is measured and blamed all the same.
fn server_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    runtime::multi_thread("holdup", threads).context("starting the runtime")
}

/// How long tasks left on the runtime (connections closed at the end of the grace, a
/// blocking DNS lookup) may delay the exit.
const RUNTIME_STOP: Duration = Duration::from_millis(500);

/// Drops the runtime without waiting on what is left on it: the grace is over.
fn stop(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_timeout(RUNTIME_STOP);
}

/// Installs the subscriber; the returned handle flushes spans when the command ends.
fn start_telemetry(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    subscriber::init(config).context("setting up telemetry")
}

fn serve(args: &ServeArgs) -> Result<(), Failure> {
    let config = args.validate().map_err(usage)?;
    let telemetry_config = args.telemetry.validate("holdup").map_err(usage)?;
    let telemetry = start_telemetry(&telemetry_config)?;
    let result = serve_until_signal(config, telemetry.console_addr());
    telemetry.shutdown();
    result
}

fn serve_until_signal(config: ServeConfig, console: Option<SocketAddr>) -> Result<(), Failure> {
    let runtime = server_runtime(config.workers)?;
    // Over TLS the first call must trust the server's certificate (self-signed in a lab).
    let transport_flag = config.tls.as_ref().map_or_else(
        || "-plaintext".to_owned(),
        |tls| format!("-cacert {}", tls.cert.display()),
    );
    runtime.block_on(async {
        let workers = config.workers;
        let server = Server::build(config).await.context("starting holdup")?;
        let addr = server.local_addr();
        println!("holdup listening on {addr} (gRPC; {workers} workers)");
        println!("upstream simulator at {}", server.upstream_url());
        if let Some(metrics) = server.metrics_addr() {
            println!("metrics at http://{metrics}/metrics");
        }
        if let Some(console) = console {
            println!("tokio-console at http://{console}");
        }
        println!(
            "try: grpcurl {transport_flag} -d '{{\"mode\":\"INLINE\",\"work_ms\":200}}' {addr} holdup.v1.Lab/CpuBound"
        );
        server
            .run_until(shutdown::signal_then_force_exit())
            .await
            .context("serving")?;
        tracing::info!("holdup stopped");
        Ok::<(), anyhow::Error>(())
    })?;
    stop(runtime);
    Ok(())
}

fn upstream(args: &UpstreamArgs) -> Result<(), Failure> {
    let (sim, limits, grace) = args.validate().map_err(usage)?;
    let telemetry_config = args.telemetry.validate("holdup-upstream").map_err(usage)?;
    let telemetry = start_telemetry(&telemetry_config)?;
    let result = run_upstream(args.listen, sim, limits, grace);
    telemetry.shutdown();
    result
}

fn run_upstream(
    listen: SocketAddr,
    sim: SimulatorConfig,
    limits: ConnectionLimits,
    grace: Duration,
) -> Result<(), Failure> {
    let runtime = server_runtime(1)?;
    runtime.block_on(async {
        let simulator = simulator::bind(listen, sim, limits)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = simulator
            .local_addr()
            .context("reading the bound address")?;
        println!("holdup upstream simulator listening on http://{addr}");
        println!("try: curl 'http://{addr}/work?latency_ms=100&error_rate=0.2'");
        simulator
            .run_until(shutdown::signal_then_force_exit(), grace)
            .await
            .context("serving the upstream simulator")?;
        tracing::info!("holdup upstream stopped");
        Ok::<(), anyhow::Error>(())
    })?;
    stop(runtime);
    Ok(())
}

/// Threads of the load generator's own runtime: the calls are cheap to send, and on a small
/// machine the server under test needs the cores more.
const LOAD_THREADS: usize = 2;

fn load_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime::multi_thread("holdup-load", LOAD_THREADS)
        .context("starting the load generator's runtime")
}

/// Load and experiment runs are quiet unless RUST_LOG asks for logs: a failing call is a
/// measurement there, counted in the report, not a log line. The in-process server they may
/// start still needs the diagnosis engine's stage layer, and trace ids to name culprits by.
fn quiet_logs() {
    subscriber::init_local(std::env::var_os("RUST_LOG").is_some(), true);
}

fn load(args: &holdup::load::args::LoadArgs) -> Result<(), Failure> {
    let config = args.validate().map_err(usage)?;
    quiet_logs();
    let json = args.json;
    let report = load_runtime()?
        .block_on(holdup::load::run_command(config, !json))
        .context("running the load")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        print!("{}", holdup::load::table::render(&report));
    }
    Ok(())
}

fn experiment(args: &holdup::experiment::args::ExperimentArgs) -> Result<(), Failure> {
    use holdup::experiment::{html, report};
    let config = args.validate().map_err(usage)?;
    quiet_logs();
    let report = load_runtime()?
        .block_on(holdup::experiment::run_catalogue(
            &config,
            |i, n, e, skipped| match skipped {
                None => eprintln!("[{}/{n}] {}: {}", i + 1, e.id, e.title),
                Some(why) => eprintln!("[{}/{n}] {}: skipped, {why}", i + 1, e.id),
            },
        ))
        .context("running the experiments")?;
    if let Some(path) = &config.report {
        std::fs::write(path, html::render(&report))
            .with_context(|| format!("writing the report to {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if config.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the findings")?
        );
    } else {
        print!("{}", report::markdown(&report));
    }
    Ok(())
}

fn explain(args: &holdup::explain::args::ExplainArgs) -> Result<(), Failure> {
    let config = args.validate().map_err(usage)?;
    // A few HTTP requests to Jaeger: one thread is plenty.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime
        .block_on(holdup::explain::run(&config))
        .map_err(anyhow::Error::from)?;
    let (stdout, page) =
        holdup::explain::render(&config, &outcome).context("encoding the explanation")?;
    if let (Some(path), Some(page)) = (&config.html, page) {
        std::fs::write(path, page)
            .with_context(|| format!("writing the HTML page to {}", path.display()))?;
        eprintln!("waterfall written to {}", path.display());
    }
    print!("{stdout}");
    Ok(())
}
