//! Assembles the gRPC server: Lab, health, reflection (v1 and v1alpha), and runs it until a
//! shutdown future resolves, then drains in-flight requests within the grace period.
//!
//! `Server::build` binds and starts everything the Lab depends on, so the real address is known
//! (port 0 works) before `run_until` serves: tests and `main` drive the same code.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::transport::{Server as TonicServer, server::TcpIncoming};
use tonic_health::server::HealthReporter;

use crate::{
    config::{ServeConfig, UpstreamTarget},
    http_server::HttpServer,
    lab::{
        Lab, LabState,
        backend::Backend,
        support::{compute_pool::ComputePool, metrics::LabMetrics},
        upstream::UpstreamClient,
    },
    proto::{self, lab_server::LabServer},
    runtime::OwnedRuntime,
    simulator,
    telemetry::{endpoint, lag, metrics::Metrics},
};

/// Largest encoded gRPC message, request or reply, the Lab service accepts or sends: lab
/// messages are tiny, so 1 MiB leaves ample room while refusing a hostile 4 GiB length prefix
/// up front.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 1024 * 1024;
/// Streams one connection may have open at once: enough for any load test here, bounded so
/// that one client cannot hold unbounded server state.
pub const MAX_CONCURRENT_STREAMS: u32 = 1_024;
/// HTTP/2 keepalive ping interval and timeout: finds dead peers within a minute.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the {what}: {source}")]
    Start {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot set up the lab database: {0}")]
    Database(#[source] crate::lab::support::error::LabError),
    #[error("cannot build the upstream HTTP client: {0}")]
    UpstreamClient(#[source] reqwest::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("a start-up task on the lab runtime failed: {0}")]
    LabTask(#[source] tokio::task::JoinError),
    #[error("gRPC server failed: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// A server that is bound and ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: ServeConfig,
    lab: Lab,
    /// Dropped last: handlers must be gone before their runtime.
    lab_runtime: OwnedRuntime,
    simulator: Option<HttpServer>,
    upstream_url: String,
    metrics_endpoint: Option<HttpServer>,
}

impl Server {
    /// Binds the gRPC port, starts the lab runtime and compute pool, opens the database pool
    /// and, unless an upstream URL is given, binds an in-process upstream simulator.
    ///
    /// # Errors
    /// A [`ServeError`] naming what could not be started.
    pub async fn build(config: ServeConfig) -> Result<Self, ServeError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Start {
            what: "listener",
            source,
        })?;
        let lab_runtime = OwnedRuntime::start("holdup-lab", config.workers).map_err(|source| {
            ServeError::Start {
                what: "lab runtime",
                source,
            }
        })?;
        let mut metrics = Metrics::new();
        let lab_metrics = LabMetrics::register(metrics.registry_mut());
        let compute = ComputePool::start(
            config.compute_threads,
            config.compute_queue,
            lab_metrics.compute.clone(),
        )
        .map_err(|source| ServeError::Start {
            what: "compute pool",
            source,
        })?;
        let (simulator, upstream_url) = match &config.upstream {
            UpstreamTarget::Url(url) => (None, url.clone()),
            UpstreamTarget::InProcess(sim) => {
                let simulator = simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), *sim)
                    .await
                    .map_err(|source| ServeError::Start {
                        what: "upstream simulator",
                        source,
                    })?;
                let addr = simulator.local_addr().map_err(|source| ServeError::Start {
                    what: "upstream simulator",
                    source,
                })?;
                (Some(simulator), format!("http://{addr}"))
            }
        };
        // The pool and the HTTP client are created on the lab runtime, where they are used, so
        // their connections are driven by the lab runtime's I/O driver.
        let db = config.db.clone();
        let db_metrics = lab_metrics.db_pool.clone();
        let backend = lab_runtime
            .handle()
            .spawn(async move { Backend::connect(&db, db_metrics).await })
            .await
            .map_err(ServeError::LabTask)?
            .map_err(ServeError::Database)?;
        let url = upstream_url.clone();
        let attempt_metrics = lab_metrics.upstream.clone();
        let upstream = lab_runtime
            .handle()
            .spawn(async move { UpstreamClient::new(url, attempt_metrics) })
            .await
            .map_err(ServeError::LabTask)?
            .map_err(ServeError::UpstreamClient)?;
        let lab = Lab::new(LabState {
            runtime: lab_runtime.handle().clone(),
            limits: config.limits,
            backend,
            compute: Arc::new(compute),
            upstream,
            metrics: lab_metrics,
            admission: crate::lab::support::admission::Admission::new(&config.limits),
        });
        let metrics_endpoint = match config.metrics_addr {
            None => None,
            Some(addr) => {
                let state = Arc::clone(lab.state());
                let refresh = Arc::new(move || state.sample_gauges());
                Some(
                    endpoint::bind(addr, Arc::new(metrics), refresh)
                        .await
                        .map_err(|source| ServeError::Bind { addr, source })?,
                )
            }
        };
        Ok(Self {
            listener,
            local_addr,
            config,
            lab,
            lab_runtime,
            simulator,
            upstream_url,
            metrics_endpoint,
        })
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_endpoint
            .as_ref()
            .and_then(|e| e.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn upstream_url(&self) -> &str {
        &self.upstream_url
    }

    /// Serves until `shutdown` resolves; then health turns NOT_SERVING, new connections are
    /// refused and in-flight requests get `grace` to finish.
    ///
    /// # Errors
    /// A [`ServeError`] if the reflection service cannot be built or the transport fails.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<LabServer<Lab>>().await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(ServeError::Reflection)?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(ServeError::Reflection)?;

        let lab = LabServer::new(self.lab.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);

        let helpers_stop = tokio_util::sync::CancellationToken::new();
        let simulator_task = self.simulator.map(|simulator| {
            let stop = helpers_stop.clone();
            tokio::spawn(async move { simulator.run_until(stop.cancelled_owned()).await })
        });
        let metrics_task = self.metrics_endpoint.map(|endpoint| {
            let stop = helpers_stop.clone();
            tokio::spawn(async move { endpoint.run_until(stop.cancelled_owned()).await })
        });
        let lag_histogram = self.lab.state().metrics.runtime.lag();
        let lag_probe = crate::runtime::spawn_named(
            "runtime lag probe",
            self.lab_runtime.handle(),
            lag::probe(self.config.lag_interval, move |lag| {
                lag_histogram.observe(lag.as_secs_f64());
            }),
        )
        .map_err(|source| ServeError::Start {
            what: "runtime lag probe",
            source,
        })?;

        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let grace = self.config.grace;
        let drain_delay = self.config.drain_delay;
        let mut builder = TonicServer::builder();
        if let Some(tls) = &self.config.tls {
            builder = builder
                .tls_config(tls_identity(tls)?)
                .map_err(ServeError::Tls)?;
        }
        let serve = builder
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(lab)
            .serve_with_incoming_shutdown(accepted(self.listener), async move {
                let _ = drain_rx.await;
            });
        tokio::pin!(serve);

        let result = tokio::select! {
            result = &mut serve => result,
            () = shutdown => {
                begin_drain(&health).await;
                // Still serving, health NOT_SERVING: load balancers move away meanwhile.
                let stopped_early = tokio::select! {
                    result = &mut serve => Some(result),
                    () = tokio::time::sleep(drain_delay) => None,
                };
                match stopped_early {
                    Some(result) => result,
                    None => {
                        let _ = drain_tx.send(());
                        match tokio::time::timeout(grace, &mut serve).await {
                            Ok(result) => result,
                            Err(_) => {
                                tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; abandoning in-flight requests");
                                Ok(())
                            }
                        }
                    }
                }
            }
        };
        helpers_stop.cancel();
        lag_probe.abort();
        for (what, task) in [
            ("upstream simulator", simulator_task),
            ("metrics endpoint", metrics_task),
        ] {
            if let Some(task) = task {
                match task.await {
                    Ok(Ok(())) => tracing::debug!("{what} stopped"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "{what} ended with an error"),
                    Err(e) => tracing::warn!(error = %e, "{what} task failed"),
                }
            }
        }
        drop(self.lab);
        drop(self.lab_runtime);
        result.map_err(ServeError::Transport)
    }
}

/// The accepted connections, with Nagle's algorithm off. The builder's `tcp_nodelay` applies
/// only to listeners tonic binds itself; on a listener bound here it is ignored, and a reply
/// written as more than one segment then waits for the client's delayed ACK (40 ms on Linux).
fn accepted(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Reads the PEM identity named by the configuration.
fn tls_identity(
    tls: &crate::config::TlsFiles,
) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            path: path.to_owned(),
            source,
        })
    };
    let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

async fn begin_drain(health: &HealthReporter) {
    health.set_not_serving::<LabServer<Lab>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    tracing::info!("health NOT_SERVING; draining in-flight requests");
}
