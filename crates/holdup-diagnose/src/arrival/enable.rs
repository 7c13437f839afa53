//! Turning receive timestamps on, at bind.
//!
//! The kernel stamps packets for the whole system only once some socket asks for it, and it
//! switches that on through a deferred static key: packets received before the switch lands
//! carry no stamp. Asking on the listener, before the first accept, is early enough, and the
//! accepted sockets inherit the option.

use std::io;

use tokio::net::TcpListener;

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
    // The engine's epoch must precede every stamp it converts.
    let now = crate::clock::now_ns();
    #[cfg(target_os = "linux")]
    {
        super::realtime::offset(now);
        super::timestamps::enable(listener)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (listener, now);
        Ok(Support::Off)
    }
}
