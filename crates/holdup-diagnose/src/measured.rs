//! The wrapper that measures a request's future: it times every poll (and its on-CPU part),
//! wraps the waker to learn when the future became ready, and writes both into the request's
//! [`Timeline`]. This one mechanism replaces the three that timed polls before (a poll timer,
//! a tracing enter/exit watchdog and a tokio-metrics `TaskMonitor` per request).
//!
//! The waker wrapping is what tokio-console and tokio-metrics do per task: a wake records the
//! time, so the next poll knows how long the future was ready but unpolled (scheduled) and how
//! long it was parked before that (idle).

use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use atomic_waker::AtomicWaker;

use super::{
    clock::{self, now_ns},
    occupancy, resource,
    timeline::Timeline,
};

/// The waker the measured future sees: it notes when it was first woken since the last poll
/// began, ends the request's parked stretch, and wakes the real task.
#[derive(Debug)]
struct WakeFlag {
    /// Engine time of the first wake since the last poll began; 0 when none.
    woken_at: AtomicU64,
    task: AtomicWaker,
    /// Weak: a waker kept by some resource must not keep a finished request's record alive.
    timeline: Weak<Timeline>,
    depth: usize,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Dated from when its cause reached the machine, if the waker is a connection task
        // that just read it (`read_stamp`): the wait behind that task is then scheduled.
        let now = now_ns();
        let client_read = super::read_stamp::client_read_before(now);
        let now = client_read.unwrap_or(now);
        if self
            .woken_at
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && let Some(timeline) = self.timeline.upgrade()
        {
            let at = timeline.woken(self.depth, now, client_read.is_some());
            if at != now {
                self.woken_at.store(at, Ordering::Release);
            }
        }
        self.task.wake();
    }
}

thread_local! {
    /// The request this thread polls now (its future, handler task or streaming body): a
    /// span opened in that poll is one of its stages. Kept here rather than found through the
    /// request's span, which exists only when a layer other than the stage layer wants it.
    static POLLING: Cell<Option<Weak<Timeline>>> = const { Cell::new(None) };
}

/// The request polled on this thread now, if any.
pub(crate) fn polling_request() -> Option<Weak<Timeline>> {
    POLLING.with(|polling| {
        let current = polling.take();
        let copy = current.clone();
        polling.set(current);
        copy
    })
}

/// Sets [`POLLING`] for one poll; restores what was there (a request polled inside another's
/// poll, or nothing) when dropped, even if the poll panics.
struct Polling(Option<Weak<Timeline>>);

impl Polling {
    fn enter(timeline: Weak<Timeline>) -> Self {
        Self(POLLING.with(|polling| polling.replace(Some(timeline))))
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        let outer = self.0.take();
        POLLING.with(|polling| polling.set(outer));
    }
}

/// Meters the polls of one thing a request is made of (its future, or its response body):
/// times each poll and its on-CPU part, and wraps the waker to learn when it became ready.
#[derive(Debug)]
pub(crate) struct Meter {
    flag: Arc<WakeFlag>,
    waker: Waker,
    /// 0 for the request's first wrapper (its future, then its body); 1 for a handler task
    /// it handed the work to.
    depth: usize,
    /// When the metered thing became ready for its first poll (created or handed over).
    ready_since: u64,
    polled: bool,
    /// When the last poll ended (0 before the first).
    last_end: u64,
}

impl Meter {
    pub(crate) fn new(timeline: &Arc<Timeline>, depth: usize, ready_since: u64) -> Self {
        let flag = Arc::new(WakeFlag {
            woken_at: AtomicU64::new(0),
            task: AtomicWaker::new(),
            timeline: Arc::downgrade(timeline),
            depth,
        });
        let waker = Waker::from(Arc::clone(&flag));
        Self {
            flag,
            waker,
            depth,
            ready_since,
            polled: false,
            last_end: 0,
        }
    }

    /// Runs one poll, `poll`, measured into `timeline`; when `in_span`, spans the poll opens
    /// are the request's stages (and the request's span, if it has one, is entered).
    pub(crate) fn poll<T>(
        &mut self,
        timeline: &Timeline,
        cx: &mut Context<'_>,
        in_span: bool,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let woken = self.flag.woken_at.swap(0, Ordering::AcqRel);
        let ready = if !self.polled {
            self.polled = true;
            Some(self.ready_since)
        } else if woken == 0 {
            // Polled without a wake of ours (the task was woken for something else).
            None
        } else {
            Some(woken)
        };
        // Marked first: the start is the task poll's, when the runtime's hook read it for
        // this poll (a clock read saved, of five a call).
        let (own, start) = occupancy::request_poll_started(&timeline.identity, ready, now_ns);
        let own_mark = OwnMark(own);
        let ready_since = ready.unwrap_or(start);
        let cpu = clock::mark(start);
        timeline.poll_started(self.depth, ready_since, start, Some(cpu));
        self.flag.task.register(cx.waker());

        // Entered here rather than by `Instrument`: that wrapper also enters the span to drop the
        // future, and holds a clone of it; two of them per request were about 4 500 instructions.
        let entered = in_span.then(|| {
            (
                Polling::enter(Weak::clone(&self.flag.timeline)),
                timeline.span.enter(),
            )
        });
        resource::poll_begins();
        let polled = poll(&mut Context::from_waker(&self.waker));
        drop(entered);

        let end = now_ns();
        self.last_end = end;
        let used = clock::poll_cpu(cpu, start, end);
        own_mark.end(end);
        timeline.poll_ended(self.depth, start, end, used);
        timeline.engine.poll_held(
            &timeline.identity,
            &timeline.span,
            end - start,
            used.cpu_wait,
        );
        if polled.is_pending() {
            timeline.park(self.depth, end, &self.flag.woken_at, resource::pending_on());
        }
        polled
    }
}

pin_project_lite::pin_project! {
    /// A request's future (or one of its handler tasks), measured into its timeline.
    pub struct Measured<F> {
        #[pin]
        inner: F,
        timeline: Arc<Timeline>,
        meter: Meter,
        // Whether the request's span is entered while the future is polled: the future is the
        // request's own code, not only a wait for the task it was handed to.
        in_span: bool,
        done: bool,
    }

    impl<F> PinnedDrop for Measured<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.meter.depth > 0 && !*this.done {
                this.timeline.delegate_finished();
            }
        }
    }
}

impl<F> Measured<F> {
    /// The request's own future, ready now; polled inside the request's span when `in_span`.
    pub(crate) fn outer(
        timeline: Arc<Timeline>,
        inner: F,
        ready_since: u64,
        in_span: bool,
    ) -> Self {
        Self::new(timeline, inner, 0, ready_since, in_span)
    }

    /// A handler task the request hands its work to: its polls, waits and parked time are the
    /// request's from now on, and the request's own wrapper stops counting its parked time.
    pub(crate) fn handed_over(timeline: Arc<Timeline>, inner: F) -> Self {
        let depth = timeline.delegate_started();
        Self::new(timeline, inner, depth, now_ns(), true)
    }

    fn new(
        timeline: Arc<Timeline>,
        inner: F,
        depth: usize,
        ready_since: u64,
        in_span: bool,
    ) -> Self {
        let meter = Meter::new(&timeline, depth, ready_since);
        Self {
            inner,
            timeline,
            meter,
            in_span,
            done: false,
        }
    }

    /// When its last poll ended: the moment a future that is ready now became so, for its
    /// report, without another clock read.
    pub(crate) fn last_poll_end(&self) -> u64 {
        self.meter.last_end
    }
}

impl<F: Future> Future for Measured<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        let polled = this
            .meter
            .poll(this.timeline, cx, *this.in_span, |cx| inner.poll(cx));
        if polled.is_ready() {
            *this.done = true;
            if this.meter.depth > 0 {
                this.timeline.delegate_finished();
            }
        }
        polled
    }
}

/// The worker's mark of a request poll that no runtime hook began ([`occupancy`]'s own), ended
/// even if the poll panics: else the worker would still show the panicked request as its
/// holder, and every later wait elsewhere would blame it, until the worker's next request.
struct OwnMark(bool);

impl OwnMark {
    fn end(mut self, at: u64) {
        occupancy::request_poll_ended(std::mem::take(&mut self.0), at);
    }
}

impl Drop for OwnMark {
    fn drop(&mut self) {
        if self.0 {
            occupancy::request_poll_ended(true, now_ns());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{panic, time::Duration};

    use super::*;
    use crate::{
        engine::{Engine, EngineConfig},
        identity::Identity,
    };

    /// Outside a hooked runtime a request marks its own polls; a panic in one must not leave
    /// it holding the worker.
    #[test]
    fn a_poll_that_panics_leaves_no_holder_behind() {
        let who = Identity::untraced("/test.measured.Svc/Panics");
        let engine = Arc::new(Engine {
            config: EngineConfig::default(),
            #[cfg(feature = "prometheus")]
            metrics: None,
        });
        let timeline = Arc::new(Timeline::new(
            Arc::clone(&who),
            tracing::Span::none(),
            engine,
            now_ns(),
            false,
        ));
        let (failed, failed_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let future = Measured::outer(
                timeline,
                async { panic!("the handler failed") },
                now_ns(),
                false,
            );
            let mut future = Box::pin(future);
            let mut cx = Context::from_waker(Waker::noop());
            let polled = panic::catch_unwind(panic::AssertUnwindSafe(|| {
                let _ = future.as_mut().poll(&mut cx);
            }));
            failed.send(polled.is_err()).unwrap();
            // The thread (and its slot) lives on, as a runtime worker would.
            std::thread::sleep(Duration::from_millis(100));
        });
        assert!(failed_rx.recv().unwrap(), "the poll panicked");
        let bystander = Identity::untraced("/test.measured.Svc/Bystander");
        let now = now_ns();
        // A wait that began after the panic: the failed poll itself (which did hold the
        // worker) is over by then.
        let held = occupancy::holders_during(None, now, now + 1_000_000_000, &bystander);
        assert!(
            !held.iter().any(|h| h.holder.is_request(&who)),
            "a panicked request still holds its worker"
        );
    }
}
