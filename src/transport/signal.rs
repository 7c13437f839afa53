//! A one-time signal that many futures check and wait on while they run: the end of the
//! shutdown grace for every running call ([`super::abandon`]), the close of every connection of
//! a listener ([`super::listener`]).
//!
//! Both are looked at on the hot path (every poll of every call, every read of every
//! connection), so a look must cost next to nothing. A `CancellationToken` locked one
//! process-wide mutex on every look (its `is_cancelled`) and kept one wait list for all its
//! waiters, which the transport threads then contended for. Here a look is an atomic load, and
//! a waiter joins one of a few wait lists, picked per thread.

use std::{
    cell::Cell,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use tokio::sync::Notify;

/// Wait lists the waiters are spread over.
const SHARDS: usize = 8;

#[derive(Debug)]
pub struct Signal {
    raised: AtomicBool,
    waiters: [Notify; SHARDS],
}

impl Default for Signal {
    fn default() -> Self {
        Self {
            raised: AtomicBool::new(false),
            waiters: std::array::from_fn(|_| Notify::new()),
        }
    }
}

impl Signal {
    /// Wakes every waiter, and makes every later wait end at once.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        for waiters in &self.waiters {
            waiters.notify_waiters();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Ready once [`raise`](Self::raise) was called.
    pub async fn raised(&self) {
        let notified = self.shard().notified();
        tokio::pin!(notified);
        // Joined before the check: a `raise` after the check wakes it, one before it is seen
        // by it.
        notified.as_mut().enable();
        if self.is_raised() {
            return;
        }
        notified.await;
    }

    /// [`raised`](Self::raised) as a future that owns its signal, for a struct to keep.
    pub fn raised_owned(self: Arc<Self>) -> Raised {
        Raised(Box::pin(async move { self.raised().await }))
    }

    /// This thread's wait list: waiters on one thread share one, threads rarely do.
    fn shard(&self) -> &Notify {
        thread_local! {
            static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
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

/// Ready once its [`Signal`] is raised ([`Signal::raised_owned`]).
pub struct Raised(Pin<Box<dyn Future<Output = ()> + Send + Sync>>);

impl Future for Raised {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Raised")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Bounds each wait: a wake that never comes fails the test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_waiter_is_woken_on_every_thread() {
        let signal = Arc::new(Signal::default());
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(64);
        let waiters: Vec<_> = (0..64)
            .map(|_| {
                let signal = Arc::clone(&signal);
                let ready = ready_tx.clone();
                tokio::spawn(async move {
                    let mut raised = signal.raised_owned();
                    // Polled once (joins a wait list), then reported as waiting.
                    assert!(poll_once(&mut raised).await.is_pending());
                    ready.send(()).await.expect("test alive");
                    raised.await;
                })
            })
            .collect();
        for _ in 0..64 {
            ready_rx.recv().await.expect("every waiter reports");
        }
        assert!(!signal.is_raised());
        signal.raise();
        for waiter in waiters {
            tokio::time::timeout(LIMIT, waiter)
                .await
                .expect("woken by raise")
                .expect("waiter did not panic");
        }
    }

    #[tokio::test]
    async fn a_wait_that_starts_after_the_raise_ends_at_once() {
        let signal = Signal::default();
        signal.raise();
        tokio::time::timeout(LIMIT, signal.raised())
            .await
            .expect("ready at once");
    }

    /// Polls `future` once and says what it returned.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
    }
}
