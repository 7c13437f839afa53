//! The accept loop every holdup listener shares (gRPC, `/metrics`, the upstream simulator).
//!
//! - Nagle's algorithm off on every accepted socket: a reply written as more than one segment
//!   must not wait for the client's delayed ACK (40 ms on Linux).
//! - A cap on open connections: one past it is accepted and closed at once, so the client
//!   fails fast instead of waiting in the kernel's backlog, and counted.
//! - Back-off when accept fails for lack of resources (EMFILE and friends): the pending
//!   connection stays in the backlog, so retrying at once fails again at once; tonic's own
//!   accept loop retries at once and spins at 100 % CPU. Logged once per episode, counted, and
//!   accepting resumes when descriptors free up.
//! - Kernel receive timestamps on, at bind and on every accepted socket (a client may have
//!   connected before the option was set): each request's arrival is when its bytes reached
//!   the machine, so a wait before any code of the server ran is measured too. Where the
//!   kernel refuses, arrival falls back to the connection task's read, said once in the log.

use std::{
    io,
    pin::Pin,
    sync::{Arc, atomic::AtomicUsize},
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{net::TcpListener, sync::Semaphore, time::Sleep};

use super::{
    connection::Connection,
    limits::{ConnectionLimits, FIRST_ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF},
    metrics::TransportMetrics,
    signal::Signal,
};

/// A bound listener and the limits of its connections.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    name: &'static str,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    /// Requests open on all this listener's connections (`max_open_requests`).
    open_requests: Arc<AtomicUsize>,
    metrics: TransportMetrics,
    /// Raised when the shutdown grace is over: every connection of this listener closes.
    stop: Arc<Signal>,
    backoff: Option<Pin<Box<Sleep>>>,
    next_backoff: Duration,
    /// Inside an episode of failing accepts, or of refusals at the cap: logged once each.
    exhausted: bool,
    at_cap: bool,
}

/// Accept errors that concern one connection only (it went away before it was accepted):
/// the next accept may succeed at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl Listener {
    /// `name` labels the listener in logs and metrics: `grpc`, `metrics` or `simulator`.
    pub fn new(
        tcp: TcpListener,
        name: &'static str,
        limits: ConnectionLimits,
        metrics: TransportMetrics,
    ) -> Self {
        receive_timestamps(name, holdup_diagnose::arrival::enable(&tcp));
        Self {
            tcp,
            name,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            open_requests: Arc::default(),
            metrics,
            stop: Arc::default(),
            backoff: None,
            next_backoff: FIRST_ACCEPT_BACKOFF,
            exhausted: false,
            at_cap: false,
        }
    }

    /// Raising it closes every connection of this listener, accepted before or after.
    pub fn stop_signal(&self) -> Arc<Signal> {
        Arc::clone(&self.stop)
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// # Errors
    /// The I/O error if the socket has no local address.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next connection within the cap; never fails (errors are retried, with back-off
    /// where retrying at once cannot help).
    pub async fn accept(&mut self) -> Connection {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Connection> {
        loop {
            if let Some(backoff) = self.backoff.as_mut() {
                ready!(backoff.as_mut().poll(cx));
                self.backoff = None;
            }
            match ready!(self.tcp.poll_accept(cx)) {
                Ok((tcp, peer)) => {
                    if self.exhausted {
                        self.exhausted = false;
                        tracing::info!(listener = self.name, "accepting connections again");
                    }
                    self.next_backoff = FIRST_ACCEPT_BACKOFF;
                    let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                        self.metrics.refused(self.name);
                        if !self.at_cap {
                            self.at_cap = true;
                            tracing::warn!(
                                listener = self.name,
                                %peer,
                                max_connections = self.limits.max_connections,
                                "connection limit reached; closing new connections (--max-connections)"
                            );
                        }
                        drop(tcp);
                        continue;
                    };
                    self.at_cap = false;
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    receive_timestamps(self.name, holdup_diagnose::arrival::enable_stream(&tcp));
                    return Poll::Ready(Connection::new(
                        tcp,
                        self.limits,
                        slot,
                        Arc::clone(&self.open_requests),
                        Arc::clone(&self.stop),
                        self.name,
                        self.metrics.clone(),
                    ));
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    self.metrics.backed_off(self.name);
                    if !self.exhausted {
                        self.exhausted = true;
                        tracing::warn!(
                            listener = self.name,
                            error = %e,
                            "cannot accept connections; backing off until resources free up"
                        );
                    }
                    self.backoff = Some(Box::pin(tokio::time::sleep(self.next_backoff)));
                    self.next_backoff = (self.next_backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// Says once per process when the kernel gives no receive timestamps: arrivals then count
/// from the connection task's read, which misses a wait for the connection task itself.
fn receive_timestamps(listener: &str, support: io::Result<holdup_diagnose::arrival::Support>) {
    static SAID: std::sync::Once = std::sync::Once::new();
    let off = match &support {
        Ok(support) => !support.is_on(),
        Err(_) => true,
    };
    if off {
        SAID.call_once(|| {
            tracing::warn!(
                listener,
                ?support,
                "no kernel receive timestamps: a request's arrival counts from when its \
                 connection task read it, so a wait for that task is not measured"
            );
        });
    }
}

/// tonic serves a stream of connections.
impl futures_core::Stream for Listener {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_accept(cx).map(|c| Some(Ok(c)))
    }
}
