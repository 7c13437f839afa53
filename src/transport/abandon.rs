//! The end of the shutdown grace, as the gRPC protocol allows it to be told: every call still
//! running is answered `UNAVAILABLE "server shutting down"` (a status the client can retry
//! elsewhere) instead of seeing its stream reset when the connection closes.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

/// The message of the status a call abandoned at the end of the grace gets.
pub const SHUTTING_DOWN: &str = "server shutting down";

/// Answers calls still running when `token` is cancelled.
#[derive(Debug, Clone)]
pub struct AbandonLayer {
    token: CancellationToken,
}

impl AbandonLayer {
    pub fn new(token: CancellationToken) -> Self {
        Self { token }
    }
}

impl<S> Layer<S> for AbandonLayer {
    type Service = Abandon<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Abandon {
            inner,
            token: self.token.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Abandon<S> {
    inner: S,
    token: CancellationToken,
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
        let token = self.token.clone();
        Box::pin(async move {
            tokio::select! {
                biased;
                response = call => response,
                () = token.cancelled() => {
                    Ok(tonic::Status::unavailable(SHUTTING_DOWN).into_http())
                }
            }
        })
    }
}
