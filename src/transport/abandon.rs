//! The end of the shutdown grace, as the gRPC protocol allows it to be told: every call still
//! running is answered `UNAVAILABLE "server shutting down"` (a status the client can retry
//! elsewhere) instead of seeing its stream reset when the connection closes.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use super::signal::Signal;

/// The message of the status a call abandoned at the end of the grace gets.
pub const SHUTTING_DOWN: &str = "server shutting down";

/// Answers calls still running when `abandonment` is raised.
#[derive(Debug, Clone)]
pub struct AbandonLayer {
    abandonment: Arc<Signal>,
}

impl AbandonLayer {
    pub fn new(abandonment: Arc<Signal>) -> Self {
        Self { abandonment }
    }
}

impl<S> Layer<S> for AbandonLayer {
    type Service = Abandon<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Abandon {
            inner,
            abandonment: Arc::clone(&self.abandonment),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Abandon<S> {
    inner: S,
    abandonment: Arc<Signal>,
}

impl<S, B> Service<Request<B>> for Abandon<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        let abandonment = Arc::clone(&self.abandonment);
        Box::pin(async move {
            tokio::select! {
                biased;
                response = call => response,
                () = abandonment.raised() => {
                    Ok(tonic::Status::unavailable(SHUTTING_DOWN).into_http())
                }
            }
        })
    }
}
