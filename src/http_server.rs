//! A small HTTP (axum) server bound before it serves, so that its real address is known
//! (port 0 works) and tests and `main` drive the same code: the upstream simulator and the
//! metrics endpoint are both one.
//!
//! It serves through the shared accept loop ([`crate::transport`]): Nagle off, a cap on
//! connections, back-off at descriptor exhaustion, handshake and idle timeouts (a request
//! whose headers do not arrive within the handshake timeout is dropped too). On shutdown it
//! stops accepting, lets in-flight requests finish within the grace, then closes whatever is
//! left: a stalled request cannot keep the process alive.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt};

use crate::transport::{
    ConnectionLimits, Listener, TransportMetrics, connection::Connection, track::TrackLayer,
};

#[derive(Debug)]
pub struct HttpServer {
    listener: Listener,
    router: Router,
}

impl HttpServer {
    /// Binds `addr`; `name` labels the listener in logs and metrics.
    ///
    /// # Errors
    /// The I/O error if `addr` cannot be bound.
    pub async fn bind(
        addr: SocketAddr,
        router: Router,
        name: &'static str,
        limits: ConnectionLimits,
        metrics: TransportMetrics,
    ) -> io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        Ok(Self {
            listener: Listener::new(tcp, name, limits, metrics),
            router,
        })
    }

    /// # Errors
    /// The I/O error if the listener has no local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish for up to
    /// `grace` and closes the connections still open.
    ///
    /// # Errors
    /// None today; the `Result` keeps the signature of a server that can fail.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> io::Result<()> {
        let Self {
            mut listener,
            router,
        } = self;
        let builder = Arc::new(http_builder(listener.limits()));
        let stop = listener.stop_signal();
        let drain = CancellationToken::new();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                connection = listener.accept() => {
                    connections.spawn(serve_connection(
                        connection,
                        Arc::clone(&builder),
                        router.clone(),
                        drain.clone(),
                    ));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // Closes the port: new connections are refused by the kernel from here on.
        drop(listener);
        drain.cancel();
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                "grace period over; closing the connections still open"
            );
            stop.raise();
            connections.shutdown().await;
        }
        Ok(())
    }
}

/// HTTP/1 and HTTP/2, with a timer so that hyper's HTTP/1 header read timeout (the
/// handshake timeout: headers sent half-way and then nothing) applies.
fn http_builder(limits: ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(crate::transport::limits::DEFAULT_MAX_CONCURRENT_STREAMS);
    builder
}

async fn serve_connection(
    connection: Connection,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    drain: CancellationToken,
) {
    let info = connection.info();
    let service = ServiceBuilder::new()
        .layer(TrackLayer::http())
        .service(router)
        .map_request(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(info.clone());
            request.map(axum::body::Body::new)
        });
    let serving =
        builder.serve_connection(TokioIo::new(connection), TowerToHyperService::new(service));
    tokio::pin!(serving);
    let result = tokio::select! {
        result = serving.as_mut() => result,
        () = drain.cancelled() => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
