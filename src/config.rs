//! Typed configuration, validated before any port is bound.
//!
//! The CLI (`cli.rs`) parses flags and environment variables into these structs; everything
//! downstream takes a `ServeConfig` and never looks at flags again.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

/// Caps on lab parameters. They keep one lab RPC from becoming a denial of service; a flag can
/// raise each one for a deliberate experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest `CpuBound.work_ms`.
    pub max_cpu_ms: u32,
    /// Longest `SlowBackend.hold_ms`.
    pub max_hold_ms: u32,
    /// Longest `Sleep.duration_ms`.
    pub max_sleep_ms: u32,
    /// Most `UpstreamCall.max_retries`.
    pub max_retries: u32,
    /// Lab calls in flight at once, all RPCs together; more are refused with
    /// RESOURCE_EXHAUSTED instead of queueing without bound.
    pub max_in_flight: usize,
    /// In-flight limit of each costly RPC (CpuBound, SlowBackend, Sleep, UpstreamCall), so one
    /// flood cannot take every slot of the server-wide limit.
    pub max_in_flight_per_rpc: usize,
    /// Slots of `max_in_flight` that only `Fast` may take: the costly RPCs together hold at
    /// most `max_in_flight - reserved_for_fast`, so the canary answers while they are at
    /// their limit.
    pub reserved_for_fast: usize,
    /// Refuse the modes that block a lab worker on purpose (`CpuBound INLINE`, `Sleep
    /// BLOCKING`): on an exposed deployment one client could otherwise pin every worker, and
    /// no deadline can stop a poll that never returns.
    pub refuse_blocking_modes: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_cpu_ms: DEFAULT_MAX_CPU_MS,
            max_hold_ms: DEFAULT_MAX_HOLD_MS,
            max_sleep_ms: DEFAULT_MAX_SLEEP_MS,
            max_retries: DEFAULT_MAX_RETRIES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_rpc: DEFAULT_MAX_IN_FLIGHT_PER_RPC,
            reserved_for_fast: DEFAULT_RESERVED_FOR_FAST,
            refuse_blocking_modes: false,
        }
    }
}

/// Far above what 2 cores serve usefully, far below what exhausts memory (each call holds a
/// few KiB).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2_048;
/// Half the server-wide limit: one costly RPC can never starve the others (Fast included).
pub const DEFAULT_MAX_IN_FLIGHT_PER_RPC: usize = 1_024;
/// Room for the canary: 64 Fast calls in flight at once is more than a probe beside any load
/// sends (the load generator's probe keeps one or two), and a small share of 2 048.
pub const DEFAULT_RESERVED_FOR_FAST: usize = 64;

/// Ten seconds of hashing is far past any useful demonstration and still ends soon enough that a
/// mistaken call does not hold a worker for long.
pub const DEFAULT_MAX_CPU_MS: u32 = 10_000;
/// A connection held for ten seconds already shows pool starvation plainly.
pub const DEFAULT_MAX_HOLD_MS: u32 = 10_000;
/// Thirty seconds covers every timeout experiment while bounding a forgotten call.
pub const DEFAULT_MAX_SLEEP_MS: u32 = 30_000;
/// Five retries with exponential backoff already spans seconds; more only amplifies load.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// A small pool makes contention easy to reproduce with a handful of concurrent calls.
pub const DEFAULT_DB_POOL_SIZE: u32 = 4;
/// Rows seeded into the lab table: enough that an unindexed scan costs milliseconds, few enough
/// that seeding takes well under a second.
pub const DEFAULT_SEED_ROWS: u32 = 100_000;
/// Two seconds of waiting for a pool connection is already a failure worth reporting, and
/// long enough that a burst of a few times the pool size still gets served.
pub const DEFAULT_DB_ACQUIRE_TIMEOUT_MS: u64 = 2_000;
/// Jobs that may wait for a compute thread: a burst of a few dozen calls is absorbed, a flood
/// is refused at once rather than queued for seconds.
pub const DEFAULT_COMPUTE_QUEUE: usize = 64;
/// Ten seconds lets any CpuBound or SlowBackend call within its default cap finish, and stays
/// well inside Kubernetes' default 30 s between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE_MS: u64 = 10_000;
/// The gRPC port: loopback, so a lab that blocks on purpose is not exposed by accident.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50051));
/// The Prometheus endpoint: loopback, on the port OpenTelemetry's Prometheus exporters use.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));
/// `holdup upstream`'s HTTP port: loopback, on the usual port of a local HTTP service.
pub const DEFAULT_SIMULATOR_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// The simulated upstream's latency when neither a flag nor the call sets one: a typical
/// internal HTTP call, small enough that a load run is not dominated by it.
pub const DEFAULT_SIM_LATENCY_MS: u32 = 20;
/// How long a stalled upstream call hangs: longer than any default attempt timeout, so a stall
/// is always cut by the client's timeout, which is what the stall exists to show.
pub const DEFAULT_SIM_STALL_MS: u32 = 30_000;

/// Where SlowBackend's connections come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file in a temporary directory, removed at exit: works with nothing installed.
    EmbeddedSqlite,
    /// A database URL (`postgres://…` or `sqlite:…`).
    Url(String),
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub database: Database,
    /// Connections in the pool; the bound whose exhaustion SlowBackend demonstrates.
    pub pool_size: u32,
    /// How long a request waits for a connection before it is refused with UNAVAILABLE.
    pub acquire_timeout: Duration,
    pub seed_rows: u32,
}

/// The upstream simulator's default behaviour; each call may override any of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulatorConfig {
    pub latency_ms: u32,
    pub jitter_ms: u32,
    /// Fraction of calls answered with HTTP 503.
    pub error_rate: f64,
    /// Fraction of calls that stall for `stall_ms` before answering.
    pub stall_rate: f64,
    pub stall_ms: u32,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            latency_ms: DEFAULT_SIM_LATENCY_MS,
            jitter_ms: 0,
            error_rate: 0.0,
            stall_rate: 0.0,
            stall_ms: DEFAULT_SIM_STALL_MS,
        }
    }
}

/// Where UpstreamCall goes.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamTarget {
    /// Start a simulator in-process on a free loopback port.
    InProcess(SimulatorConfig),
    /// An already running `holdup upstream` (or any HTTP service with the same API).
    Url(String),
}

/// PEM files of the server's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// gRPC listen address; port 0 picks a free port (read it back after bind).
    pub listen: SocketAddr,
    /// Worker threads of the one runtime, which reads the sockets and runs the handlers. Small
    /// on purpose: the lessons are about what happens when those few workers are blocked.
    pub workers: usize,
    pub db: DatabaseConfig,
    /// Threads of the dedicated compute pool for `CpuBound COMPUTE_POOL`.
    pub compute_threads: usize,
    /// Jobs that may wait for a compute thread before further ones are refused.
    pub compute_queue: usize,
    pub upstream: UpstreamTarget,
    pub limits: Limits,
    /// How long in-flight requests may run after a shutdown signal.
    pub grace: Duration,
    /// After a shutdown signal, keep serving this long with health NOT_SERVING, so that load
    /// balancers stop sending before connections are closed.
    pub drain_delay: Duration,
    /// Serve gRPC over TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Where `/metrics` is served; `None` serves none.
    pub metrics_addr: Option<SocketAddr>,
    /// Period of the runtime lag probe.
    pub lag_interval: Duration,
    /// The diagnosis engine's thresholds (long poll, blame).
    pub diagnose: crate::diagnose::EngineConfig,
    /// Limits of every listener's connections (gRPC, metrics, in-process simulator).
    pub connections: crate::transport::ConnectionLimits,
    /// HTTP/2 streams one gRPC connection may have open at once.
    pub max_concurrent_streams: u32,
}

impl ServeConfig {
    /// A configuration for tests and examples: loopback port 0, embedded SQLite, in-process
    /// upstream, two lab workers.
    pub fn local() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 2,
            db: DatabaseConfig {
                database: Database::EmbeddedSqlite,
                pool_size: DEFAULT_DB_POOL_SIZE,
                acquire_timeout: millis(DEFAULT_DB_ACQUIRE_TIMEOUT_MS),
                seed_rows: 10_000,
            },
            compute_threads: 2,
            compute_queue: 16,
            upstream: UpstreamTarget::InProcess(SimulatorConfig::default()),
            limits: Limits::default(),
            grace: millis(DEFAULT_GRACE_MS),
            drain_delay: Duration::ZERO,
            tls: None,
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            lag_interval: crate::telemetry::lag::DEFAULT_INTERVAL,
            diagnose: crate::diagnose::EngineConfig::default(),
            connections: crate::transport::ConnectionLimits::default(),
            max_concurrent_streams: crate::transport::limits::DEFAULT_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// A configuration value outside what holdup can run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid value for {flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(flag: &'static str, reason: impl Into<String>) -> Self {
        Self {
            flag,
            reason: reason.into(),
        }
    }
}

/// Checks `value` lies in `min..=max`, naming the flag otherwise. A value that compares with
/// nothing (a float NaN) lies in no range and is refused.
///
/// # Errors
/// A [`ConfigError`] naming `flag` and the allowed range.
pub fn check_range<T>(flag: &'static str, value: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if !(min..=max).contains(&value) {
        return Err(ConfigError::new(
            flag,
            format!("{value} is outside {min}..={max}"),
        ));
    }
    Ok(value)
}

/// Milliseconds as the `Duration` the rest of the code uses.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A `Duration` constant as the whole milliseconds a `*_ms` flag takes, so that a flag's
/// default can name the constant the library uses.
pub const fn whole_ms(duration: Duration) -> u64 {
    // Every duration this is used on is a few seconds at most; u64 milliseconds hold 584
    // million years.
    duration.as_millis() as u64
}
