//! A tower layer that tells each connection's watchdog what its requests do: when a request
//! starts and ends (idle timeout), and when a reply frame waits for the client to make room
//! for it (reply-send timeout). It also times the request body itself (request-body timeout):
//! the watchdog counts a request in flight from its headers, so a request whose message never
//! arrives in full would keep its connection from ever being idle, and pin its stream, its
//! buffered bytes and its handler for as long as the client likes.
//!
//! The request-body timer costs nothing while the body is there: it is armed only when a poll
//! of the body finds nothing to read (`Pending`), and disarmed when a whole message (gRPC's
//! length prefix says when; for plain HTTP, the end of the body) has arrived. A unary request
//! whose headers and message came together never arms it. Bytes that trickle in without
//! completing a message do not disarm it, so a client cannot hold a stream by sending one
//! byte at a time. A streaming request waits for each next message under the same timeout:
//! reflection's stream, which clients use for a few requests in a row, is ended when idle
//! that long.
//!
//! hyper polls a reply body for its next frame only once the previous one is sent; a frame
//! handed over and not followed by the next poll is a frame the client has given no room for.
//! A reply that is merely waiting for its own next message (a health `Watch`) is being polled,
//! so it never counts.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::connection::{ConnState, ConnectionInfo, InFlight};

/// Wraps a service so that each request reports to its connection's watchdog.
#[derive(Debug, Clone, Copy)]
pub struct TrackLayer {
    grpc: bool,
}

impl TrackLayer {
    /// For gRPC: a request body is a series of length-prefixed messages, each of which must
    /// arrive within the request-body timeout of the server waiting for it.
    pub fn grpc() -> Self {
        Self { grpc: true }
    }

    /// For plain HTTP: the whole body must arrive within the timeout.
    pub fn http() -> Self {
        Self { grpc: false }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track {
            inner,
            grpc: self.grpc,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
    grpc: bool,
}

/// The connection a request came on: plain, or under TLS. Also puts tonic's own
/// `TcpConnectInfo` back, so that `Request::remote_addr` keeps working.
fn connection_of<B>(request: &mut Request<B>) -> Option<Arc<ConnState>> {
    let extensions = request.extensions_mut();
    let info = extensions
        .get::<ConnectionInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<ConnectionInfo>>()
                .map(|tls| tls.get_ref())
        })?
        .clone();
    if extensions.get::<TcpConnectInfo>().is_none() {
        extensions.insert(info.tcp);
    }
    Some(info.state)
}

/// The answer to a request over the listener's `--max-open-requests`: gRPC's
/// `RESOURCE_EXHAUSTED` as a trailers-only response (tonic's own encoding of a status), or
/// HTTP 503; the body is never read.
fn refusal<RB: Default>(grpc: bool, max: usize) -> Response<RB> {
    if grpc {
        return tonic::Status::resource_exhausted(format!(
            "the server has {max} requests open (--max-open-requests); retry later"
        ))
        .into_http();
    }
    let mut response = Response::new(RB::default());
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response
}

impl<S, B, RB> Service<Request<B>> for Track<S>
where
    S: Service<Request<TimedBody<B>>, Response = Response<RB>>,
    RB: Default,
{
    type Response = Response<TrackedBody<RB>>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let conn = connection_of(&mut request);
        let in_flight = conn.as_ref().map(|conn| conn.request_started());
        let grpc = self.grpc;
        if let Some(max) = conn.as_ref().and_then(|conn| conn.over_open_requests()) {
            // Dropping `request` drops its body unread: HTTP/2 resets what is left of it.
            drop(in_flight);
            return TrackFuture {
                inner: None,
                refused: Some(refusal(grpc, max)),
                in_flight: None,
            };
        }
        let request = request.map(|inner| TimedBody {
            inner,
            timer: None,
            framing: grpc.then(Framing::default),
            conn,
        });
        TrackFuture {
            inner: Some(self.inner.call(request)),
            refused: None,
            in_flight,
        }
    }
}

pin_project! {
    pub struct TrackFuture<F, RB> {
        // `None` for a refused request, answered with `refused`.
        #[pin]
        inner: Option<F>,
        refused: Option<Response<RB>>,
        in_flight: Option<InFlight>,
    }
}

impl<F, RB, E> Future for TrackFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<TrackedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let response = this
                .refused
                .take()
                .expect("a refused request's future is polled once");
            return Poll::Ready(Ok(response.map(|inner| TrackedBody {
                inner,
                in_flight: None,
            })));
        };
        let response = ready!(inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, in_flight })))
    }
}

pin_project! {
    /// A reply body that reports each frame it hands to HTTP/2; the request ends when it is
    /// dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Some(in_flight) = this.in_flight.as_mut() {
            in_flight.frame_taken();
        }
        let frame = ready!(this.inner.poll_frame(cx));
        if let (Some(Ok(frame)), Some(in_flight)) = (&frame, this.in_flight.as_mut())
            && frame.is_data()
        {
            in_flight.frame_handed_over();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a gRPC request body is in its current message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Framing {
    /// Bytes of the 5-byte prefix seen so far (0 between messages).
    prefix_seen: u8,
    /// The prefix's length bytes, as far as seen.
    length: u32,
    /// Bytes of the message itself still to come.
    body_left: u32,
}

impl Framing {
    /// The size of a gRPC message prefix: a flag byte and a big-endian u32 length.
    const PREFIX: u8 = 5;

    /// Takes a DATA frame; whether it completed a message (the next one may have begun).
    fn take(&mut self, mut data: &[u8]) -> bool {
        let mut completed = false;
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self
                    .body_left
                    .min(u32::try_from(data.len()).unwrap_or(u32::MAX));
                self.body_left -= n;
                data = &data[n as usize..];
                completed |= self.body_left == 0;
                continue;
            }
            let byte = data[0];
            data = &data[1..];
            if self.prefix_seen > 0 {
                self.length = (self.length << 8) | u32::from(byte);
            }
            self.prefix_seen += 1;
            if self.prefix_seen == Self::PREFIX {
                completed |= self.length == 0;
                *self = Self {
                    body_left: self.length,
                    ..Self::default()
                };
            }
        }
        completed
    }
}

pin_project! {
    /// A request body that ends the request (DEADLINE_EXCEEDED) when its current message has
    /// waited the connection's request-body timeout for the client to send it. Not CANCELLED:
    /// tonic takes a CANCELLED request body for the end of the stream.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        // Armed on the first poll that finds nothing to read, disarmed by a whole message.
        #[pin]
        timer: Option<Sleep>,
        // `None` for plain HTTP: only the end of the body disarms the timer.
        framing: Option<Framing>,
        // `None` off a tracked connection: never timed.
        conn: Option<Arc<ConnState>>,
    }
}

/// What a timed body fails with: the inner body's error, or the timeout's status
/// (tonic finds a `Status` in an error and answers with it).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for TimedBody<B>
where
    B: Body,
    B::Data: AsRef<[u8]>,
    B::Error: Into<BodyError>,
{
    type Data = B::Data;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                let completed = match (&frame, this.framing.as_mut()) {
                    (Some(Ok(frame)), Some(framing)) => frame
                        .data_ref()
                        .is_some_and(|data| framing.take(data.as_ref())),
                    (None, _) => true,
                    _ => false,
                };
                if completed && this.timer.is_some() {
                    this.timer.set(None);
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(conn) = this.conn.as_ref() else {
                    return Poll::Pending;
                };
                if this.timer.is_none() {
                    this.timer
                        .set(Some(tokio::time::sleep(conn.request_body_timeout())));
                }
                let Some(timer) = this.timer.as_mut().as_pin_mut() else {
                    return Poll::Pending;
                };
                if timer.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                conn.request_body_timed_out();
                let status = tonic::Status::deadline_exceeded(format!(
                    "the request's message did not arrive within {} ms \
                     (--request-body-timeout-ms)",
                    conn.request_body_timeout().as_millis()
                ));
                // Counted once: the body is not timed again.
                *this.conn = None;
                Poll::Ready(Some(Err(Box::new(status))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::Framing;

    #[test]
    fn framing_finds_whole_messages_across_frames() {
        let mut framing = Framing::default();
        // A 3-byte message split after its flag byte, then after one body byte.
        assert!(!framing.take(&[0]));
        assert!(!framing.take(&[0, 0, 0, 3, b'a']));
        assert!(framing.take(b"bc"));
        assert_eq!(framing, Framing::default(), "between messages");
        // An empty message, then half of a 16 KiB one, in one frame.
        assert!(framing.take(&[0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 1, 2]));
        assert!(!framing.take(&[0; 1000]), "a trickle completes nothing");
        assert_eq!(framing.body_left, 16_384 - 2 - 1000);
        assert!(framing.take(&vec![0; 16_384 - 1002]));
    }
}
