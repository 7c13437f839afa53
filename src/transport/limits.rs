//! How much one listener lets its clients hold: connections, time without a preface, time
//! idle, time a request may wait for a client that does not send it, time a reply may wait
//! for a client that does not read it.
//!
//! Each listener (gRPC, `/metrics`, the upstream simulator) takes one [`ConnectionLimits`];
//! the defaults below are the flags' defaults.

use std::time::Duration;

/// Connections one listener keeps open at once; more are accepted and closed at once (counted
/// in `holdup_transport_connections_refused_total`). A lab is called by a few clients, load
/// generators (one to a few connections each) and probes: 128 leaves ample room. Memory is
/// bounded by [`DEFAULT_MAX_OPEN_REQUESTS`], not by this times the stream cap (docs/reliability.md,
/// "Transport limits").
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// HTTP/2 streams one connection may have open at once. 256 is above RFC 9113's advice of at
/// least 100 and above what `holdup load` keeps in flight per connection in its experiments,
/// and a quarter of the earlier 1 024, which let 40 stalled-reader connections pin 250 MB.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// A connection that has sent no byte (no HTTP/2 preface, no TLS hello, no HTTP/1 request
/// line) this long after it was accepted is closed: a real client sends its preface at once,
/// and five seconds forgive a slow network without letting idle sockets pile up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no request in flight for this long is closed. Longer than Prometheus'
/// scrape interval and the load generator's pauses, short enough that abandoned connections
/// free their slot within minutes. Clients reconnect on their next call.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests one listener keeps open at once, across all its connections: more are refused at
/// once (gRPC `RESOURCE_EXHAUSTED`, HTTP 503) without their body being read, and counted in
/// `holdup_transport_requests_refused_total`. This, not connections × streams, is what bounds
/// the memory hostile clients can pin: a request whose message never completes holds about
/// 60 KiB, so 4 096 of them hold about 240 MiB, inside the 512 MiB the Kubernetes manifest
/// allows; and 4 096 is four times what `holdup load` keeps in flight by default, far past any
/// load a lab on a few cores can serve without queueing for seconds.
pub const DEFAULT_MAX_OPEN_REQUESTS: usize = 4_096;
/// How long a request may wait for the rest of its message (or, between messages, for the
/// next one or the end of the stream) before it is answered DEADLINE_EXCEEDED and its stream freed.
/// gRPC clients write a request's headers and message together, and the server's stream
/// window (64 KiB) is above the largest request (16 KiB), so a whole request arrives within
/// a round trip; a request still incomplete after ten seconds comes from a client that is
/// not sending it, and each one pins tens of KiB (docs/reliability.md, "Transport limits"). Same value as
/// the reply-send timeout, its mirror.
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply may wait for the client to make room for it (HTTP/2 flow control: the
/// client is not reading) before the connection is closed. Lab replies are a few hundred
/// bytes; a reader that takes ten seconds to accept one is stalled, not slow.
pub const DEFAULT_REPLY_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause after an accept fails for lack of resources (EMFILE, ENFILE, ENOMEM,
/// ENOBUFS); it doubles up to [`MAX_ACCEPT_BACKOFF`]. Short, so that a brief peak costs
/// little latency; doubling, so that a lasting one costs no CPU.
pub const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause between accept attempts while resources are exhausted: a second is what
/// hyper and axum wait, and new connections are served within a second of descriptors freeing.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Close a connection that sent no byte this long after accept.
    pub handshake_timeout: Duration,
    /// Close a connection with no request in flight for this long.
    pub idle_timeout: Duration,
    /// Close a connection whose reply has waited this long for the client to read.
    pub reply_send_timeout: Duration,
    /// End a request whose message has waited this long for the client to send it.
    pub request_body_timeout: Duration,
    /// Requests open at once on the listener, all connections together; more are refused.
    pub max_open_requests: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            reply_send_timeout: DEFAULT_REPLY_SEND_TIMEOUT,
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            max_open_requests: DEFAULT_MAX_OPEN_REQUESTS,
        }
    }
}
