//! A small HTTP (axum) server bound before it serves, so that its real address is known
//! (port 0 works) and tests and `main` drive the same code: the upstream simulator and the
//! metrics endpoint are both one.

use std::{future::Future, io, net::SocketAddr};

use axum::{Router, serve::ListenerExt};
use tokio::net::TcpListener;

#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    router: Router,
}

impl HttpServer {
    /// # Errors
    /// The I/O error if `addr` cannot be bound.
    pub async fn bind(addr: SocketAddr, router: Router) -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            router,
        })
    }

    /// # Errors
    /// The I/O error if the listener has no local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    ///
    /// # Errors
    /// The I/O error that stopped the server.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        // Nagle off on every accepted connection: a small reply must not wait for a delayed ACK.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
