//! Arrivals on tonic's own server: `Server::serve_with_incoming(arrival::incoming(listener)?)`.
//!
//! tonic's `Server` reads each connection in a task of its own and runs the tower layers in
//! the task it spawns per request, after that task's own wait for a worker: a request whose
//! bytes lay in the socket behind a held worker looks clean to a layer. Here each accepted
//! socket is a [`TimestampedStream`], whose reads keep the kernel's receive stamp, and its
//! connect info ([`StampedConnectInfo`]), which tonic copies into every request of the
//! connection, carries those marks to [`DiagnoseLayer`](crate::DiagnoseLayer). The layer
//! reads them when the request reaches it: the stamp of the newest bytes the connection had
//! read by then, a lower bound on the request's wait when later bytes came on the same
//! connection first ([`Arrival`](super::Arrival) says which clock it used).
//!
//! `Request::remote_addr` reads tonic's `TcpConnectInfo`, which a stream of another type does
//! not give: the layer puts it back into each request from the stamped connect info.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::net::TcpListener;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{ReadMarks, Support, TimestampedStream, accept, enable};

/// What tonic copies into each request of a [`TimestampedStream`]'s connection: the stream's
/// read marks and its addresses.
#[derive(Debug, Clone)]
pub struct StampedConnectInfo {
    marks: Arc<ReadMarks>,
    tcp: TcpConnectInfo,
}

impl StampedConnectInfo {
    /// The connection's read marks.
    pub fn marks(&self) -> &Arc<ReadMarks> {
        &self.marks
    }

    /// Its addresses, as tonic's own `TcpConnectInfo`.
    pub fn tcp(&self) -> &TcpConnectInfo {
        &self.tcp
    }
}

impl Connected for TimestampedStream {
    type ConnectInfo = StampedConnectInfo;

    fn connect_info(&self) -> StampedConnectInfo {
        StampedConnectInfo {
            marks: Arc::clone(self.marks()),
            tcp: self.get_ref().connect_info(),
        }
    }
}

/// The accepted connections of a listener, each a [`TimestampedStream`] with `TCP_NODELAY`
/// (as tonic's own `serve` sets it): for tonic's `Server::serve_with_incoming`.
#[derive(Debug)]
pub struct Incoming {
    listener: TcpListener,
    support: Support,
}

/// Turns receive timestamps on for `listener` ([`enable`]; where they cannot be, it warns once
/// and requests count from the connection task's reads) and returns its connections as a
/// stream for `Server::serve_with_incoming`.
///
/// # Errors
/// The I/O error of [`enable`] other than a refusal of the option.
pub fn incoming(listener: TcpListener) -> io::Result<Incoming> {
    let support = enable(&listener)?;
    if !support.is_on() {
        tracing::warn!(
            "no kernel receive timestamps on this listener: request arrivals count from the \
             connection task's reads, so a wait for that task is not seen"
        );
    }
    Ok(Incoming { listener, support })
}

impl futures_core::Stream for Incoming {
    type Item = io::Result<TimestampedStream>;

    /// An accept error that is one connection's (reset before it was accepted) is skipped;
    /// any other ends in the stream, as tonic's own `TcpIncoming` passes it on.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let (stream, _) = match self.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(accepted)) => accepted,
                Poll::Ready(Err(e)) if accept::is_per_connection(&e) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            };
            return Poll::Ready(Some(Ok(accept::wrap(stream, self.support))));
        }
    }
}
