//! Assembles the gRPC server: Lab, health, reflection (v1 and v1alpha), behind the shared
//! transport limits ([`crate::transport`]), and runs it until a shutdown future resolves, then
//! drains in-flight requests within the grace period and stops, whatever is still in flight.
//!
//! `Server::build` binds and starts everything the Lab depends on, so the real address is known
//! (port 0 works) before `run_until` serves: tests and `main` drive the same code.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, pb::health_server::HealthServer, server::HealthReporter};

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
    simulator,
    telemetry::{endpoint, lag, metrics::Metrics},
    transport::{
        Listener, TransportMetrics, abandon::AbandonLayer, content_type::GrpcContentTypeLayer,
        serve::Http2Settings, signal::Signal, track::TrackLayer,
    },
};

/// Largest request message any service decodes. Lab requests are a few fields (Fast's message
/// at most 1 KiB), health and reflection requests a name: 16 KiB leaves ample room while
/// keeping what each open stream can make the server buffer small (docs/reliability.md, "Transport
/// limits"), and refuses a hostile 4 GiB length prefix up front.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Largest reply message: reflection replies carry file descriptors (tens of KiB); 1 MiB
/// leaves room for a larger proto without letting a reply grow without bound.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// HTTP/2 keepalive ping interval and timeout: finds dead peers within a minute.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-stream receive window: the HTTP/2 default (64 KiB), far above a lab request, so a
/// client that sends a body nobody reads can park at most this much per stream.
pub const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
/// Per-connection receive window: what one connection's unread request bodies may total.
pub const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// After the grace, how long the calls answered UNAVAILABLE get to reach their clients
/// before their connections are closed; the "small margin" past `--grace-ms`.
pub const ABANDON_FLUSH: Duration = Duration::from_millis(200);
/// How long the in-process simulator and `/metrics` get to finish after the gRPC server has
/// stopped: their remaining requests belong to calls that are already answered.
pub const HELPERS_GRACE: Duration = Duration::from_millis(100);

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
    Tls(String),
}

/// A server that is bound and ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    local_addr: SocketAddr,
    config: ServeConfig,
    lab: Lab,
    simulator: Option<HttpServer>,
    upstream_url: String,
    metrics_endpoint: Option<HttpServer>,
}

/// `ServeError::Start` for `what`, as a `map_err` argument.
fn start(what: &'static str) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Start { what, source }
}

impl Server {
    /// Binds the gRPC port, starts the compute pool, opens the database pool
    /// and, unless an upstream URL is given, binds an in-process upstream simulator.
    ///
    /// # Errors
    /// A [`ServeError`] naming what could not be started.
    pub async fn build(config: ServeConfig) -> Result<Self, ServeError> {
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = tcp.local_addr().map_err(start("listener"))?;
        let mut metrics = Metrics::new();
        let lab_metrics = LabMetrics::register(metrics.registry_mut());
        let transport_metrics = TransportMetrics::register(metrics.registry_mut());
        let compute = ComputePool::start(
            config.compute_threads,
            config.compute_queue,
            lab_metrics.compute.clone(),
        )
        .map_err(start("compute pool"))?;
        let (simulator, upstream_url) = match &config.upstream {
            UpstreamTarget::Url(url) => (None, url.clone()),
            UpstreamTarget::InProcess(sim) => {
                let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
                let simulator = simulator::bind(loopback, *sim, config.connections)
                    .await
                    .map_err(start("upstream simulator"))?;
                let addr = simulator
                    .local_addr()
                    .map_err(start("upstream simulator"))?;
                (Some(simulator), format!("http://{addr}"))
            }
        };
        let listener = Listener::new(tcp, "grpc", config.connections, transport_metrics.clone());
        let db = config.db.clone();
        let db_metrics = lab_metrics.db_pool.clone();
        let backend = Backend::connect(&db, db_metrics)
            .await
            .map_err(ServeError::Database)?;
        let url = upstream_url.clone();
        let attempt_metrics = lab_metrics.upstream.clone();
        let upstream =
            UpstreamClient::new(url, attempt_metrics).map_err(ServeError::UpstreamClient)?;
        let lab = Lab::new(LabState {
            runtime: tokio::runtime::Handle::current(),
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
                    endpoint::bind(
                        addr,
                        Arc::new(metrics),
                        refresh,
                        config.connections,
                        transport_metrics,
                    )
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
    /// refused and in-flight requests get the grace period to finish. Calls still running
    /// after it are answered UNAVAILABLE and every connection is closed: the server returns
    /// within `drain_delay + grace` plus [`ABANDON_FLUSH`] twice, whatever is in flight.
    ///
    /// # Errors
    /// A [`ServeError`] if the reflection service or TLS cannot be set up, or the transport
    /// fails.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            listener,
            config,
            lab,
            simulator,
            metrics_endpoint,
            ..
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;
        let helpers = Helpers::start([
            ("upstream simulator", simulator),
            ("metrics endpoint", metrics_endpoint),
        ]);
        let lag_histogram = lab.state().metrics.runtime.lag();
        let lag_probe = crate::runtime::spawn_named(
            "runtime lag probe",
            &tokio::runtime::Handle::current(),
            lag::probe(config.lag_interval, move |lag| {
                lag_histogram.observe(lag.as_secs_f64());
            }),
        )
        .map_err(start("runtime lag probe"))?;

        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        let drain = Drain {
            health,
            delay: config.drain_delay,
            grace: config.grace,
            start_draining: drain_tx,
            abandon: Arc::default(),
            close_connections: listener.stop_signal(),
        };
        let serve = serve_grpc(
            &config,
            lab.clone(),
            health_service,
            listener,
            Arc::clone(&drain.abandon),
            drain_rx,
        );
        let result = drain.serve_until(serve, shutdown).await;
        helpers.stop().await;
        lag_probe.abort();
        drop(lab);
        result
    }
}

/// The one place the gRPC server is configured: HTTP/2 limits, then the layers every call
/// passes through (outermost first), then the services, each with the same message limits
/// and compression. Connections are served by [`transport::serve`](crate::transport::serve),
/// which stamps each request in its connection task.
async fn serve_grpc(
    config: &ServeConfig,
    lab: Lab,
    health: HealthServer<impl tonic_health::pb::health_server::Health>,
    listener: Listener,
    abandon: Arc<Signal>,
    drain: oneshot::Receiver<()>,
) -> Result<(), ServeError> {
    use tonic::codec::CompressionEncoding::{Deflate, Gzip};
    /// Message limits and compression (gzip and deflate accepted, and used on replies when
    /// the client accepts them) for a generated service.
    macro_rules! codec {
        ($service:expr) => {
            $service
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_REPLY_BYTES)
                .accept_compressed(Gzip)
                .accept_compressed(Deflate)
                .send_compressed(Gzip)
                .send_compressed(Deflate)
        };
    }
    let tls = match &config.tls {
        Some(tls) => Some(tls_acceptor(tls)?),
        None => None,
    };
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(codec!(health))
        .add_service(codec!(
            reflection().build_v1().map_err(ServeError::Reflection)?
        ))
        .add_service(codec!(
            reflection()
                .build_v1alpha()
                .map_err(ServeError::Reflection)?
        ))
        .add_service(codec!(LabServer::new(lab.clone())));
    let service = tower::ServiceBuilder::new()
        .layer(TrackLayer::grpc())
        .layer(GrpcContentTypeLayer)
        // The diagnosis engine: inside the content-type check (a refused non-gRPC request is
        // not a request to diagnose), outside the abandon layer (a call abandoned at the end of
        // the grace period is diagnosed with its UNAVAILABLE).
        .layer(
            crate::diagnose::DiagnoseLayer::new()
                .with_config(config.diagnose)
                .with_metrics(lab.state().metrics.diagnose.clone()),
        )
        .layer(AbandonLayer::new(abandon))
        .service(routes.routes().prepare());
    let settings = Http2Settings {
        keepalive_interval: KEEPALIVE_INTERVAL,
        keepalive_timeout: KEEPALIVE_TIMEOUT,
        max_concurrent_streams: config.max_concurrent_streams,
        stream_window: STREAM_WINDOW_BYTES,
        connection_window: CONNECTION_WINDOW_BYTES,
    };
    crate::transport::serve::serve(listener, tls, settings, service, async move {
        let _ = drain.await;
    })
    .await;
    Ok(())
}

/// Reflection over the Lab and health descriptors (built once as v1, once as v1alpha).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The shutdown sequence, from the signal to the last connection closed.
struct Drain {
    health: HealthReporter,
    /// Keep serving this long with health NOT_SERVING.
    delay: Duration,
    /// Then this long for in-flight calls to finish, with no new connections.
    grace: Duration,
    start_draining: oneshot::Sender<()>,
    /// Raised at the end of the grace: running calls are answered UNAVAILABLE.
    abandon: Arc<Signal>,
    /// Raised [`ABANDON_FLUSH`] later: every gRPC connection closes.
    close_connections: Arc<Signal>,
}

impl Drain {
    async fn serve_until(
        self,
        serve: impl Future<Output = Result<(), ServeError>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => return result,
            () = shutdown => {}
        }
        set_health(&self.health, ServingStatus::NotServing).await;
        tracing::info!("health NOT_SERVING; draining in-flight requests");
        // Still serving, health NOT_SERVING: load balancers move away meanwhile.
        if let Ok(result) = tokio::time::timeout(self.delay, &mut serve).await {
            return result;
        }
        let _ = self.start_draining.send(());
        if let Ok(result) = tokio::time::timeout(self.grace, &mut serve).await {
            return result;
        }
        tracing::warn!(
            grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            "grace period over; answering the calls still running UNAVAILABLE"
        );
        self.abandon.raise();
        if let Ok(result) = tokio::time::timeout(ABANDON_FLUSH, &mut serve).await {
            return result;
        }
        self.close_connections.raise();
        match tokio::time::timeout(ABANDON_FLUSH, &mut serve).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("connections still open after the grace; leaving them behind");
                Ok(())
            }
        }
    }
}

/// The HTTP servers that run beside gRPC (in-process simulator, `/metrics`): up until the
/// gRPC server has stopped, so that draining calls can still reach the simulator and the
/// drain can be watched.
struct Helpers {
    stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<std::io::Result<()>>)>,
}

impl Helpers {
    fn start(servers: impl IntoIterator<Item = (&'static str, Option<HttpServer>)>) -> Self {
        let stop = CancellationToken::new();
        let tasks = servers
            .into_iter()
            .filter_map(|(what, server)| {
                let server = server?;
                let stopped = stop.clone().cancelled_owned();
                Some((what, tokio::spawn(server.run_until(stopped, HELPERS_GRACE))))
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops them and reports how each ended.
    async fn stop(self) {
        self.stop.cancel();
        for (what, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => tracing::debug!("{what} stopped"),
                Ok(Err(e)) => tracing::warn!(error = %e, "{what} ended with an error"),
                Err(e) => tracing::warn!(error = %e, "{what} task failed"),
            }
        }
    }
}

/// The TLS acceptor for the PEM identity named by the configuration.
fn tls_acceptor(tls: &crate::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            path: path.to_owned(),
            source,
        })
    };
    crate::transport::serve::tls_acceptor(&read(&tls.cert)?, &read(&tls.key)?)
        .map_err(ServeError::Tls)
}

/// Sets the Lab's status (by its type: the name comes from the generated server) and the
/// server's overall status ("") together.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    match status {
        ServingStatus::Serving => health.set_serving::<LabServer<Lab>>().await,
        _ => health.set_not_serving::<LabServer<Lab>>().await,
    }
    health.set_service_status("", status).await;
}
