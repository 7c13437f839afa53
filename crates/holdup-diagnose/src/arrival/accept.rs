//! What an accept loop over a timestamped listener does with each accepted socket, shared by
//! [`serve`](super::serve) and [`incoming`](super::incoming).

use std::io;

use tokio::net::TcpStream;

use super::{Support, TimestampedStream, enable_stream};

/// Accept errors that belong to one connection (it was reset before we took it): the next
/// accept may well succeed.
pub(crate) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// `TCP_NODELAY`, the timestamps again where the listener has them (a client whose handshake
/// completed before `enable` has a socket without the option: one system call per
/// connection), and the reads that keep them.
pub(crate) fn wrap(stream: TcpStream, support: Support) -> TimestampedStream {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY refused");
    }
    if support.is_on()
        && let Err(e) = enable_stream(&stream)
    {
        tracing::debug!(error = %e, "receive timestamps refused on an accepted socket");
    }
    TimestampedStream::new(stream)
}
