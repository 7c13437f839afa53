//! `holdup load`'s flags, validated into a [`LoadConfig`] before anything connects.
//!
//! RPC parameters are flags of their own (`--mode`, `--work-ms`, `--hold-ms`, …); a flag that
//! does not belong to the chosen `--rpc` is refused rather than silently ignored.

use std::time::Duration;

use clap::{Args, ValueEnum};

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
/// CpuBound work when neither `--work-ms` nor `--iterations` is given.
pub const DEFAULT_WORK_MS: u32 = 10;

/// The RPCs `--rpc` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RpcName {
    Fast,
    Sleep,
    Cpu,
    Backend,
    Upstream,
}

/// Load one RPC of a holdup server and report latency, throughput and errors.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server to load, e.g. http://127.0.0.1:50051; default: start one in this process.
    #[arg(long, env = "HOLDUP_TARGET")]
    pub target: Option<String>,
    /// The RPC to call.
    #[arg(long, value_enum, default_value_t = RpcName::Fast)]
    pub rpc: RpcName,
    /// cpu: INLINE, BLOCKING_POOL, COMPUTE_POOL or COOPERATIVE (default INLINE);
    /// sleep: ASYNC or BLOCKING (default ASYNC).
    #[arg(long)]
    pub mode: Option<String>,
    /// cpu: milliseconds of hashing per call (default 10).
    #[arg(long)]
    pub work_ms: Option<u32>,
    /// cpu: exact SHA-256 rounds per call instead of --work-ms.
    #[arg(long, conflicts_with = "work_ms")]
    pub iterations: Option<u64>,
    /// sleep: how long each call sleeps (default 100).
    #[arg(long)]
    pub duration_ms: Option<u32>,
    /// backend: how long each call holds its pool connection (default 50).
    #[arg(long)]
    pub hold_ms: Option<u32>,
    /// backend: NONE, POINT or SCAN (default POINT).
    #[arg(long)]
    pub query: Option<String>,
    /// backend: row id for POINT (default 1), bucket for SCAN (default 0).
    #[arg(long)]
    pub key: Option<u32>,
    /// fast: the message echoed back.
    #[arg(long)]
    pub message: Option<String>,
    /// upstream: the simulator's latency for each call.
    #[arg(long)]
    pub latency_ms: Option<u32>,
    /// upstream: extra latency drawn from 0..=jitter.
    #[arg(long)]
    pub jitter_ms: Option<u32>,
    /// upstream: fraction of calls the simulator answers with 503.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// upstream: fraction of calls the simulator stalls.
    #[arg(long)]
    pub stall_rate: Option<f64>,
    /// upstream: per-attempt timeout of the server's HTTP client.
    #[arg(long)]
    pub attempt_timeout_ms: Option<u32>,
    /// upstream: retries after the first attempt.
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// upstream: a new HTTP client per call (the anti-pattern) instead of the shared one.
    #[arg(long)]
    pub new_client: bool,

    /// Open loop: calls per second, each timed from its intended send time (default 100/s).
    #[arg(long, env = "HOLDUP_LOAD_RATE")]
    pub rate: Option<f64>,
    /// Closed loop: this many callers, each sending when its last call returns.
    #[arg(long, env = "HOLDUP_LOAD_CONCURRENCY", conflicts_with = "rate")]
    pub concurrency: Option<u32>,
    /// Open loop: evenly spaced (uniform) or random (poisson) arrivals at --rate.
    #[arg(long, value_enum, env = "HOLDUP_LOAD_ARRIVALS", default_value_t = Arrivals::Uniform)]
    pub arrivals: Arrivals,
    /// Open loop: most calls in flight; later calls wait for a slot (their wait counts in
    /// their latency) and those still waiting at the end are reported as unsent.
    #[arg(long, env = "HOLDUP_LOAD_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: u32,
    /// HTTP/2 connections the main load is spread over.
    #[arg(long, env = "HOLDUP_LOAD_CONNECTIONS", default_value_t = 1)]
    pub connections: usize,
    /// Measured time, e.g. 10s, 500ms, 2m (a bare number is seconds).
    #[arg(long, env = "HOLDUP_LOAD_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time sent but not measured, before the measured window.
    #[arg(long, env = "HOLDUP_LOAD_WARMUP", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Deadline sent with every call.
    #[arg(long, env = "HOLDUP_LOAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Also send Fast calls at this rate on a connection of their own, reported separately:
    /// the view of an innocent bystander.
    #[arg(long, alias = "probe", env = "HOLDUP_LOAD_PROBE_RATE")]
    pub probe_rate: Option<f64>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Lab workers of the in-process server (only without --target).
    #[arg(long)]
    pub workers: Option<usize>,
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
    /// A [`ConfigError`] naming the first flag out of range or not meant for `--rpc`.
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
                call: self.call()?,
                schedule,
                timeout,
            },
            probe,
            window,
            connections: check_range("--connections", self.connections, 1, 256)?,
        })
    }

    /// The request the chosen RPC sends, from the flags that belong to it.
    fn call(&self) -> Result<RpcSpec, ConfigError> {
        let rpc = self.rpc;
        let given: [(&'static str, bool, &[RpcName]); 14] = [
            (
                "--mode",
                self.mode.is_some(),
                &[RpcName::Cpu, RpcName::Sleep],
            ),
            ("--work-ms", self.work_ms.is_some(), &[RpcName::Cpu]),
            ("--iterations", self.iterations.is_some(), &[RpcName::Cpu]),
            (
                "--duration-ms",
                self.duration_ms.is_some(),
                &[RpcName::Sleep],
            ),
            ("--hold-ms", self.hold_ms.is_some(), &[RpcName::Backend]),
            ("--query", self.query.is_some(), &[RpcName::Backend]),
            ("--key", self.key.is_some(), &[RpcName::Backend]),
            ("--message", self.message.is_some(), &[RpcName::Fast]),
            (
                "--latency-ms",
                self.latency_ms.is_some(),
                &[RpcName::Upstream],
            ),
            (
                "--jitter-ms",
                self.jitter_ms.is_some(),
                &[RpcName::Upstream],
            ),
            (
                "--error-rate",
                self.error_rate.is_some(),
                &[RpcName::Upstream],
            ),
            (
                "--stall-rate",
                self.stall_rate.is_some(),
                &[RpcName::Upstream],
            ),
            (
                "--attempt-timeout-ms",
                self.attempt_timeout_ms.is_some() || self.max_retries.is_some(),
                &[RpcName::Upstream],
            ),
            ("--new-client", self.new_client, &[RpcName::Upstream]),
        ];
        for (flag, present, applies_to) in given {
            if present && !applies_to.contains(&rpc) {
                let names: Vec<String> = applies_to
                    .iter()
                    .filter_map(|r| r.to_possible_value().map(|v| v.get_name().to_owned()))
                    .collect();
                return Err(ConfigError::new(
                    flag,
                    format!("applies to --rpc {} only", names.join(" or ")),
                ));
            }
        }
        Ok(match rpc {
            RpcName::Fast => RpcSpec::Fast(FastRequest {
                message: self.message.clone().unwrap_or_else(|| "load".into()),
            }),
            RpcName::Sleep => RpcSpec::Sleep(SleepRequest {
                mode: enum_flag("--mode", self.mode.as_deref(), SleepMode::Async, |s| {
                    SleepMode::from_str_name(s).filter(|m| *m != SleepMode::Unspecified)
                })?
                .into(),
                duration_ms: self.duration_ms.unwrap_or(100),
            }),
            RpcName::Cpu => RpcSpec::Cpu(CpuBoundRequest {
                mode: enum_flag("--mode", self.mode.as_deref(), CpuMode::Inline, |s| {
                    CpuMode::from_str_name(s).filter(|m| *m != CpuMode::Unspecified)
                })?
                .into(),
                work_ms: match self.iterations {
                    Some(_) => 0,
                    None => self.work_ms.unwrap_or(DEFAULT_WORK_MS),
                },
                iterations: self.iterations.unwrap_or(0),
            }),
            RpcName::Backend => {
                let query = enum_flag("--query", self.query.as_deref(), Query::Point, |s| {
                    Query::from_str_name(if s == "NONE" { "QUERY_NONE" } else { s })
                })?;
                let default_key = if query == Query::Point { 1 } else { 0 };
                RpcSpec::Backend(SlowBackendRequest {
                    hold_ms: self.hold_ms.unwrap_or(50),
                    query: query.into(),
                    key: self.key.unwrap_or(default_key),
                })
            }
            RpcName::Upstream => RpcSpec::Upstream(UpstreamCallRequest {
                latency_ms: self.latency_ms,
                jitter_ms: self.jitter_ms,
                error_rate: self.error_rate,
                stall_rate: self.stall_rate,
                attempt_timeout_ms: self.attempt_timeout_ms,
                max_retries: self.max_retries,
                new_client: self.new_client,
            }),
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

/// Parses an enum flag case-insensitively, `-` or `_` alike (`blocking-pool`, `BLOCKING_POOL`).
fn enum_flag<T>(
    flag: &'static str,
    value: Option<&str>,
    default: T,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let normalised = value.trim().to_ascii_uppercase().replace('-', "_");
    parse(&normalised)
        .ok_or_else(|| ConfigError::new(flag, format!("{value:?} is not a known value")))
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
            "--rpc",
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
        let config = parse(&[
            "--rpc",
            "sleep",
            "--mode",
            "BLOCKING",
            "--duration-ms",
            "100",
        ])
        .validate()
        .expect("valid");
        assert_eq!(config.main.call, RpcSpec::sleep(SleepMode::Blocking, 100));
        let config = parse(&["--rpc", "backend", "--hold-ms", "20", "--query", "scan"])
            .validate()
            .expect("valid");
        assert_eq!(config.main.call, RpcSpec::backend(20, Query::Scan, 0));
    }

    #[test]
    fn a_flag_for_another_rpc_is_refused_by_name() {
        let err = parse(&["--rpc", "sleep", "--work-ms", "5"])
            .validate()
            .unwrap_err();
        assert_eq!(err.flag, "--work-ms");
        let err = parse(&["--rpc", "cpu", "--mode", "sideways"])
            .validate()
            .unwrap_err();
        assert_eq!(err.flag, "--mode");
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
