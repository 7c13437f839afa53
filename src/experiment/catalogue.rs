//! The catalogue: each cause of delay as a pressure load, before and after its fix, plus a
//! fast-only baseline. Every experiment runs with a `Fast` probe beside its pressure.
//!
//! A "before" and its "after" send exactly the same load, so the difference is the fix alone.
//! Blocking sleeps run one caller per lab worker, so that every worker is taken. CPU work runs
//! as a Poisson open loop that keeps half the workers' time busy: enough that inline work still
//! takes every worker now and then, little enough that offloaded work leaves the machine's
//! cores free for everyone else (on two cores, hashing on both would delay the probe through
//! the OS scheduler whatever the fix, and hide the lesson).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    config::{ServeConfig, SimulatorConfig, UpstreamTarget},
    diagnose::Verdict,
    load::{
        Plan,
        args::DEFAULT_MAX_IN_FLIGHT,
        rpc::RpcSpec,
        schedule::{Arrivals, Schedule},
    },
    proto::{CpuMode, Query, SleepMode, UpstreamCallRequest},
};

/// How long and how hard the catalogue runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub quick: bool,
    /// The probe alone, before the pressure starts.
    pub alone: Duration,
    /// Pressure and probe run, unmeasured, for this long first.
    pub warmup: Duration,
    /// The measured window under pressure.
    pub duration: Duration,
    /// Fast probe calls per second: enough for a p99 of a few hundred samples.
    pub probe_rate: f64,
    /// Lab workers of the server: one blocking caller per worker takes them all.
    pub workers: u32,
    /// How long a stalled upstream call hangs (in-process simulator).
    pub stall_ms: u32,
}

impl Scale {
    /// About two minutes for the whole catalogue on two cores.
    pub fn full(workers: u32) -> Self {
        Self {
            quick: false,
            alone: Duration::from_millis(1_500),
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(6),
            probe_rate: 100.0,
            workers,
            stall_ms: 2_000,
        }
    }

    /// A few seconds per experiment: for tests and a first look.
    pub fn quick(workers: u32) -> Self {
        Self {
            quick: true,
            alone: Duration::from_millis(500),
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(1_200),
            probe_rate: 200.0,
            workers,
            stall_ms: 600,
        }
    }
}

/// An experiment's place in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// No cause at all: what the probe sees under harmless load.
    Baseline,
    /// The mistake.
    Cause,
    /// The same load, done right.
    Fix,
}

/// One experiment.
#[derive(Debug, Clone, Copy)]
pub struct Experiment {
    pub id: &'static str,
    pub group: &'static str,
    pub role: Role,
    pub title: &'static str,
    /// What it shows, in a sentence.
    pub question: &'static str,
    /// For a fix, the id of the cause it fixes: its conclusion compares the two.
    pub fixes: Option<&'static str>,
    /// A change to the in-process server's configuration. Experiments with one cannot run
    /// against a `--target`, whose configuration holdup cannot change.
    pub server: Option<fn(&mut ServeConfig)>,
    pub pressure: fn(&Scale) -> Plan,
    /// What a correct diagnosis says: the answer key the measured verdicts are scored against.
    pub expect: Expect,
}

/// The verdicts a correct diagnosis gives: every pressure call's, and every late probe's
/// (`none` for a probe: it should not be late at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub pressure: Verdict,
    pub probe: Verdict,
}

const fn expect(pressure: Verdict, probe: Verdict) -> Expect {
    Expect { pressure, probe }
}

/// The configuration every in-process experiment server starts from.
pub fn base_config(scale: &Scale) -> ServeConfig {
    let mut config = ServeConfig::local();
    config.workers = scale.workers as usize;
    config.db.seed_rows = 10_000;
    // Nothing in flight matters once an experiment is over.
    config.grace = Duration::from_secs(2);
    config.upstream = UpstreamTarget::InProcess(SimulatorConfig {
        stall_ms: scale.stall_ms,
        ..SimulatorConfig::default()
    });
    config
}

/// The probe every experiment runs beside its pressure.
pub fn probe(scale: &Scale) -> Plan {
    Plan {
        call: RpcSpec::fast(),
        schedule: Schedule::open(scale.probe_rate, DEFAULT_MAX_IN_FLIGHT),
        timeout: PRESSURE_TIMEOUT,
    }
}

/// Deadline of every experiment call: far above any latency the catalogue provokes.
pub const PRESSURE_TIMEOUT: Duration = Duration::from_secs(10);
/// The baseline's load: well within what two cores answer with every call under a millisecond
/// (at 500/s beside the probe and the in-process load generator, one call in seven waited longer
/// for the transport thread, and the baseline stopped being harmless).
const FAST_ONLY_RATE: f64 = 200.0;
/// How long each blocking or waiting call lasts.
const SLEEP_MS: u32 = 100;
/// CPU work per call: long enough to dwarf a Fast call, short enough for many samples.
const CPU_MS: u32 = 50;
/// Pool connection hold time, and the callers that compete for connections.
const HOLD_MS: u32 = 50;
const BACKEND_CALLERS: u32 = 4;
/// Share of the lab workers' time the CPU pressure asks for.
const CPU_SHARE: f64 = 0.5;
/// Upstream: simulated latency and jitter, the share of calls that stall, and the retrying
/// client's per-attempt timeout.
const UPSTREAM_LATENCY_MS: u32 = 20;
const UPSTREAM_JITTER_MS: u32 = 10;
/// The client experiment's upstream answers quickly and steadily, so that the client's own
/// cost shows.
const CLIENT_LATENCY_MS: u32 = 5;
const STALL_RATE: f64 = 0.05;
const ATTEMPT_TIMEOUT_MS: u32 = 150;
const RETRIES: u32 = 2;
/// Without a timeout the client waits as long as the simulator may stall (its maximum).
const NO_TIMEOUT_MS: u32 = crate::lab::upstream::MAX_ATTEMPT_TIMEOUT_MS;

fn closed(call: RpcSpec, concurrency: u32) -> Plan {
    Plan {
        call,
        schedule: Schedule::Closed { concurrency },
        timeout: PRESSURE_TIMEOUT,
    }
}

fn open(call: RpcSpec, rate: f64) -> Plan {
    Plan {
        call,
        schedule: Schedule::open(rate, DEFAULT_MAX_IN_FLIGHT),
        timeout: PRESSURE_TIMEOUT,
    }
}

/// An UpstreamCall with the simulator's behaviour and the client's settings spelled out.
fn upstream(
    latency_ms: u32,
    jitter_ms: u32,
    stall_rate: f64,
    attempt_timeout_ms: u32,
    max_retries: u32,
    new_client: bool,
) -> RpcSpec {
    RpcSpec::Upstream(UpstreamCallRequest {
        latency_ms: Some(latency_ms),
        jitter_ms: Some(jitter_ms),
        error_rate: Some(0.0),
        stall_rate: Some(stall_rate),
        attempt_timeout_ms: Some(attempt_timeout_ms),
        max_retries: Some(max_retries),
        new_client,
    })
}

/// CPU pressure: a Poisson open loop that keeps [`CPU_SHARE`] of the lab workers busy hashing.
/// Random arrivals overlap now and then, so inline work still takes every worker at times
/// (evenly spaced ones would never overlap and hide the problem); offloaded, the same load
/// leaves the machine's cores room for everyone else, so what the fix changes is visible and
/// not drowned by a saturated machine.
fn cpu(mode: CpuMode, scale: &Scale) -> Plan {
    let rate = f64::from(scale.workers) * CPU_SHARE * 1_000.0 / f64::from(CPU_MS);
    Plan {
        call: RpcSpec::cpu(mode, CPU_MS),
        schedule: Schedule::Open {
            rate,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            arrivals: Arrivals::Poisson,
        },
        timeout: PRESSURE_TIMEOUT,
    }
}

/// Every experiment, in the order they run and are reported.
pub fn catalogue() -> Vec<Experiment> {
    vec![
        Experiment {
            id: "fast-only",
            group: "baseline",
            role: Role::Baseline,
            title: "Fast calls only",
            question: "What does the probe see when the only load is other Fast calls?",
            fixes: None,
            server: None,
            pressure: |_| open(RpcSpec::fast(), FAST_ONLY_RATE),
            expect: expect(Verdict::None, Verdict::None),
        },
        Experiment {
            id: "sleep-blocking",
            group: "sleep",
            role: Role::Cause,
            title: "Sleep BLOCKING (std::thread::sleep in a handler)",
            question: "Does a blocking sleep on every worker delay unrelated requests?",
            fixes: None,
            server: None,
            pressure: |s| closed(RpcSpec::sleep(SleepMode::Blocking, SLEEP_MS), s.workers),
            expect: expect(Verdict::BlockingCall, Verdict::RuntimeContention),
        },
        Experiment {
            id: "sleep-blocking-one",
            group: "sleep",
            role: Role::Cause,
            title: "Sleep BLOCKING on one worker only",
            question: "Does one blocked worker delay requests the other workers could serve?",
            fixes: None,
            server: None,
            // One caller: one worker blocked at a time, the others free. On one runtime a
            // request whose connection sits in the blocked worker's LIFO slot (which no other
            // worker may steal) or its local queue waits all the same, and says who held it.
            pressure: |_| closed(RpcSpec::sleep(SleepMode::Blocking, SLEEP_MS), 1),
            expect: expect(Verdict::BlockingCall, Verdict::RuntimeContention),
        },
        Experiment {
            id: "sleep-async",
            group: "sleep",
            role: Role::Fix,
            title: "Sleep ASYNC (tokio::time::sleep)",
            question: "Does an awaited sleep of the same length delay anyone?",
            fixes: Some("sleep-blocking"),
            server: None,
            pressure: |s| closed(RpcSpec::sleep(SleepMode::Async, SLEEP_MS), s.workers),
            expect: expect(Verdict::Timer, Verdict::None),
        },
        Experiment {
            id: "cpu-inline",
            group: "cpu",
            role: Role::Cause,
            title: "CpuBound INLINE (hashing on the runtime worker)",
            question: "Does CPU work on the runtime workers delay unrelated requests?",
            fixes: None,
            server: None,
            pressure: |s| cpu(CpuMode::Inline, s),
            expect: expect(Verdict::OwnCpu, Verdict::RuntimeContention),
        },
        Experiment {
            id: "cpu-blocking-pool",
            group: "cpu",
            role: Role::Fix,
            title: "CpuBound BLOCKING_POOL (spawn_blocking)",
            question: "Does moving the same work to spawn_blocking free the runtime?",
            fixes: Some("cpu-inline"),
            server: None,
            pressure: |s| cpu(CpuMode::BlockingPool, s),
            expect: expect(Verdict::OffloadedCpu, Verdict::None),
        },
        Experiment {
            id: "cpu-compute-pool",
            group: "cpu",
            role: Role::Fix,
            title: "CpuBound COMPUTE_POOL (bounded dedicated pool)",
            question: "Does a bounded compute pool free the runtime too?",
            fixes: Some("cpu-inline"),
            server: None,
            pressure: |s| cpu(CpuMode::ComputePool, s),
            expect: expect(Verdict::OffloadedCpu, Verdict::None),
        },
        Experiment {
            id: "cpu-cooperative",
            group: "cpu",
            role: Role::Fix,
            title: "CpuBound COOPERATIVE (inline, yielding every slice)",
            question: "Does yielding often enough let others through, even inline?",
            fixes: Some("cpu-inline"),
            server: None,
            pressure: |s| cpu(CpuMode::Cooperative, s),
            expect: expect(Verdict::OwnCpu, Verdict::None),
        },
        Experiment {
            id: "pool-size-1",
            group: "pool",
            role: Role::Cause,
            title: "SlowBackend with a pool of 1 connection",
            question: "What does a too-small connection pool cost its callers, and who else pays?",
            fixes: None,
            server: Some(|c| c.db.pool_size = 1),
            pressure: |_| closed(RpcSpec::backend(HOLD_MS, Query::Point, 1), BACKEND_CALLERS),
            expect: expect(Verdict::ResourceQueue, Verdict::None),
        },
        Experiment {
            id: "pool-size-enough",
            group: "pool",
            role: Role::Fix,
            title: "SlowBackend with one connection per caller",
            question: "Does a pool as large as the concurrency remove the queue?",
            fixes: Some("pool-size-1"),
            server: Some(|c| c.db.pool_size = BACKEND_CALLERS),
            pressure: |_| closed(RpcSpec::backend(HOLD_MS, Query::Point, 1), BACKEND_CALLERS),
            expect: expect(Verdict::Backend, Verdict::None),
        },
        Experiment {
            id: "upstream-no-timeout",
            group: "upstream",
            role: Role::Cause,
            title: "UpstreamCall to a stalling upstream, no timeout, no retry",
            question: "How far does a rare upstream stall push the tail without a timeout?",
            fixes: None,
            server: None,
            pressure: |_| {
                open(
                    upstream(
                        UPSTREAM_LATENCY_MS,
                        UPSTREAM_JITTER_MS,
                        STALL_RATE,
                        NO_TIMEOUT_MS,
                        0,
                        false,
                    ),
                    40.0,
                )
            },
            expect: expect(Verdict::Upstream, Verdict::None),
        },
        Experiment {
            id: "upstream-timeout-retry",
            group: "upstream",
            role: Role::Fix,
            title: "UpstreamCall with a 150 ms attempt timeout and 2 retries",
            question: "Do a short attempt timeout and a retry cut the stalled tail?",
            fixes: Some("upstream-no-timeout"),
            server: None,
            pressure: |_| {
                open(
                    upstream(
                        UPSTREAM_LATENCY_MS,
                        UPSTREAM_JITTER_MS,
                        STALL_RATE,
                        ATTEMPT_TIMEOUT_MS,
                        RETRIES,
                        false,
                    ),
                    40.0,
                )
            },
            expect: expect(Verdict::Upstream, Verdict::None),
        },
        Experiment {
            id: "upstream-new-client",
            group: "upstream-client",
            role: Role::Cause,
            title: "UpstreamCall with a new HTTP client per request",
            question: "What does building a client (and a connection) per request cost?",
            fixes: None,
            server: None,
            pressure: |_| open(upstream(CLIENT_LATENCY_MS, 0, 0.0, 1_000, 0, true), 100.0),
            expect: expect(Verdict::Upstream, Verdict::None),
        },
        Experiment {
            id: "upstream-shared-client",
            group: "upstream-client",
            role: Role::Fix,
            title: "UpstreamCall with the shared pooled client",
            question: "Does reusing one pooled client remove that cost?",
            fixes: Some("upstream-new-client"),
            server: None,
            pressure: |_| open(upstream(CLIENT_LATENCY_MS, 0, 0.0, 1_000, 0, false), 100.0),
            expect: expect(Verdict::Upstream, Verdict::None),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_fixes_point_at_causes() {
        let all = catalogue();
        for (i, e) in all.iter().enumerate() {
            assert!(all[..i].iter().all(|o| o.id != e.id), "{} twice", e.id);
            if let Some(cause) = e.fixes {
                let before = all.iter().find(|o| o.id == cause).expect("cause listed");
                assert_eq!(before.role, Role::Cause);
                assert_eq!(before.group, e.group);
                assert_eq!(e.role, Role::Fix);
            }
        }
    }

    fn pressure(id: &str, scale: &Scale) -> Plan {
        let all = catalogue();
        let experiment = all.iter().find(|e| e.id == id).expect("listed");
        (experiment.pressure)(scale)
    }

    #[test]
    fn blocking_sleep_takes_every_worker() {
        let scale = Scale::quick(3);
        assert_eq!(
            pressure("sleep-blocking", &scale).schedule,
            Schedule::Closed { concurrency: 3 }
        );
    }

    #[test]
    fn cpu_pressure_keeps_half_the_workers_busy_in_every_mode() {
        let scale = Scale::quick(2);
        for id in [
            "cpu-inline",
            "cpu-blocking-pool",
            "cpu-compute-pool",
            "cpu-cooperative",
        ] {
            // 2 workers x 50 % / 50 ms of work = 20 calls a second.
            assert_eq!(
                pressure(id, &scale).schedule.offered_rate(),
                Some(20.0),
                "{id}"
            );
        }
    }
}
