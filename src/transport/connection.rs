//! One accepted connection: the socket, its slot of the listener's cap, and a watchdog that
//! closes it when it breaks a limit — no byte within the handshake timeout, no request in
//! flight for the idle timeout, a reply left unread past the reply-send timeout — or when the
//! listener's shutdown grace is over.
//!
//! The watchdog lives in the socket's `poll_read`: an HTTP/2 (or TLS) connection always has a
//! read pending, so the timer is polled without a task of its own, and closing is returning an
//! error from the read, which ends the connection and frees every stream it held. The server
//! cannot send GOAWAY from here; a connection closed this way has no request in flight (idle,
//! handshake) or a client that is not reading anyway (reply-send).

use std::{
    collections::BTreeMap,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use holdup_diagnose::arrival::{ReadMarks, TimestampedStream};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::Sleep,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{
    limits::ConnectionLimits,
    metrics::TransportMetrics,
    signal::{Raised, Signal},
};

/// What the requests of one connection tell its watchdog.
#[derive(Debug)]
pub struct ConnState {
    accepted: Instant,
    limits: ConnectionLimits,
    /// Whether the client has sent anything at all.
    read_any: AtomicBool,
    /// Requests whose reply has not been sent in full.
    in_flight: AtomicUsize,
    /// When the last request ended, in ms after `accepted`.
    idle_since_ms: AtomicU64,
    /// Replies whose last frame was handed to HTTP/2 and not yet sent (the client gave no
    /// room): ticket → when. Tickets grow with time, so the first entry is the oldest.
    unsent: Mutex<BTreeMap<u64, Instant>>,
    next_ticket: AtomicU64,
    /// Requests open on every connection of the listener.
    open_requests: Arc<AtomicUsize>,
    listener: &'static str,
    metrics: TransportMetrics,
}

/// Why a watchdog closed its connection (the `reason` label).
pub type CloseReason = &'static str;

impl ConnState {
    fn new(
        limits: ConnectionLimits,
        open_requests: Arc<AtomicUsize>,
        listener: &'static str,
        metrics: TransportMetrics,
    ) -> Self {
        Self {
            accepted: Instant::now(),
            limits,
            read_any: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            unsent: Mutex::new(BTreeMap::new()),
            next_ticket: AtomicU64::new(0),
            open_requests,
            listener,
            metrics,
        }
    }

    /// Whether the listener has more requests open than `--max-open-requests` (counting the
    /// one just started): if so it is refused, and counted.
    pub fn over_open_requests(&self) -> Option<usize> {
        let max = self.limits.max_open_requests;
        if self.open_requests.load(Ordering::Acquire) <= max {
            return None;
        }
        tracing::debug!(
            listener = self.listener,
            max_open_requests = max,
            "request refused: too many open requests (--max-open-requests)"
        );
        self.metrics.request_refused(self.listener);
        Some(max)
    }

    /// How long a request may wait for the client to send its message.
    pub fn request_body_timeout(&self) -> Duration {
        self.limits.request_body_timeout
    }

    /// A request was ended because its message did not arrive within the timeout.
    pub fn request_body_timed_out(&self) {
        tracing::debug!(
            listener = self.listener,
            timeout = ?self.limits.request_body_timeout,
            "request ended: its message stopped arriving"
        );
        self.metrics.request_body_timed_out(self.listener);
    }

    /// A request started; the returned guard ends it when dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.open_requests.fetch_add(1, Ordering::AcqRel);
        InFlight {
            conn: Arc::clone(self),
            ticket: None,
        }
    }

    fn ms_since_accept(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.accepted).as_millis()).unwrap_or(u64::MAX)
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        // A panic while holding this lock leaves a map that is still valid.
        self.unsent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The limit this connection breaks at `now`, or when to look again.
    fn check(&self, now: Instant) -> Result<Instant, CloseReason> {
        let limits = &self.limits;
        if !self.read_any.load(Ordering::Acquire) {
            let deadline = self.accepted + limits.handshake_timeout;
            return if now >= deadline {
                Err("handshake")
            } else {
                Ok(deadline)
            };
        }
        let mut next = now + limits.idle_timeout;
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let idle_since =
                self.accepted + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            let deadline = idle_since + limits.idle_timeout;
            if now >= deadline {
                return Err("idle");
            }
            next = next.min(deadline);
        }
        let oldest = self.unsent().values().next().copied();
        let reply_deadline = oldest.unwrap_or(now) + limits.reply_send_timeout;
        if oldest.is_some() && now >= reply_deadline {
            return Err("reply_send");
        }
        Ok(next.min(reply_deadline))
    }
}

/// A request of a connection, from its headers to the end of its reply.
#[derive(Debug)]
pub struct InFlight {
    conn: Arc<ConnState>,
    ticket: Option<u64>,
}

impl InFlight {
    /// The reply handed a frame to HTTP/2, which sends it when the client has room.
    pub fn frame_handed_over(&mut self) {
        self.frame_taken();
        let ticket = self.conn.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.conn.unsent().insert(ticket, Instant::now());
        self.ticket = Some(ticket);
        tracing::trace!(ticket, "reply frame handed over");
    }

    /// HTTP/2 came back for the next frame: the last one was sent.
    pub fn frame_taken(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.conn.unsent().remove(&ticket);
            tracing::trace!(ticket, "reply frame sent");
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.frame_taken();
        self.conn.open_requests.fetch_sub(1, Ordering::AcqRel);
        let now = self.conn.ms_since_accept(Instant::now());
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.idle_since_ms.store(now, Ordering::Release);
        }
    }
}

/// What the services see of the connection a request came on (request extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Addresses, as tonic's own `TcpConnectInfo` (`Request::remote_addr` reads it).
    pub tcp: TcpConnectInfo,
    pub state: Arc<ConnState>,
    /// What the socket's reads saw (kernel receive timestamps): each request's arrival.
    pub marks: Arc<ReadMarks>,
}

/// An accepted TCP connection under its listener's limits.
#[derive(Debug)]
pub struct Connection {
    /// Reads through `recvmsg`, keeping the kernel's receive timestamp of the newest bytes.
    io: TimestampedStream,
    state: Arc<ConnState>,
    info: TcpConnectInfo,
    watchdog: Pin<Box<Sleep>>,
    stop: Raised,
    closed: Option<CloseReason>,
    listener: &'static str,
    metrics: TransportMetrics,
    /// The listener's slot; freed when the connection is dropped.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    pub(crate) fn new(
        io: TcpStream,
        limits: ConnectionLimits,
        slot: OwnedSemaphorePermit,
        open_requests: Arc<AtomicUsize>,
        stop: Arc<Signal>,
        listener: &'static str,
        metrics: TransportMetrics,
    ) -> Self {
        let state = Arc::new(ConnState::new(
            limits,
            open_requests,
            listener,
            metrics.clone(),
        ));
        let info = TcpConnectInfo {
            local_addr: io.local_addr().ok(),
            remote_addr: io.peer_addr().ok(),
        };
        // The first look comes at the earliest deadline any limit could have; each look sets
        // the next.
        let first_check = tokio::time::Instant::from_std(
            state.accepted
                + limits
                    .handshake_timeout
                    .min(limits.idle_timeout)
                    .min(limits.reply_send_timeout),
        );
        metrics.opened(listener);
        Self {
            io: TimestampedStream::new(io),
            state,
            info,
            watchdog: Box::pin(tokio::time::sleep_until(first_check)),
            stop: stop.raised_owned(),
            closed: None,
            listener,
            metrics,
            _slot: slot,
        }
    }

    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            tcp: self.info.clone(),
            state: Arc::clone(&self.state),
            marks: Arc::clone(self.io.marks()),
        }
    }

    /// Polls the watchdog and the listener's stop; the reason to close, if any.
    fn poll_limits(&mut self, cx: &mut Context<'_>) -> Option<CloseReason> {
        if self.closed.is_some() {
            return self.closed;
        }
        let reason = if Pin::new(&mut self.stop).poll(cx).is_ready() {
            Some("shutdown")
        } else {
            loop {
                if self.watchdog.as_mut().poll(cx).is_pending() {
                    break None;
                }
                let verdict = self.state.check(Instant::now());
                tracing::trace!(?verdict, "connection watchdog");
                match verdict {
                    Ok(next) => self
                        .watchdog
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(next)),
                    Err(reason) => break Some(reason),
                }
            }
        };
        if let Some(reason) = reason {
            tracing::debug!(
                listener = self.listener,
                peer = ?self.info.remote_addr,
                reason,
                "closing connection"
            );
            self.metrics.closed(self.listener, reason);
            self.closed = Some(reason);
        }
        reason
    }
}

fn closed_error(reason: CloseReason) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connection closed by the server ({reason})"),
    )
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.metrics.dropped(self.listener);
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(reason) = this.poll_limits(cx) {
            return Poll::Ready(Err(closed_error(reason)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.read_any.store(true, Ordering::Release);
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(reason) = this.closed {
            return Poll::Ready(Err(closed_error(reason)));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(reason) = this.closed {
            return Poll::Ready(Err(closed_error(reason)));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 1,
            handshake_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            reply_send_timeout: Duration::from_secs(5),
            request_body_timeout: Duration::from_secs(5),
            max_open_requests: 2,
        }
    }

    #[test]
    fn silent_connection_breaks_the_handshake_limit() {
        let conn = ConnState::new(
            limits(),
            Arc::default(),
            "test",
            TransportMetrics::default(),
        );
        let at = conn.accepted;
        assert_eq!(conn.check(at), Ok(at + Duration::from_secs(1)));
        assert_eq!(conn.check(at + Duration::from_secs(1)), Err("handshake"));
        conn.read_any.store(true, Ordering::Release);
        assert_eq!(
            conn.check(at + Duration::from_secs(1)),
            Ok(at + Duration::from_secs(6)),
            "a reply could go unsent from now on: look again within the reply-send timeout"
        );
    }

    #[test]
    fn idle_counts_from_the_end_of_the_last_request() {
        let conn = Arc::new(ConnState::new(
            limits(),
            Arc::default(),
            "test",
            TransportMetrics::default(),
        ));
        conn.read_any.store(true, Ordering::Release);
        let at = conn.accepted;
        let request = conn.request_started();
        assert!(conn.check(at + Duration::from_secs(30)).is_ok(), "busy");
        drop(request);
        let now = Instant::now();
        assert!(conn.check(now + Duration::from_secs(9)).is_ok());
        assert_eq!(conn.check(now + Duration::from_secs(11)), Err("idle"));
    }

    #[test]
    fn a_reply_left_unsent_breaks_the_reply_send_limit() {
        let conn = Arc::new(ConnState::new(
            limits(),
            Arc::default(),
            "test",
            TransportMetrics::default(),
        ));
        conn.read_any.store(true, Ordering::Release);
        let mut request = conn.request_started();
        request.frame_handed_over();
        let now = Instant::now();
        assert!(conn.check(now + Duration::from_secs(4)).is_ok());
        assert_eq!(conn.check(now + Duration::from_secs(6)), Err("reply_send"));
        request.frame_taken();
        assert!(conn.check(now + Duration::from_secs(6)).is_ok(), "sent");
    }
}
