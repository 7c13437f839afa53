//! Command-line flags (each also readable from a `HOLDUP_*` environment variable), turned
//! into the typed, validated structs of `config.rs`.
//!
//! A boolean flag's variable takes what shells and manifests write for yes and no (`1`/`0`,
//! `true`/`false`, `yes`/`no`, `on`/`off`: clap's `BoolishValueParser`), not clap's default
//! `true`/`false` alone.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, builder::BoolishValueParser};

use crate::config::{
    self, ConfigError, Database, DatabaseConfig, Limits, ServeConfig, SimulatorConfig,
    UpstreamTarget, check_range, millis, whole_ms,
};
use crate::telemetry::{console_budget, lag, subscriber};
use crate::transport::{ConnectionLimits, limits as transport};

/// holdup: a gRPC lab that shows, with evidence, why a response is late.
#[derive(Debug, Parser)]
#[command(name = "holdup", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Lab gRPC service (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Run the upstream HTTP simulator alone.
    Upstream(UpstreamArgs),
    /// Load one RPC (open or closed loop) with a Fast probe beside it; report HDR percentiles.
    Load(Box<crate::load::args::LoadArgs>),
    /// Run the experiment catalogue: each cause of delay, before and after its fix.
    Experiment(crate::experiment::args::ExperimentArgs),
    /// Explain a late request from its trace in Jaeger: the critical path and each segment's
    /// cause (or the slowest traces of an operation, summed by cause).
    Explain(Box<crate::explain::args::ExplainArgs>),
}

impl Cli {
    /// The subcommand to run; a bare `holdup` serves with every default.
    pub fn command(self) -> Command {
        self.command.unwrap_or_else(|| {
            // Parsing no arguments cannot fail: every serve flag has a default (or is optional).
            let defaults =
                ServeOnly::try_parse_from(["holdup"]).expect("serve flags all have defaults");
            Command::Serve(Box::new(defaults.serve))
        })
    }
}

/// `serve`'s flags alone: what a bare `holdup` parses (environment variables still apply).
#[derive(Debug, Parser)]
pub struct ServeOnly {
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// Simulated upstream: latency before every answer.
    #[arg(long, env = "HOLDUP_SIM_LATENCY_MS", default_value_t = config::DEFAULT_SIM_LATENCY_MS)]
    pub sim_latency_ms: u32,
    /// Simulated upstream: extra latency drawn uniformly from 0..=jitter.
    #[arg(long, env = "HOLDUP_SIM_JITTER_MS", default_value_t = 0)]
    pub sim_jitter_ms: u32,
    /// Simulated upstream: fraction of calls answered with HTTP 503 (0.0..=1.0).
    #[arg(long, env = "HOLDUP_SIM_ERROR_RATE", default_value_t = 0.0)]
    pub sim_error_rate: f64,
    /// Simulated upstream: fraction of calls that stall for --sim-stall-ms (0.0..=1.0).
    #[arg(long, env = "HOLDUP_SIM_STALL_RATE", default_value_t = 0.0)]
    pub sim_stall_rate: f64,
    /// Simulated upstream: how long a stalled call hangs before it answers.
    #[arg(long, env = "HOLDUP_SIM_STALL_MS", default_value_t = config::DEFAULT_SIM_STALL_MS)]
    pub sim_stall_ms: u32,
}

impl SimulatorArgs {
    /// # Errors
    /// A [`ConfigError`] for a rate outside 0..=1 or a latency over a minute.
    pub fn validate(&self) -> Result<SimulatorConfig, ConfigError> {
        Ok(SimulatorConfig {
            latency_ms: check_range("--sim-latency-ms", self.sim_latency_ms, 0, 60_000)?,
            jitter_ms: check_range("--sim-jitter-ms", self.sim_jitter_ms, 0, 60_000)?,
            error_rate: check_range("--sim-error-rate", self.sim_error_rate, 0.0, 1.0)?,
            stall_rate: check_range("--sim-stall-rate", self.sim_stall_rate, 0.0, 1.0)?,
            stall_ms: check_range("--sim-stall-ms", self.sim_stall_ms, 0, 600_000)?,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "HOLDUP_LISTEN", default_value_t = config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Worker threads of the runtime, which reads the sockets and runs the handlers
    /// (default: number of cores).
    #[arg(long, env = "HOLDUP_WORKERS")]
    pub workers: Option<usize>,
    /// Database for SlowBackend: postgres://… or sqlite:…; default: embedded SQLite in a temp dir.
    #[arg(long, env = "HOLDUP_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections in SlowBackend's pool.
    #[arg(long, env = "HOLDUP_DB_POOL_SIZE", default_value_t = config::DEFAULT_DB_POOL_SIZE)]
    pub db_pool_size: u32,
    /// How long a request waits for a pool connection before UNAVAILABLE.
    #[arg(long, env = "HOLDUP_DB_ACQUIRE_TIMEOUT_MS", default_value_t = config::DEFAULT_DB_ACQUIRE_TIMEOUT_MS)]
    pub db_acquire_timeout_ms: u64,
    /// Rows seeded into the lab table (POINT looks one up, SCAN reads them all).
    #[arg(long, env = "HOLDUP_SEED_ROWS", default_value_t = config::DEFAULT_SEED_ROWS)]
    pub seed_rows: u32,
    /// Threads of the dedicated compute pool (default: number of cores).
    #[arg(long, env = "HOLDUP_COMPUTE_THREADS")]
    pub compute_threads: Option<usize>,
    /// Jobs that may queue for a compute thread; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "HOLDUP_COMPUTE_QUEUE", default_value_t = config::DEFAULT_COMPUTE_QUEUE)]
    pub compute_queue: usize,
    /// Base URL of an upstream simulator; default: start one in-process.
    #[arg(long, env = "HOLDUP_UPSTREAM_URL")]
    pub upstream_url: Option<String>,
    #[command(flatten)]
    pub sim: SimulatorArgs,
    /// Cap on CpuBound work: the largest work_ms, and where iterations stop.
    #[arg(long, env = "HOLDUP_MAX_CPU_MS", default_value_t = config::DEFAULT_MAX_CPU_MS)]
    pub max_cpu_ms: u32,
    /// Cap on SlowBackend.hold_ms.
    #[arg(long, env = "HOLDUP_MAX_HOLD_MS", default_value_t = config::DEFAULT_MAX_HOLD_MS)]
    pub max_hold_ms: u32,
    /// Cap on Sleep.duration_ms.
    #[arg(long, env = "HOLDUP_MAX_SLEEP_MS", default_value_t = config::DEFAULT_MAX_SLEEP_MS)]
    pub max_sleep_ms: u32,
    /// Cap on UpstreamCall.max_retries.
    #[arg(long, env = "HOLDUP_MAX_RETRIES", default_value_t = config::DEFAULT_MAX_RETRIES)]
    pub max_retries: u32,
    /// Lab calls in flight at once (all RPCs); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "HOLDUP_MAX_IN_FLIGHT", default_value_t = config::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// In-flight limit of each costly RPC (CpuBound, SlowBackend, Sleep, UpstreamCall).
    #[arg(long, env = "HOLDUP_MAX_IN_FLIGHT_PER_RPC", default_value_t = config::DEFAULT_MAX_IN_FLIGHT_PER_RPC)]
    pub max_in_flight_per_rpc: usize,
    /// Slots of --max-in-flight only Fast may take: the canary answers while the costly RPCs
    /// are at their limit.
    #[arg(long, env = "HOLDUP_RESERVED_FOR_FAST", default_value_t = crate::config::DEFAULT_RESERVED_FOR_FAST)]
    pub reserved_for_fast: usize,
    /// Refuse CpuBound INLINE and Sleep BLOCKING (FAILED_PRECONDITION): for a server others
    /// can reach, where one client could otherwise pin every lab worker.
    #[arg(long, env = "HOLDUP_REFUSE_BLOCKING_MODES", value_parser = BoolishValueParser::new())]
    pub refuse_blocking_modes: bool,
    /// HTTP/2 streams one gRPC connection may have open at once.
    #[arg(long, env = "HOLDUP_MAX_CONCURRENT_STREAMS", default_value_t = crate::transport::limits::DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Grace period for in-flight requests after SIGTERM / Ctrl-C; calls still running after
    /// it are answered UNAVAILABLE and every connection is closed.
    #[arg(long, env = "HOLDUP_GRACE_MS", default_value_t = config::DEFAULT_GRACE_MS)]
    pub grace_ms: u64,
    /// After SIGTERM, keep serving this long with health NOT_SERVING before closing connections.
    #[arg(long, env = "HOLDUP_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, env = "HOLDUP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "HOLDUP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Prometheus endpoint (`/metrics`); loopback by default.
    #[arg(long, env = "HOLDUP_METRICS_ADDR", default_value_t = config::DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,
    /// Serve no metrics endpoint.
    #[arg(long, env = "HOLDUP_NO_METRICS", value_parser = BoolishValueParser::new())]
    pub no_metrics: bool,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// How often the runtime lag probe's timer fires.
    #[arg(long, env = "HOLDUP_LAG_PROBE_MS", default_value_t = whole_ms(lag::DEFAULT_INTERVAL))]
    pub lag_probe_ms: u64,
    /// A poll of a request longer than this is a long poll (WARN on its span, counted).
    #[arg(long, env = "HOLDUP_LONG_POLL_MS", default_value_t = whole_ms(crate::diagnose::DEFAULT_LONG_POLL))]
    pub long_poll_ms: u64,
    /// Waits for a runtime worker at least this long are blamed on the polls that held them.
    #[arg(long, env = "HOLDUP_BLAME_FROM_US", default_value_t = crate::diagnose::DEFAULT_BLAME_FROM.as_micros() as u64)]
    pub blame_from_us: u64,
}

/// Connection limits of every listener, shared by `serve` and `upstream`.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// Connections each listener keeps open at once; more are closed on accept (counted).
    #[arg(long, env = "HOLDUP_MAX_CONNECTIONS", default_value_t = transport::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Close a connection that sends nothing (no HTTP/2 preface, no request) this long.
    #[arg(long, env = "HOLDUP_HANDSHAKE_TIMEOUT_MS", default_value_t = ms(transport::DEFAULT_HANDSHAKE_TIMEOUT))]
    pub handshake_timeout_ms: u64,
    /// Close a connection with no request in flight for this long.
    #[arg(long, env = "HOLDUP_IDLE_TIMEOUT_MS", default_value_t = ms(transport::DEFAULT_IDLE_TIMEOUT))]
    pub idle_timeout_ms: u64,
    /// Close a connection whose reply has waited this long for the client to read it.
    #[arg(long, env = "HOLDUP_REPLY_SEND_TIMEOUT_MS", default_value_t = ms(transport::DEFAULT_REPLY_SEND_TIMEOUT))]
    pub reply_send_timeout_ms: u64,
    /// End a request (DEADLINE_EXCEEDED, stream freed) whose message has waited this long for the
    /// client to send the rest of it.
    #[arg(long, env = "HOLDUP_REQUEST_BODY_TIMEOUT_MS", default_value_t = ms(transport::DEFAULT_REQUEST_BODY_TIMEOUT))]
    pub request_body_timeout_ms: u64,
    /// Requests each listener keeps open at once, all connections together; more are refused
    /// at once (RESOURCE_EXHAUSTED, counted), their body unread.
    #[arg(long, env = "HOLDUP_MAX_OPEN_REQUESTS", default_value_t = transport::DEFAULT_MAX_OPEN_REQUESTS)]
    pub max_open_requests: usize,
}

/// A default `Duration` as the `*_ms` flag value that spells it.
const fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

impl TransportArgs {
    /// # Errors
    /// A [`ConfigError`] naming the first flag out of range.
    pub fn validate(&self) -> Result<ConnectionLimits, ConfigError> {
        Ok(ConnectionLimits {
            max_connections: check_range("--max-connections", self.max_connections, 1, 1_000_000)?,
            handshake_timeout: millis(check_range(
                "--handshake-timeout-ms",
                self.handshake_timeout_ms,
                1,
                600_000,
            )?),
            idle_timeout: millis(check_range(
                "--idle-timeout-ms",
                self.idle_timeout_ms,
                1,
                86_400_000,
            )?),
            reply_send_timeout: millis(check_range(
                "--reply-send-timeout-ms",
                self.reply_send_timeout_ms,
                1,
                600_000,
            )?),
            request_body_timeout: millis(check_range(
                "--request-body-timeout-ms",
                self.request_body_timeout_ms,
                1,
                600_000,
            )?),
            max_open_requests: check_range(
                "--max-open-requests",
                self.max_open_requests,
                1,
                10_000_000,
            )?,
        })
    }
}

/// Flags of the tracing subscriber, shared by `serve` and `upstream`.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// tokio-console's gRPC API address; loopback by default.
    #[arg(
        long,
        env = "HOLDUP_CONSOLE_ADDR",
        default_value_t = SocketAddr::new(console_subscriber::Server::DEFAULT_IP, console_subscriber::Server::DEFAULT_PORT)
    )]
    pub console_addr: SocketAddr,
    /// Do not serve tokio-console.
    #[arg(long, env = "HOLDUP_NO_CONSOLE", value_parser = BoolishValueParser::new())]
    pub no_console: bool,
    /// How long tokio-console keeps finished tasks, in seconds.
    #[arg(long, env = "HOLDUP_CONSOLE_RETENTION_S", default_value_t = subscriber::DEFAULT_CONSOLE_RETENTION.as_secs())]
    pub console_retention_s: u64,
    /// New tasks a second tokio-console sees; above it, a sample (said once in the log).
    #[arg(long, env = "HOLDUP_CONSOLE_TASK_BUDGET", default_value_t = console_budget::DEFAULT_CONSOLE_BUDGET)]
    pub console_task_budget: u32,
}

impl TelemetryArgs {
    /// # Errors
    /// A [`ConfigError`] for a retention or threshold out of range.
    pub fn validate(
        &self,
        service_name: &'static str,
    ) -> Result<subscriber::TelemetryConfig, ConfigError> {
        Ok(subscriber::TelemetryConfig {
            service_name,
            console: (!self.no_console).then_some(self.console_addr),
            console_retention: Duration::from_secs(check_range(
                "--console-retention-s",
                self.console_retention_s,
                1,
                86_400,
            )?),
            console_budget: check_range(
                "--console-task-budget",
                self.console_task_budget,
                1,
                1_000_000,
            )?,
            otlp_endpoint: None,
        })
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The port of a database URL (`postgres://u@host:6543/db`), which the diagnosis engine then
/// counts as a database's: waits on connections to it are `backend`.
fn database_port(url: Option<&str>) -> Option<u16> {
    reqwest::Url::parse(url?).ok()?.port()
}

impl ServeArgs {
    /// # Errors
    /// A [`ConfigError`] naming the first flag whose value is out of range.
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        let database = match &self.database_url {
            None => Database::EmbeddedSqlite,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Database::Url(url.clone())
            }
            Some(url) if url.starts_with("sqlite:") => Database::Url(url.clone()),
            Some(url) => {
                return Err(ConfigError::new(
                    "--database-url",
                    format!("{url:?} is neither postgres://… nor sqlite:…"),
                ));
            }
        };
        let upstream = match &self.upstream_url {
            None => UpstreamTarget::InProcess(self.sim.validate()?),
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                UpstreamTarget::Url(url.trim_end_matches('/').to_owned())
            }
            Some(url) => {
                return Err(ConfigError::new(
                    "--upstream-url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        };
        Ok(ServeConfig {
            listen: self.listen,
            workers: check_range("--workers", self.workers.unwrap_or_else(cores), 1, 256)?,
            db: DatabaseConfig {
                database,
                pool_size: check_range("--db-pool-size", self.db_pool_size, 1, 1_000)?,
                acquire_timeout: millis(check_range(
                    "--db-acquire-timeout-ms",
                    self.db_acquire_timeout_ms,
                    1,
                    600_000,
                )?),
                seed_rows: check_range("--seed-rows", self.seed_rows, 1, 10_000_000)?,
            },
            compute_threads: check_range(
                "--compute-threads",
                self.compute_threads.unwrap_or_else(cores),
                1,
                256,
            )?,
            compute_queue: check_range("--compute-queue", self.compute_queue, 0, 100_000)?,
            upstream,
            limits: Limits {
                max_cpu_ms: check_range("--max-cpu-ms", self.max_cpu_ms, 1, 600_000)?,
                max_hold_ms: check_range("--max-hold-ms", self.max_hold_ms, 0, 600_000)?,
                max_sleep_ms: check_range("--max-sleep-ms", self.max_sleep_ms, 0, 600_000)?,
                max_retries: check_range("--max-retries", self.max_retries, 0, 20)?,
                max_in_flight: check_range("--max-in-flight", self.max_in_flight, 1, 1_000_000)?,
                max_in_flight_per_rpc: check_range(
                    "--max-in-flight-per-rpc",
                    self.max_in_flight_per_rpc,
                    1,
                    1_000_000,
                )?,
                reserved_for_fast: check_range(
                    "--reserved-for-fast",
                    self.reserved_for_fast,
                    0,
                    self.max_in_flight.saturating_sub(1),
                )?,
                refuse_blocking_modes: self.refuse_blocking_modes,
            },
            grace: Duration::from_millis(check_range("--grace-ms", self.grace_ms, 0, 600_000)?),
            drain_delay: millis(check_range(
                "--drain-delay-ms",
                self.drain_delay_ms,
                0,
                600_000,
            )?),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::config::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            metrics_addr: (!self.no_metrics).then_some(self.metrics_addr),
            lag_interval: millis(check_range("--lag-probe-ms", self.lag_probe_ms, 1, 60_000)?),
            diagnose: crate::diagnose::EngineConfig {
                long_poll: millis(check_range("--long-poll-ms", self.long_poll_ms, 1, 60_000)?),
                blame_from: Duration::from_micros(check_range(
                    "--blame-from-us",
                    self.blame_from_us,
                    100,
                    60_000_000,
                )?),
                ..database_port(self.database_url.as_deref())
                    .map_or_else(crate::diagnose::EngineConfig::default, |port| {
                        crate::diagnose::EngineConfig::default().backend_port(port)
                    })
            },
            connections: self.transport.validate()?,
            max_concurrent_streams: check_range(
                "--max-concurrent-streams",
                self.max_concurrent_streams,
                1,
                65_536,
            )?,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// HTTP listen address of the simulator.
    #[arg(long, env = "HOLDUP_UPSTREAM_LISTEN", default_value_t = config::DEFAULT_SIMULATOR_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub sim: SimulatorArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Grace period for in-flight requests after SIGTERM / Ctrl-C; a second signal exits at
    /// once.
    #[arg(long, env = "HOLDUP_GRACE_MS", default_value_t = crate::config::DEFAULT_GRACE_MS)]
    pub grace_ms: u64,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl UpstreamArgs {
    /// The simulator's behaviour, its connection limits and its grace period.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first flag out of range.
    pub fn validate(&self) -> Result<(SimulatorConfig, ConnectionLimits, Duration), ConfigError> {
        Ok((
            self.sim.validate()?,
            self.transport.validate()?,
            millis(check_range("--grace-ms", self.grace_ms, 0, 600_000)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let mut all = vec!["holdup"];
        all.extend_from_slice(args);
        ServeOnly::try_parse_from(all).expect("flags parse").serve
    }

    #[test]
    fn a_database_urls_port_is_the_backends() {
        assert_eq!(
            database_port(Some("postgres://postgres@127.0.0.1:42249/holdup_test")),
            Some(42249)
        );
        assert_eq!(
            database_port(Some("postgresql://u:p@db:6543/x?sslmode=disable")),
            Some(6543)
        );
        assert_eq!(database_port(Some("postgres://db/x")), None);
        assert_eq!(database_port(Some("sqlite::memory:")), None);
        assert_eq!(database_port(None), None);
    }

    #[test]
    fn the_command_line_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn defaults_validate() {
        let config = parse(&[]).validate().expect("defaults are valid");
        assert_eq!(config.listen.port(), 50051);
        assert_eq!(config.db.database, Database::EmbeddedSqlite);
        assert!(matches!(config.upstream, UpstreamTarget::InProcess(_)));
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let args = parse(&[]);
        let config = args.validate().expect("defaults are valid");
        assert_eq!(
            config.upstream,
            UpstreamTarget::InProcess(SimulatorConfig::default())
        );
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.lag_interval, lag::DEFAULT_INTERVAL);
        let local = ServeConfig::local();
        assert_eq!(config.grace, local.grace);
        assert_eq!(config.db.acquire_timeout, local.db.acquire_timeout);
        assert_eq!(config.diagnose, crate::diagnose::EngineConfig::default());
        let telemetry = args.telemetry.validate("holdup").expect("valid");
        let library = subscriber::TelemetryConfig::default();
        assert_eq!(telemetry.console_retention, library.console_retention);
        assert_eq!(telemetry.console_budget, library.console_budget);
    }

    #[test]
    fn out_of_range_names_the_flag() {
        let err = parse(&["--db-pool-size", "0"]).validate().unwrap_err();
        assert_eq!(err.flag, "--db-pool-size");
        let err = parse(&["--sim-error-rate", "1.5"]).validate().unwrap_err();
        assert_eq!(err.flag, "--sim-error-rate");
        let err = parse(&["--database-url", "mysql://x"])
            .validate()
            .unwrap_err();
        assert_eq!(err.flag, "--database-url");
    }

    #[test]
    fn a_rate_that_is_not_a_number_is_refused() {
        for flag in ["--sim-error-rate", "--sim-stall-rate"] {
            let err = parse(&[flag, "NaN"]).validate().unwrap_err();
            assert_eq!(err.flag, flag);
            assert!(err.reason.contains("0..=1"), "{}", err.reason);
        }
    }
}
