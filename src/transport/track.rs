//! A tower layer that tells each connection's watchdog what its requests do: when a request
//! starts and ends (idle timeout), and when a reply frame waits for the client to make room
//! for it (reply-send timeout).
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
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::connection::{ConnState, ConnectionInfo, InFlight};

/// Wraps a service so that each request reports to its connection's watchdog.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
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

impl<S, B, RB> Service<Request<B>> for Track<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<TrackedBody<RB>>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let in_flight = connection_of(&mut request).map(|conn| conn.request_started());
        TrackFuture {
            inner: self.inner.call(request),
            in_flight,
        }
    }
}

pin_project! {
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, RB, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<TrackedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
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
