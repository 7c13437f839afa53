//! A whole server for users who want arrivals without writing an accept loop: a tonic
//! `Routes` (or `Router::into_service()`), an axum `Router`, any tower HTTP service that is
//! `Clone`, served over HTTP/1 and HTTP/2 (h2c) with each request stamped in its connection
//! task. It follows tonic's own h2c example and hyper-util's graceful shutdown.
//!
//! It is deliberately small: no TLS, no cap on connections, no idle timeouts. A service that
//! needs those runs its own accept loop with [`TimestampedStream`] and [`Stamp`].

use std::{error::Error as StdError, future::Future, io, pin::pin, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, task::JoinSet};

use super::{Stamp, accept, enable};

/// How long the loop pauses after an accept error that is not one connection's (descriptors
/// exhausted): retrying at once would spin a worker on the same error.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for the open connections to finish their requests (HTTP/2: GOAWAY; HTTP/1: close after
/// the current response). Dropping the returned future closes every connection: wrap it in
/// a timeout for a bounded grace.
///
/// Turns receive timestamps on first ([`enable`]); where they cannot be, it warns once and
/// requests carry the connection task's stamp. Each accepted socket gets `TCP_NODELAY` and
/// the timestamps again ([`enable_stream`](super::enable_stream): a client may have
/// connected before `enable`).
///
/// # Errors
/// The I/O error of [`enable`] other than a refusal of the option.
pub async fn serve<S, B>(listener: TcpListener, service: S, shutdown: impl Future) -> io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let support = enable(&listener)?;
    if !support.is_on() {
        tracing::warn!(
            "no kernel receive timestamps on this listener: request arrivals count from the \
             connection task's reads, so a wait for that task is not seen"
        );
    }
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = match first(shutdown.as_mut(), |cx| listener.poll_accept(cx)).await {
            None => break,
            Some(accepted) => accepted,
        };
        // Reap what has finished so the set holds only live connections.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if accept::is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; pausing before the next accept");
                let mut pause = pin!(tokio::time::sleep(ACCEPT_BACKOFF));
                if first(shutdown.as_mut(), |cx| pause.as_mut().poll(cx))
                    .await
                    .is_none()
                {
                    break;
                }
                continue;
            }
        };
        let stream = accept::wrap(stream, support);
        let stamped = Stamp::new(service.clone(), std::sync::Arc::clone(stream.marks()));
        let connection = builder
            .serve_connection(TokioIo::new(stream), stamped)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Closes the port: new connections are refused by the kernel from here on.
    drop(listener);
    graceful.shutdown().await;
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Polls `work` until it is ready, unless `shutdown` resolves first (then `None`).
async fn first<T>(
    mut shutdown: std::pin::Pin<&mut impl Future>,
    mut work: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<T>,
) -> Option<T> {
    std::future::poll_fn(|cx| {
        if shutdown.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        work(cx).map(Some)
    })
    .await
}
