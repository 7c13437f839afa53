//! Turning receive timestamps on, at bind.
//!
//! The kernel stamps packets for the whole system only once some socket asks for it, and it
//! switches that on through a deferred static key: packets received before the switch lands
//! carry no stamp. Asking on the listener, right after bind, is early enough, and the sockets
//! it accepts inherit the option, except those whose handshake the kernel completed before
//! the option was set (a client that connected between `listen` and [`enable`]). For those,
//! and for sockets from a listener someone else set up, [`enable_stream`] sets it on the
//! accepted socket: its bytes received since the system-wide switch came on are stamped too,
//! since the kernel stamps packets on arrival and the socket's option only decides whether
//! `recvmsg` reports the stamp.

use std::io;

use tokio::net::{TcpListener, TcpStream};

/// Which receive timestamps a listener's connections get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Support {
    /// `SO_TIMESTAMPING` with software receive stamps (`SCM_TIMESTAMPING`).
    Timestamping,
    /// `SO_TIMESTAMPNS` (`SCM_TIMESTAMPNS`), where `SO_TIMESTAMPING` was refused.
    TimestampNs,
    /// None: another OS, or the kernel refused both. Arrivals then come from the connection
    /// task's reads ([`Source::ConnectionTask`](super::Source::ConnectionTask)).
    Off,
}

impl Support {
    /// Whether the kernel stamps this listener's received bytes.
    pub fn is_on(self) -> bool {
        !matches!(self, Support::Off)
    }
}

/// Turns on software receive timestamps on `listener`, for every connection it accepts:
/// `SO_TIMESTAMPING` (`SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE`), else
/// `SO_TIMESTAMPNS`. Call it right after binding.
///
/// Returns which is on, or [`Support::Off`] when neither can be (another OS, or the kernel
/// refused): the caller then counts from the connection task's reads and should say so once.
///
/// # Errors
/// The I/O error of a `setsockopt` that failed for a reason other than refusing the option
/// (not a socket, a closed descriptor).
pub fn enable(listener: &TcpListener) -> io::Result<Support> {
    enable_on(listener)
}

/// Turns on software receive timestamps on one accepted socket, as [`enable`] does on a
/// listener: for a socket accepted before its listener's [`enable`], or from a listener
/// someone else bound. One `setsockopt` per connection.
///
/// # Errors
/// As [`enable`].
pub fn enable_stream(stream: &TcpStream) -> io::Result<Support> {
    enable_on(stream)
}

#[cfg(target_os = "linux")]
fn enable_on(socket: &impl std::os::fd::AsFd) -> io::Result<Support> {
    // The engine's epoch, and the realtime pair, must precede every stamp they convert.
    super::realtime::offset(crate::clock::now_ns());
    super::timestamps::enable(socket)
}

#[cfg(not(target_os = "linux"))]
fn enable_on<T>(_socket: &T) -> io::Result<Support> {
    Ok(Support::Off)
}
