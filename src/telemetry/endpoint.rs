//! The `/metrics` HTTP endpoint (`--metrics-addr`, loopback by default).
//!
//! Prometheus asks for OpenMetrics and gets exemplars (trace ids on latency buckets);
//! anything else (curl, promtool) gets the classic text format 0.0.4.

use std::{io, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::metrics::Metrics;
use crate::http_server::HttpServer;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Refreshes gauges that mirror live state, just before each scrape.
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    refresh: Refresh,
}

async fn scrape(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    (scrape.refresh)();
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let (body, content_type) = if wants_openmetrics {
        (scrape.metrics.encode_openmetrics(), OPENMETRICS)
    } else {
        (
            scrape.metrics.encode_prometheus(),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds the metrics endpoint: its address is known before it serves
/// (`HttpServer::run_until`).
///
/// # Errors
/// The I/O error if `addr` cannot be bound.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    refresh: Refresh,
    limits: crate::transport::ConnectionLimits,
    transport: crate::transport::TransportMetrics,
) -> io::Result<HttpServer> {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { metrics, refresh });
    HttpServer::bind(addr, router, "metrics", limits, transport).await
}
