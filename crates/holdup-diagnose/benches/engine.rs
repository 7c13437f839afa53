//! What the engine costs per request and per poll, alone: a tower service that answers at
//! once (or after `polls - 1` spurious wake-ups), called bare and through `DiagnoseLayer`,
//! driven by hand on one thread so that only the layer's own work differs.
//!
//! `cargo bench -p holdup-diagnose`. The per-poll cost is the slope between `polls = 1` and
//! `polls = 9`: (diagnosed(9) − diagnosed(1)) / 8 minus the same for bare.

use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use holdup_diagnose::DiagnoseLayer;
use tower_layer::Layer;
use tower_service::Service;

fn main() {
    divan::main();
}

/// A body of one frame and trailers, as a unary gRPC reply has.
#[derive(Default)]
struct Reply {
    sent: u8,
}

impl http_body::Body for Reply {
    type Data = &'static [u8];
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.sent += 1;
        Poll::Ready(match self.sent {
            1 => Some(Ok(http_body::Frame::data(&b"\0\0\0\0\x03\x0a\x01x"[..]))),
            2 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(http_body::Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

/// Answers after being polled `polls` times (waking itself in between, as a future that
/// waits for something already there does).
#[derive(Clone, Copy)]
struct Echo {
    polls: u32,
}

impl Service<http::Request<()>> for Echo {
    type Response = http::Response<Reply>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let mut left = self.polls;
        Box::pin(std::future::poll_fn(move |cx| {
            left -= 1;
            if left == 0 {
                Poll::Ready(Ok(http::Response::new(Reply::default())))
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }))
    }
}

/// One request through `service`, its response head and body polled to the end.
fn one<S, B>(service: &mut S)
where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    B: http_body::Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    let request = http::Request::post("/bench.Echo/Fast").body(()).unwrap();
    let mut future = pin!(service.call(request));
    let response = loop {
        if let Poll::Ready(response) = future.as_mut().poll(&mut cx) {
            break response.ok().unwrap();
        }
    };
    let mut body = pin!(response.into_body());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
}

#[divan::bench(args = [1, 9])]
fn bare(bencher: divan::Bencher, polls: u32) {
    let mut service = Echo { polls };
    bencher.bench_local(|| one(&mut service));
}

#[divan::bench(args = [1, 9])]
fn diagnosed(bencher: divan::Bencher, polls: u32) {
    let mut service = DiagnoseLayer::new().layer(Echo { polls });
    bencher.bench_local(|| one(&mut service));
}
