//! `holdup upstream`: an HTTP service that is slow, jittery, failing or stalled on demand.
//!
//! `GET /work?latency_ms=&jitter_ms=&error_rate=&stall_rate=` answers after `latency_ms` plus
//! a uniform `0..=jitter_ms`; a `stall_rate` fraction of calls first hang for the simulator's
//! stall time, and an `error_rate` fraction answer 503. Parameters left out take the
//! simulator's flags. `GET /healthz` answers 200.

use std::{future::Future, io, net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config::SimulatorConfig;

/// Longest latency or jitter one call may ask for.
pub const MAX_LATENCY_MS: u32 = 60_000;

/// Per-call overrides of the simulator's behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
pub struct WorkParams {
    pub latency_ms: Option<u32>,
    pub jitter_ms: Option<u32>,
    pub error_rate: Option<f64>,
    pub stall_rate: Option<f64>,
}

/// What `/work` answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkReply {
    /// Time the simulator spent on the call.
    pub served_us: u64,
    pub stalled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one call will do, drawn before any await (the RNG is not `Send`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fate {
    stall: Option<Duration>,
    delay: Duration,
    fail: bool,
}

fn fate(config: &SimulatorConfig, params: &WorkParams) -> Result<Fate, String> {
    let latency = params.latency_ms.unwrap_or(config.latency_ms);
    let jitter = params.jitter_ms.unwrap_or(config.jitter_ms);
    let error_rate = params.error_rate.unwrap_or(config.error_rate);
    let stall_rate = params.stall_rate.unwrap_or(config.stall_rate);
    if latency > MAX_LATENCY_MS || jitter > MAX_LATENCY_MS {
        return Err(format!(
            "latency_ms and jitter_ms must be in 0..={MAX_LATENCY_MS}"
        ));
    }
    for (name, rate) in [("error_rate", error_rate), ("stall_rate", stall_rate)] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("{name} must be in 0.0..=1.0, got {rate}"));
        }
    }
    let mut rng = rand::rng();
    let extra = if jitter == 0 {
        0
    } else {
        rng.random_range(0..=jitter)
    };
    Ok(Fate {
        stall: rng
            .random_bool(stall_rate)
            .then(|| Duration::from_millis(u64::from(config.stall_ms))),
        delay: Duration::from_millis(u64::from(latency) + u64::from(extra)),
        fail: rng.random_bool(error_rate),
    })
}

async fn work(State(config): State<SimulatorConfig>, Query(params): Query<WorkParams>) -> Response {
    let started = std::time::Instant::now();
    let fate = match fate(&config, &params) {
        Ok(fate) => fate,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    if let Some(stall) = fate.stall {
        tokio::time::sleep(stall).await;
    }
    tokio::time::sleep(fate.delay).await;
    let reply = WorkReply {
        served_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        stalled: fate.stall.is_some(),
        error: fate.fail.then(|| "simulated failure".to_owned()),
    };
    let status = if fate.fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(reply)).into_response()
}

pub fn router(config: SimulatorConfig) -> Router {
    Router::new()
        .route("/work", get(work))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(config)
}

/// A bound simulator: its address is known before it serves.
#[derive(Debug)]
pub struct Simulator {
    listener: TcpListener,
    config: SimulatorConfig,
}

impl Simulator {
    /// # Errors
    /// The I/O error if `addr` cannot be bound.
    pub async fn bind(addr: SocketAddr, config: SimulatorConfig) -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            config,
        })
    }

    /// # Errors
    /// The I/O error if the listener has no local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish.
    ///
    /// # Errors
    /// The I/O error that stopped the server.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        axum::serve(self.listener, router(self.config))
            .with_graceful_shutdown(shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_failure_and_stall() {
        let config = SimulatorConfig::default();
        let params = WorkParams {
            latency_ms: Some(5),
            jitter_ms: Some(0),
            error_rate: Some(1.0),
            stall_rate: Some(1.0),
        };
        let fate = fate(&config, &params).unwrap();
        assert!(fate.fail);
        assert_eq!(fate.delay, Duration::from_millis(5));
        assert_eq!(
            fate.stall,
            Some(Duration::from_millis(u64::from(config.stall_ms)))
        );
    }

    #[test]
    fn refuses_bad_rates() {
        let params = WorkParams {
            error_rate: Some(2.0),
            ..WorkParams::default()
        };
        assert!(fate(&SimulatorConfig::default(), &params).is_err());
    }
}
