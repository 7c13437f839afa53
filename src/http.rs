//! A small HTTP (axum) server bound before it serves, so that its real address is known
//! (port 0 works) and tests and `main` drive the same code: the upstream simulator and the
//! metrics endpoint are both one.

use std::{future::Future, io, net::SocketAddr};

use axum::Router;
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
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
