//! What a request carries in its extensions about its arrival: the kernel's stamp when there
//! is one, and the connection task's own times, all in the engine's clock, so that the engine
//! can count the wait before the request's first poll and say what it counted from.

use std::time::{Duration, Instant};

use crate::clock;

/// When a request arrived, as seen by its connection (engine nanoseconds: see
/// [`Arrival::instant_of`] to turn one into an [`Instant`]).
///
/// Inserted into the request's extensions by [`Stamp`](super::Stamp) (feature `serve`), or by
/// any connection-level service from [`ReadMarks::arrival_now`](super::ReadMarks::arrival_now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The kernel's receive stamp of the newest bytes of the read that completed the request,
    /// converted to the engine's clock; `None` when the socket has no receive timestamps.
    /// Newest bytes: a request whose bytes came in the same read as later ones arrived before
    /// this (see [`Arrival::socket_wait`]).
    pub kernel: Option<u64>,
    /// When the connection task ran that read: the kernel stamp is never after it.
    pub read_at: u64,
    /// When the socket was last found empty before that read: the request's bytes came after
    /// it. `None` on a connection's first read (bytes may predate the accept).
    pub drained_at: Option<u64>,
    /// When the connection task handed the request on (the stamp itself).
    pub stamped_at: u64,
    /// For the first request of a connection, completed by a later read than the
    /// connection's first: how long the connection's first bytes lay in the socket before
    /// that first read (kernel stamp to read). A request that came in the first read has its
    /// wait in its own stamp already, and none here. A client that waits for the
    /// server's HTTP/2 settings before it sends a request (grpc-go, so grpcurl) sends nothing
    /// more until that read: on a server whose workers are all held, its first call waits in
    /// the connection's setup, and this is that wait.
    pub setup_wait: Option<u64>,
}

/// Which clock the arrival the engine uses comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The kernel's receive stamp: counts the wait for the connection task too.
    Kernel,
    /// The connection task's read (no receive timestamps): the wait for the connection task
    /// itself is not counted, only what came after its read.
    ConnectionTask,
}

impl Source {
    /// The lowercase name reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Kernel => "kernel",
            Source::ConnectionTask => "connection-task",
        }
    }
}

/// How long a request's bytes lay in the socket before the server read them, as far as one
/// read can tell: the kernel stamps only the newest bytes of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketWait {
    /// Read time minus the kernel's stamp of the newest bytes: exact for the request those
    /// bytes completed, a lower bound for one whose bytes were coalesced with later ones.
    /// This is the wait that [`Arrival::arrival`] shows.
    pub at_least: Duration,
    /// Read time minus the previous drain: the socket was empty then, so no request of this
    /// read can have waited longer. `None` on a connection's first read.
    pub at_most: Option<Duration>,
}

impl Arrival {
    /// The arrival the engine should count from, in engine nanoseconds, and which clock it
    /// comes from: the kernel stamp when there is one, else the connection task's read.
    ///
    /// The first request of a connection whose setup waited counts from that much earlier
    /// ([`Arrival::setup_wait`]): the wait was on its path, and the client could send nothing
    /// before the server read the connection.
    pub fn arrival(&self) -> (u64, Source) {
        let setup = self.setup_wait.unwrap_or(0);
        match self.kernel {
            Some(kernel) => (kernel.saturating_sub(setup), Source::Kernel),
            None => (self.read_at, Source::ConnectionTask),
        }
    }

    /// [`Arrival::arrival`] as an [`Instant`].
    pub fn instant(&self) -> (Instant, Source) {
        let (ns, source) = self.arrival();
        (Self::instant_of(ns), source)
    }

    /// The [`Instant`] of one of this record's engine times.
    pub fn instant_of(ns: u64) -> Instant {
        clock::instant_at(ns)
    }

    /// How long the bytes lay in the socket before the read, bounded on both sides; `None`
    /// without a kernel stamp.
    pub fn socket_wait(&self) -> Option<SocketWait> {
        let kernel = self.kernel?;
        Some(SocketWait {
            at_least: Duration::from_nanos(self.read_at.saturating_sub(kernel)),
            at_most: self
                .drained_at
                .map(|drained| Duration::from_nanos(self.read_at.saturating_sub(drained))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn arrival(kernel: Option<u64>, drained_at: Option<u64>) -> Arrival {
        Arrival {
            kernel,
            read_at: 100 * MS,
            drained_at,
            setup_wait: None,
            stamped_at: 101 * MS,
        }
    }

    /// A connection whose first bytes waited 30 ms to be read: its first request counts from
    /// 30 ms before its own bytes came (the client could send them only after that read).
    #[test]
    fn the_first_request_of_a_connection_counts_its_setup_wait() {
        let first = Arrival {
            setup_wait: Some(30 * MS),
            ..arrival(Some(90 * MS), None)
        };
        assert_eq!(first.arrival(), (60 * MS, Source::Kernel));
    }

    #[test]
    fn the_kernel_stamp_is_used_when_there_is_one() {
        assert_eq!(
            arrival(Some(40 * MS), Some(10 * MS)).arrival(),
            (40 * MS, Source::Kernel)
        );
        assert_eq!(
            arrival(None, Some(10 * MS)).arrival(),
            (100 * MS, Source::ConnectionTask)
        );
    }

    #[test]
    fn coalesced_bytes_are_bounded_by_the_previous_drain() {
        let wait = arrival(Some(40 * MS), Some(10 * MS)).socket_wait();
        assert_eq!(
            wait,
            Some(SocketWait {
                at_least: Duration::from_millis(60),
                at_most: Some(Duration::from_millis(90)),
            })
        );
    }

    #[test]
    fn a_first_read_has_no_upper_bound_and_no_stamp_no_wait() {
        let first = arrival(Some(40 * MS), None).socket_wait();
        assert_eq!(first.and_then(|w| w.at_most), None);
        assert_eq!(first.map(|w| w.at_least), Some(Duration::from_millis(60)));
        assert_eq!(arrival(None, Some(10 * MS)).socket_wait(), None);
    }
}
