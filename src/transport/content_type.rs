//! The gRPC over HTTP/2 spec's one clear rule on content-type: a request whose content-type
//! does not begin with `application/grpc` is answered HTTP 415 (Unsupported Media Type), not
//! decoded as if it were gRPC.
//!
//! What stays lenient, and why: `application/grpc+proto` and other `+suffix` forms are gRPC
//! (the spec allows them); a missing `te: trailers` is served, because proxies that strip it
//! exist and grpc-go serves it too; the method is not checked (tonic routes by path, and a GET
//! with a gRPC content-type is a broken client, not an attack); a unary call with two messages
//! is answered from the first, as grpc-go does.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response, StatusCode, header};
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcContentTypeLayer;

impl<S> Layer<S> for GrpcContentTypeLayer {
    type Service = GrpcContentType<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcContentType { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcContentType<S> {
    inner: S,
}

/// Whether `content_type` names gRPC: `application/grpc`, optionally `+codec` or parameters.
pub fn is_grpc(content_type: Option<&http::HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(..16))
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("application/grpc"))
}

impl<S, B, RB> Service<Request<B>> for GrpcContentType<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: Default + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_grpc(request.headers().get(header::CONTENT_TYPE)) {
            return Box::pin(self.inner.call(request));
        }
        tracing::debug!(
            content_type = ?request.headers().get(header::CONTENT_TYPE),
            path = %request.uri().path(),
            "refused: not a gRPC content-type"
        );
        let mut response = Response::new(RB::default());
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        Box::pin(std::future::ready(Ok(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert!(is_grpc(Some(&v("application/grpc"))));
        assert!(is_grpc(Some(&v("application/grpc+proto"))));
        assert!(is_grpc(Some(&v("Application/GRPC; charset=utf-8"))));
        assert!(!is_grpc(Some(&v("application/json"))));
        assert!(!is_grpc(Some(&v("text/plain"))));
        assert!(!is_grpc(None));
    }
}
