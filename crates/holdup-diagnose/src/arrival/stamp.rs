//! The hyper service that stamps each request in its connection task.
//!
//! hyper calls `Service::call` inside the connection task, as soon as it has parsed a
//! request's head. A tower layer runs later: tonic's own server (and hyper-util's
//! `TowerToHyperService`) wraps the tower stack in a `Oneshot` future, which first runs in the
//! task hyper spawns for the request (HTTP/2), after that task's own wait for a worker. So the
//! stamp is put into the request's extensions here, and the tower service is then called the
//! same way `TowerToHyperService` does (clone, then `oneshot`), inside a future that notes
//! the request task's first poll ([`super::first_poll`]).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::Request;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};

use super::{ReadMarks, first_poll};
use crate::clock::now_ns;

/// A `hyper::service::Service` that inserts an [`Arrival`](super::Arrival) into each request's
/// extensions, from its connection's [`ReadMarks`], then runs the tower service `S`.
#[derive(Debug, Clone)]
pub struct Stamp<S> {
    inner: TowerToHyperService<S>,
    marks: Arc<ReadMarks>,
}

impl<S> Stamp<S> {
    /// Stamps the requests of the connection whose reads leave `marks` (see
    /// [`TimestampedStream::marks`](super::TimestampedStream::marks)) and hands them to
    /// `service`.
    pub fn new(service: S, marks: Arc<ReadMarks>) -> Self {
        Self {
            inner: TowerToHyperService::new(service),
            marks,
        }
    }
}

impl<S, B> hyper::service::Service<Request<B>> for Stamp<S>
where
    S: tower_service::Service<Request<B>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Stamped<TowerToHyperServiceFuture<S, Request<B>>>;

    fn call(&self, mut request: Request<B>) -> Self::Future {
        let arrival = self.marks.arrival_now();
        tracing::trace!(
            path = request.uri().path(),
            kernel = ?arrival.kernel,
            read_at = arrival.read_at,
            stamped_at = arrival.stamped_at,
            setup_wait = ?arrival.setup_wait,
            "request stamped"
        );
        request.extensions_mut().insert(arrival);
        Stamped {
            inner: self.inner.call(request),
            first_polled: 0,
            parked: false,
        }
    }
}

pin_project_lite::pin_project! {
    /// A stamped request's whole service stack, run in its task: notes the task's first poll
    /// and, once the stack has waited (returned `Pending`) since, says it to the engine's
    /// layer, wherever in the stack that layer is, so that a wait in the layers before it is
    /// not taken for a wait for a worker. A stack that reaches the layer in its first poll
    /// waited nowhere before it: the layer is told nothing.
    #[derive(Debug)]
    pub struct Stamped<F> {
        #[pin]
        inner: F,
        first_polled: u64,
        parked: bool,
    }
}

impl<F: Future> Future for Stamped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if *this.first_polled == 0 {
            *this.first_polled = now_ns().max(1);
        }
        let said = if *this.parked { *this.first_polled } else { 0 };
        let _said = first_poll::Scope::enter(said);
        let polled = this.inner.poll(cx);
        *this.parked |= polled.is_pending();
        polled
    }
}
