//! The `holdup` binary: parse the command line, set up telemetry, run the chosen command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use holdup::{
    cli::{Cli, Command, ServeArgs, UpstreamArgs},
    server::Server,
    shutdown, telemetry,
    upstream::Simulator,
};

/// sysexits.h EX_USAGE: the configuration was wrong, nothing was started.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let command = Cli::parse().command();
    telemetry::subscriber::init();
    let result = match command {
        Command::Serve(args) => serve(&args),
        Command::Upstream(args) => upstream(&args),
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

fn transport_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("holdup-io")
        .enable_all()
        .build()
        .context("starting the transport runtime")
}

fn serve(args: &ServeArgs) -> Result<(), Failure> {
    let config = args.validate().map_err(|e| Failure::Usage(e.to_string()))?;
    let runtime = transport_runtime(config.io_threads)?;
    runtime.block_on(async {
        let workers = config.workers;
        let server = Server::build(config).await.context("starting holdup")?;
        let addr = server.local_addr();
        println!("holdup listening on {addr} (gRPC; {workers} lab workers)");
        println!("upstream simulator at {}", server.upstream_url());
        println!(
            "try: grpcurl -plaintext -d '{{\"mode\":\"INLINE\",\"work_ms\":200}}' {addr} holdup.v1.Lab/CpuBound"
        );
        server
            .run_until(shutdown::signal())
            .await
            .context("serving")?;
        tracing::info!("holdup stopped");
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

fn upstream(args: &UpstreamArgs) -> Result<(), Failure> {
    let sim = args
        .sim
        .validate()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let runtime = transport_runtime(1)?;
    runtime.block_on(async {
        let simulator = Simulator::bind(args.listen, sim)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = simulator
            .local_addr()
            .context("reading the bound address")?;
        println!("holdup upstream simulator listening on http://{addr}");
        println!("try: curl 'http://{addr}/work?latency_ms=100&error_rate=0.2'");
        simulator
            .run_until(shutdown::signal())
            .await
            .context("serving the upstream simulator")?;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
