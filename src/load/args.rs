//! `holdup load`'s flags, validated into a [`LoadConfig`] before anything connects.
//!
//! The RPC is a subcommand (`holdup load cpu --mode inline --work-ms 50`) with flags of its
//! own, so clap itself refuses a flag of another RPC and `holdup load cpu --help` lists only
//! what applies, with its default. The flags of the run (target, schedule, window, probe,
//! output) are global: they may stand before or after the RPC.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::{
    LoadConfig, Plan, Window,
    rpc::RpcSpec,
    schedule::{Arrivals, Schedule},
};
use crate::{
    config::{ConfigError, ServeConfig, check_range},
    proto::{
        CpuBoundRequest, CpuMode, FastRequest, Query, SleepMode, SleepRequest, SlowBackendRequest,
        UpstreamCallRequest,
    },
};

/// Arrival rate when neither `--rate` nor `--concurrency` is given.
pub const DEFAULT_RATE: f64 = 100.0;
/// Most calls an open loop keeps in flight: far above what a lab server answers at once,
/// and a hard bound on the generator's memory.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1_024;
/// CpuBound work when neither `--work-ms` nor `--iterations` is given: long enough to show on
/// the probe, short enough that a 2-worker server still answers 100 calls/s of it.
pub const DEFAULT_WORK_MS: u32 = 10;
/// Sleep duration: a visible delay that still lets a short run complete many calls.
pub const DEFAULT_SLEEP_MS: u32 = 100;
/// SlowBackend hold: at 100 calls/s on the default pool of 4 this already queues.
pub const DEFAULT_HOLD_MS: u32 = 50;
/// The message Fast echoes back.
pub const DEFAULT_MESSAGE: &str = "load";

/// Load one RPC of a holdup server and report latency, throughput and errors.
#[derive(Debug, Clone, Args)]
#[command(
    subcommand_value_name = "RPC",
    subcommand_help_heading = "RPCs (default: fast)",
    next_help_heading = "Run"
)]
pub struct LoadArgs {
    /// The RPC to call, with its parameters.
    #[command(subcommand)]
    pub rpc: Option<RpcArgs>,
    /// Server to load, e.g. http://127.0.0.1:50051; default: start one in this process.
    #[arg(long, global = true, env = "HOLDUP_TARGET")]
    pub target: Option<String>,
    /// Open loop: calls per second, each timed from its intended send time (default 100/s).
    #[arg(long, global = true, env = "HOLDUP_LOAD_RATE")]
    pub rate: Option<f64>,
    /// Closed loop: this many callers, each sending when its last call returns.
    #[arg(
        long,
        global = true,
        env = "HOLDUP_LOAD_CONCURRENCY",
        conflicts_with = "rate"
    )]
    pub concurrency: Option<u32>,
    /// Open loop: evenly spaced (uniform) or random (poisson) arrivals at --rate.
    #[arg(long, global = true, value_enum, env = "HOLDUP_LOAD_ARRIVALS", default_value_t = Arrivals::Uniform)]
    pub arrivals: Arrivals,
    /// Open loop: most calls in flight; later calls wait for a slot (their wait counts in
    /// their latency) and those still waiting at the end are reported as unsent.
    #[arg(long, global = true, env = "HOLDUP_LOAD_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: u32,
    /// HTTP/2 connections the main load is spread over.
    #[arg(
        long,
        global = true,
        env = "HOLDUP_LOAD_CONNECTIONS",
        default_value_t = 1
    )]
    pub connections: usize,
    /// Measured time, e.g. 10s, 500ms, 2m (a bare number is seconds).
    #[arg(long, global = true, env = "HOLDUP_LOAD_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time sent but not measured, before the measured window.
    #[arg(long, global = true, env = "HOLDUP_LOAD_WARMUP", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Deadline sent with every call.
    #[arg(long, global = true, env = "HOLDUP_LOAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Also send Fast calls at this rate on a connection of their own, reported separately:
    /// the view of an innocent bystander.
    #[arg(long, global = true, alias = "probe", env = "HOLDUP_LOAD_PROBE_RATE")]
    pub probe_rate: Option<f64>,
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Lab workers of the in-process server (only without --target).
    #[arg(long, global = true)]
    pub workers: Option<usize>,
}

/// The RPC a run calls: one subcommand each, named as `holdup load` has always named them.
#[derive(Debug, Clone, Subcommand)]
pub enum RpcArgs {
    /// Fast: the canary, which does nothing (the default).
    Fast(FastArgs),
    /// Sleep: waits, on a timer (async) or by blocking its worker (blocking).
    Sleep(SleepArgs),
    /// CpuBound: hashes, on the worker or offloaded.
    Cpu(CpuArgs),
    /// SlowBackend: holds a pool connection and runs a query.
    Backend(BackendArgs),
    /// UpstreamCall: calls the HTTP upstream (simulator), with timeouts and retries.
    Upstream(UpstreamArgs),
}

impl Default for RpcArgs {
    fn default() -> Self {
        Self::Fast(FastArgs {
            message: DEFAULT_MESSAGE.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct FastArgs {
    /// The message echoed back.
    #[arg(long, default_value = DEFAULT_MESSAGE)]
    pub message: String,
}

/// Where CpuBound's work runs (`CpuMode` of the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuModeArg {
    /// On the runtime worker, in one poll: the mistake.
    Inline,
    /// spawn_blocking.
    #[value(alias = "blocking_pool")]
    BlockingPool,
    /// The bounded compute pool.
    #[value(alias = "compute_pool")]
    ComputePool,
    /// On the worker, yielding between slices.
    Cooperative,
}

impl From<CpuModeArg> for CpuMode {
    fn from(mode: CpuModeArg) -> Self {
        match mode {
            CpuModeArg::Inline => Self::Inline,
            CpuModeArg::BlockingPool => Self::BlockingPool,
            CpuModeArg::ComputePool => Self::ComputePool,
            CpuModeArg::Cooperative => Self::Cooperative,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CpuArgs {
    /// Where the work runs (any case; `blocking-pool` or `BLOCKING_POOL`).
    #[arg(long, value_enum, ignore_case = true, default_value_t = CpuModeArg::Inline)]
    pub mode: CpuModeArg,
    /// Milliseconds of hashing per call.
    #[arg(long, default_value_t = DEFAULT_WORK_MS)]
    pub work_ms: u32,
    /// Exact SHA-256 rounds per call instead of --work-ms.
    #[arg(long, conflicts_with = "work_ms")]
    pub iterations: Option<u64>,
}

/// How Sleep waits (`SleepMode` of the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SleepModeArg {
    /// Awaits a tokio timer.
    Async,
    /// std::thread::sleep on the worker: the mistake.
    Blocking,
}

impl From<SleepModeArg> for SleepMode {
    fn from(mode: SleepModeArg) -> Self {
        match mode {
            SleepModeArg::Async => Self::Async,
            SleepModeArg::Blocking => Self::Blocking,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SleepArgs {
    /// How the call waits (any case).
    #[arg(long, value_enum, ignore_case = true, default_value_t = SleepModeArg::Async)]
    pub mode: SleepModeArg,
    /// How long each call sleeps.
    #[arg(long, default_value_t = DEFAULT_SLEEP_MS)]
    pub duration_ms: u32,
}

/// SlowBackend's query (`Query` of the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryArg {
    /// No query: only the hold.
    #[value(alias = "query_none")]
    None,
    /// An indexed lookup of one row.
    Point,
    /// An unindexed scan of every row.
    Scan,
}

impl From<QueryArg> for Query {
    fn from(query: QueryArg) -> Self {
        match query {
            QueryArg::None => Self::None,
            QueryArg::Point => Self::Point,
            QueryArg::Scan => Self::Scan,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// How long each call holds its pool connection.
    #[arg(long, default_value_t = DEFAULT_HOLD_MS)]
    pub hold_ms: u32,
    /// The query run after the hold (any case).
    #[arg(long, value_enum, ignore_case = true, default_value_t = QueryArg::Point)]
    pub query: QueryArg,
    /// Row id for point (default 1), bucket for scan (default 0).
    #[arg(long)]
    pub key: Option<u32>,
}

/// Unset flags are left out of the request, so the server's defaults apply.
#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// The simulator's latency for each call.
    #[arg(long)]
    pub latency_ms: Option<u32>,
    /// Extra latency drawn from 0..=jitter.
    #[arg(long)]
    pub jitter_ms: Option<u32>,
    /// Fraction of calls the simulator answers with 503.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// Fraction of calls the simulator stalls.
    #[arg(long)]
    pub stall_rate: Option<f64>,
    /// Per-attempt timeout of the server's HTTP client.
    #[arg(long)]
    pub attempt_timeout_ms: Option<u32>,
    /// Retries after the first attempt.
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// A new HTTP client per call (the anti-pattern) instead of the shared one.
    #[arg(long)]
    pub new_client: bool,
}

impl RpcArgs {
    /// The request this RPC sends, exactly as it goes on the wire.
    pub fn spec(&self) -> RpcSpec {
        match self {
            Self::Fast(a) => RpcSpec::Fast(FastRequest {
                message: a.message.clone(),
            }),
            Self::Sleep(a) => RpcSpec::Sleep(SleepRequest {
                mode: SleepMode::from(a.mode).into(),
                duration_ms: a.duration_ms,
            }),
            Self::Cpu(a) => RpcSpec::Cpu(CpuBoundRequest {
                mode: CpuMode::from(a.mode).into(),
                work_ms: if a.iterations.is_some() { 0 } else { a.work_ms },
                iterations: a.iterations.unwrap_or(0),
            }),
            Self::Backend(a) => {
                let default_key = if a.query == QueryArg::Point { 1 } else { 0 };
                RpcSpec::Backend(SlowBackendRequest {
                    hold_ms: a.hold_ms,
                    query: Query::from(a.query).into(),
                    key: a.key.unwrap_or(default_key),
                })
            }
            Self::Upstream(a) => RpcSpec::Upstream(UpstreamCallRequest {
                latency_ms: a.latency_ms,
                jitter_ms: a.jitter_ms,
                error_rate: a.error_rate,
                stall_rate: a.stall_rate,
                attempt_timeout_ms: a.attempt_timeout_ms,
                max_retries: a.max_retries,
                new_client: a.new_client,
            }),
        }
    }
}

/// Parses `10s`, `250ms`, `2m`, `1.5s`, or a bare number of seconds.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 250ms or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1_000.0,
        "s" | "" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Longest run: a day is more than any experiment needs and keeps histograms sane.
const MAX_RUN: Duration = Duration::from_secs(86_400);

impl LoadArgs {
    /// # Errors
    /// A [`ConfigError`] naming the first flag out of range.
    pub fn validate(&self) -> Result<LoadConfig, ConfigError> {
        if let Some(url) = &self.target {
            super::target::endpoint(url)
                .map_err(|e| ConfigError::new("--target", e.to_string()))?;
            if self.workers.is_some() {
                return Err(ConfigError::new(
                    "--workers",
                    "sets the in-process server's workers; it cannot change a --target",
                ));
            }
        }
        let schedule = match self.concurrency {
            Some(concurrency) => Schedule::Closed {
                concurrency: check_range("--concurrency", concurrency, 1, 10_000)?,
            },
            None => Schedule::Open {
                rate: finite("--rate", self.rate.unwrap_or(DEFAULT_RATE), 0.1, 100_000.0)?,
                max_in_flight: check_range("--max-in-flight", self.max_in_flight, 1, 100_000)?,
                arrivals: self.arrivals,
            },
        };
        let timeout = (Duration::from_millis(1)..=Duration::from_secs(3_600))
            .contains(&self.timeout)
            .then_some(self.timeout)
            .ok_or_else(|| ConfigError::new("--timeout", "must be between 1ms and 1h"))?;
        let window = Window {
            warmup: (self.warmup <= Duration::from_secs(3_600))
                .then_some(self.warmup)
                .ok_or_else(|| ConfigError::new("--warmup", "must be at most 1h"))?,
            duration: (self.duration >= Duration::from_millis(100) && self.duration <= MAX_RUN)
                .then_some(self.duration)
                .ok_or_else(|| ConfigError::new("--duration", "must be between 100ms and 24h"))?,
        };
        let probe = self
            .probe_rate
            .map(|rate| {
                Ok::<_, ConfigError>(Plan {
                    call: RpcSpec::fast(),
                    schedule: Schedule::open(
                        finite("--probe-rate", rate, 0.1, 10_000.0)?,
                        DEFAULT_MAX_IN_FLIGHT,
                    ),
                    timeout,
                })
            })
            .transpose()?;
        let mut server = ServeConfig::local();
        if let Some(workers) = self.workers {
            server.workers = check_range("--workers", workers, 1, 256)?;
        }
        Ok(LoadConfig {
            target: self.target.clone(),
            server,
            main: Plan {
                call: self
                    .rpc
                    .as_ref()
                    .map_or_else(|| RpcArgs::default().spec(), RpcArgs::spec),
                schedule,
                timeout,
            },
            probe,
            window,
            connections: check_range("--connections", self.connections, 1, 256)?,
        })
    }
}

/// A rate in `min..=max`; NaN is refused too (it compares as neither in nor out of range).
fn finite(flag: &'static str, value: f64, min: f64, max: f64) -> Result<f64, ConfigError> {
    if value.is_nan() {
        return Err(ConfigError::new(flag, "is not a number"));
    }
    check_range(flag, value, min, max)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> LoadArgs {
        let mut all = vec!["load"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("flags parse").load
    }

    #[test]
    fn defaults_are_an_open_loop_of_fast_calls() {
        let config = parse(&[]).validate().expect("defaults are valid");
        assert_eq!(
            config.main.call,
            RpcSpec::Fast(FastRequest {
                message: "load".into()
            })
        );
        assert_eq!(
            config.main.schedule,
            Schedule::open(DEFAULT_RATE, DEFAULT_MAX_IN_FLIGHT)
        );
        assert_eq!(config.window.duration, Duration::from_secs(10));
        assert!(config.probe.is_none());
        assert!(config.target.is_none());
    }

    #[test]
    fn rpc_parameters_build_the_request() {
        let config = parse(&[
            "cpu",
            "--mode",
            "blocking-pool",
            "--work-ms",
            "50",
            "--concurrency",
            "4",
        ])
        .validate()
        .expect("valid");
        assert_eq!(config.main.call, RpcSpec::cpu(CpuMode::BlockingPool, 50));
        assert_eq!(config.main.schedule, Schedule::Closed { concurrency: 4 });
        // The run's flags may stand before the RPC too; modes in any case, `_` or `-`.
        let config = parse(&["--concurrency", "4", "cpu", "--mode", "COMPUTE_POOL"])
            .validate()
            .expect("valid");
        assert_eq!(
            config.main.call,
            RpcSpec::cpu(CpuMode::ComputePool, DEFAULT_WORK_MS)
        );
        assert_eq!(config.main.schedule, Schedule::Closed { concurrency: 4 });
        let config = parse(&["sleep", "--mode", "BLOCKING", "--duration-ms", "100"])
            .validate()
            .expect("valid");
        assert_eq!(config.main.call, RpcSpec::sleep(SleepMode::Blocking, 100));
        let config = parse(&["backend", "--hold-ms", "20", "--query", "scan"])
            .validate()
            .expect("valid");
        assert_eq!(config.main.call, RpcSpec::backend(20, Query::Scan, 0));
        let config = parse(&["backend", "--query", "NONE"])
            .validate()
            .expect("valid");
        assert_eq!(
            config.main.call,
            RpcSpec::backend(DEFAULT_HOLD_MS, Query::None, 0)
        );
        let config = parse(&["upstream", "--max-retries", "3", "--new-client"])
            .validate()
            .expect("valid");
        assert_eq!(
            config.main.call,
            RpcSpec::Upstream(UpstreamCallRequest {
                max_retries: Some(3),
                new_client: true,
                ..UpstreamCallRequest::default()
            })
        );
    }

    #[test]
    fn a_flag_of_another_rpc_is_refused_by_name() {
        for (args, flag) in [
            (&["sleep", "--work-ms", "5"][..], "--work-ms"),
            (&["cpu", "--max-retries", "2"][..], "--max-retries"),
            (&["upstream", "--hold-ms", "2"][..], "--hold-ms"),
            (&["cpu", "--mode", "sideways"][..], "sideways"),
            (&["sleep", "--mode", "inline"][..], "inline"),
        ] {
            let mut all = vec!["load"];
            all.extend_from_slice(args);
            let err = Cli::try_parse_from(all).expect_err("refused");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn values_out_of_range_are_refused_by_name() {
        let err = parse(&["--rate", "0"]).validate().unwrap_err();
        assert_eq!(err.flag, "--rate");
        let err = parse(&["--target", "localhost:50051"])
            .validate()
            .unwrap_err();
        assert_eq!(err.flag, "--target");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn the_probe_is_fast_at_its_own_rate() {
        let config = parse(&["--probe-rate", "50"]).validate().expect("valid");
        let probe = config.probe.expect("probe planned");
        assert_eq!(probe.call, RpcSpec::fast());
        assert_eq!(probe.schedule.offered_rate(), Some(50.0));
    }
}
