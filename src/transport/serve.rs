//! Serves the gRPC listener's connections with hyper directly, on the runtime that reads the
//! sockets, instead of through tonic's own accept loop.
//!
//! Why: hyper's HTTP/2 server calls its service's `call` inside the connection task, as soon
//! as a request's headers are decoded; tonic's loop wraps the tower stack in a `Oneshot`, so
//! every tower layer (the diagnosis engine's included) first runs inside the request task that
//! hyper spawns, after that task's own wait for a worker. Here `call` runs in the connection
//! task and stamps the request (`holdup_diagnose::arrival::Stamp`), so the wait for the
//! request's first poll is measured and blamed, not lost. The rest is what tonic's loop did: HTTP/2 only, the HTTP/2
//! settings, TLS (rustls, ALPN `h2`), the connection's info in every request, and a graceful
//! drain (GOAWAY, then the in-flight calls) when asked to stop.

use std::{convert::Infallible, future::Future, pin::pin, sync::Arc, time::Duration};

use hyper::{body::Incoming, server::conn::http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use holdup_diagnose::arrival::Stamp;

use super::Listener;

/// The HTTP/2 settings of every gRPC connection (see `crate::server` for why each value).
#[derive(Debug, Clone, Copy)]
pub struct Http2Settings {
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub stream_window: u32,
    pub connection_window: u32,
}

impl Http2Settings {
    fn builder(&self) -> http2::Builder<TokioExecutor> {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(self.keepalive_interval))
            .keep_alive_timeout(self.keepalive_timeout)
            .max_concurrent_streams(self.max_concurrent_streams)
            .initial_stream_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window);
        builder
    }
}

/// A rustls server config for `cert` and `key` (PEM), offering HTTP/2 only.
///
/// # Errors
/// A message naming what could not be parsed or accepted.
pub fn tls_acceptor(cert: &[u8], key: &[u8]) -> Result<TlsAcceptor, String> {
    use tokio_rustls::rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    };
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no PEM certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("cannot parse the private key: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make an identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts on `listener` and serves each connection with `service` until `drain` resolves;
/// then stops accepting (the listening socket closes), asks every connection to finish
/// (GOAWAY) and returns when the last one has closed.
pub async fn serve<S, B>(
    mut listener: Listener,
    tls: Option<TlsAcceptor>,
    settings: Http2Settings,
    service: S,
    drain: impl Future<Output = ()>,
) where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = settings.builder();
    let graceful = GracefulShutdown::new();
    {
        let mut drain = pin!(drain);
        loop {
            let connection = tokio::select! {
                () = &mut drain => break,
                connection = listener.accept() => connection,
            };
            let info = connection.info();
            let marks = Arc::clone(&info.marks);
            // The arrival is stamped by `Stamp` in the connection task; the connection's own
            // info is for the layers, which read it in the request's task.
            let with_info = service
                .clone()
                .map_request(move |request: http::Request<Incoming>| {
                    let mut request = request.map(Body::new);
                    let extensions = request.extensions_mut();
                    extensions.insert(info.tcp.clone());
                    extensions.insert(info.clone());
                    request
                });
            let stamped = Stamp::new(with_info, marks);
            let builder = builder.clone();
            let tls = tls.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                match tls {
                    None => serve_one(&builder, connection, stamped, watcher).await,
                    Some(tls) => match tls.accept(connection).await {
                        Ok(stream) => serve_one(&builder, stream, stamped, watcher).await,
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    },
                }
            });
        }
        // The listening socket closes here: new clients are refused at once instead of
        // waiting in the backlog until their deadline.
        drop(listener);
    }
    graceful.shutdown().await;
}

async fn serve_one<IO, S, B>(
    builder: &http2::Builder<TokioExecutor>,
    io: IO,
    service: Stamp<S>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
