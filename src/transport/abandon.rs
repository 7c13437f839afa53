//! The end of the shutdown grace, as the gRPC protocol allows it to be told: every call still
//! running is answered `UNAVAILABLE "server shutting down"` (a status the client can retry
//! elsewhere) instead of seeing its stream reset when the connection closes.

use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use http::{Request, Response};
use tokio::sync::Notify;
use tower::{Layer, Service};

/// The message of the status a call abandoned at the end of the grace gets.
pub const SHUTTING_DOWN: &str = "server shutting down";

/// Wait lists the running calls are spread over (see [`Abandonment`]).
const SHARDS: usize = 8;

/// The end of the grace, as every running call waits for it. Every call checks it and, while
/// it runs, waits on it, so it must cost a call next to nothing: a `CancellationToken` locked
/// one process-wide mutex on every poll of every call (its `is_cancelled`) and once more to
/// join and to leave its one wait list, which the transport threads then contended for. Here a
/// check is an atomic load, and a call joins one of a few wait lists, picked per thread.
#[derive(Debug)]
pub struct Abandonment {
    abandoned: AtomicBool,
    waiters: [Notify; SHARDS],
}

impl Default for Abandonment {
    fn default() -> Self {
        Self {
            abandoned: AtomicBool::new(false),
            waiters: std::array::from_fn(|_| Notify::new()),
        }
    }
}

impl Abandonment {
    /// Answers every call still running, and every call that starts from now on.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        for waiters in &self.waiters {
            waiters.notify_waiters();
        }
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Ready once [`abandon`](Self::abandon) was called.
    pub async fn abandoned(&self) {
        let notified = self.shard().notified();
        tokio::pin!(notified);
        // Joined before the check: an `abandon` after the check wakes it, one before it is
        // seen by it.
        notified.as_mut().enable();
        if self.is_abandoned() {
            return;
        }
        notified.await;
    }

    /// This thread's wait list: calls on one thread share one, threads rarely do.
    fn shard(&self) -> &Notify {
        thread_local! {
            static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let index = SHARD.with(|shard| {
            shard.get().unwrap_or_else(|| {
                let index = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
                shard.set(Some(index));
                index
            })
        });
        &self.waiters[index]
    }
}

/// Answers calls still running when the [`Abandonment`] says so.
#[derive(Debug, Clone)]
pub struct AbandonLayer {
    abandonment: Arc<Abandonment>,
}

impl AbandonLayer {
    pub fn new(abandonment: Arc<Abandonment>) -> Self {
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
    abandonment: Arc<Abandonment>,
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
                () = abandonment.abandoned() => {
                    Ok(tonic::Status::unavailable(SHUTTING_DOWN).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Bounds each wait: a wake that never comes fails the test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_waiting_call_is_woken_on_every_thread() {
        let abandonment = Arc::new(Abandonment::default());
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(64);
        let waiters: Vec<_> = (0..64)
            .map(|_| {
                let abandonment = Arc::clone(&abandonment);
                let ready = ready_tx.clone();
                tokio::spawn(async move {
                    let abandoned = abandonment.abandoned();
                    tokio::pin!(abandoned);
                    // Polled once (joins a wait list), then reported as waiting.
                    assert!(futures_poll_once(abandoned.as_mut()).await.is_pending());
                    ready.send(()).await.expect("test alive");
                    abandoned.await;
                })
            })
            .collect();
        for _ in 0..64 {
            ready_rx.recv().await.expect("every waiter reports");
        }
        assert!(!abandonment.is_abandoned());
        abandonment.abandon();
        for waiter in waiters {
            tokio::time::timeout(LIMIT, waiter)
                .await
                .expect("woken by abandon")
                .expect("waiter did not panic");
        }
    }

    #[tokio::test]
    async fn a_call_that_starts_after_the_end_is_answered_at_once() {
        let abandonment = Abandonment::default();
        abandonment.abandon();
        tokio::time::timeout(LIMIT, abandonment.abandoned())
            .await
            .expect("ready at once");
    }

    /// Polls `future` once and says what it returned.
    async fn futures_poll_once<F: Future + Unpin>(mut future: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut future).poll(cx))).await
    }
}
