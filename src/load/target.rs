//! The server a run loads: connections to a `--target`, or a holdup server started in this
//! process on a free loopback port, on a transport runtime of its own so that the load
//! generator and the server's transport do not share workers.

use std::{net::SocketAddr, thread, time::Duration};

use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use super::LoadError;
use crate::{config::ServeConfig, server::Server};

/// How long connecting to the target may take before the run is abandoned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `connections` separate HTTP/2 connections to `url`.
///
/// # Errors
/// [`LoadError::Target`] for a URL that is not http(s)://host:port, [`LoadError::Connect`]
/// when a connection cannot be made.
pub async fn connect(url: &str, connections: usize) -> Result<Vec<Channel>, LoadError> {
    let endpoint = endpoint(url)?;
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| LoadError::Connect {
                url: url.to_owned(),
                source,
            })?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Checks the shape of a target URL.
///
/// # Errors
/// [`LoadError::Target`] naming what is wrong.
pub fn endpoint(url: &str) -> Result<Endpoint, LoadError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(LoadError::Target {
            url: url.to_owned(),
            reason: "must start with http:// (or https://)".into(),
        });
    }
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|e| LoadError::Target {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

/// A holdup server running in this process until [`InProcessServer::stop`] (or drop).
#[derive(Debug)]
pub struct InProcessServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<Result<(), crate::server::ServeError>>>,
    /// How long to wait for it to drain on stop.
    grace: Duration,
}

impl InProcessServer {
    /// Builds and starts a server with `config` on a thread and runtime of its own.
    ///
    /// # Errors
    /// [`LoadError::Server`] when the server cannot be built, [`LoadError::Thread`] when its
    /// thread or runtime cannot start.
    pub async fn start(config: ServeConfig) -> Result<Self, LoadError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        let threads = config.workers;
        let grace = config.grace;
        thread::Builder::new()
            .name("holdup-in-process".into())
            .spawn(move || {
                let runtime = match crate::runtime::multi_thread("holdup", threads) {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(LoadError::Thread(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Server::build(config).await {
                        Err(e) => {
                            let _ = ready_tx.send(Err(LoadError::Server(e)));
                        }
                        Ok(server) => {
                            let _ = ready_tx.send(Ok(server.local_addr()));
                            let result = server
                                .run_until(async {
                                    let _ = stop_rx.await;
                                })
                                .await;
                            let _ = done_tx.send(result);
                        }
                    }
                });
            })
            .map_err(LoadError::Thread)?;
        let addr = ready_rx.await.map_err(|_| LoadError::ServerGone)??;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            done: Some(done_rx),
            grace,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signals shutdown and waits for the server to drain.
    ///
    /// # Errors
    /// [`LoadError::Server`] if the server failed, [`LoadError::ServerGone`] if it did not
    /// stop within its grace period and a few seconds more.
    pub async fn stop(mut self) -> Result<(), LoadError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(done) = self.done.take() else {
            return Ok(());
        };
        match tokio::time::timeout(self.grace + Duration::from_secs(5), done).await {
            Ok(Ok(result)) => result.map_err(LoadError::Server),
            Ok(Err(_)) | Err(_) => Err(LoadError::ServerGone),
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
