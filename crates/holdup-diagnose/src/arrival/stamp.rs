//! The hyper service that stamps each request in its connection task.
//!
//! hyper calls `Service::call` inside the connection task, as soon as it has parsed a
//! request's head. A tower layer runs later: tonic's own server (and hyper-util's
//! `TowerToHyperService`) wraps the tower stack in a `Oneshot` future, which first runs in the
//! task hyper spawns for the request (HTTP/2), after that task's own wait for a worker. So the
//! stamp is put into the request's extensions here, and the tower service is then called the
//! same way `TowerToHyperService` does (clone, then `oneshot`).

use std::sync::Arc;

use http::Request;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};

use super::ReadMarks;

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
    type Future = TowerToHyperServiceFuture<S, Request<B>>;

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
        self.inner.call(request)
    }
}
