//! The per-request delay split: where one request's time went.
//!
//! Each handler future is wrapped twice: in a tokio-metrics [`TaskMonitor`] of its own, which
//! wraps the waker to tell *scheduled* time (woken, waiting for a worker) from *idle* time
//! (parked on I/O, a timer, a pool), and in [`Timed`], which records the longest single poll.
//! These are the same busy/scheduled/idle numbers tokio-console shows per task, here per
//! request and returned in the reply.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio_metrics::TaskMetrics;

use crate::proto;

/// Below this total a request is not late, whatever its split says.
pub const NOT_LATE_BELOW: Duration = Duration::from_millis(1);

pin_project_lite::pin_project! {
    /// A future that counts its polls and remembers the longest one.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        stats: PollStats,
    }
}

/// What [`Timed`] saw of its future's polls.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollStats {
    pub polls: u64,
    pub max_poll: Duration,
}

impl<F> Timed<F> {
    pub fn new(inner: F) -> Self {
        Self {
            inner,
            stats: PollStats::default(),
        }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = (F::Output, PollStats);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let start = Instant::now();
        let polled = this.inner.poll(cx);
        this.stats.polls += 1;
        this.stats.max_poll = this.stats.max_poll.max(start.elapsed());
        polled.map(|out| (out, *this.stats))
    }
}

/// Time a handler spent queued for a bounded resource, reported by the handler itself
/// (only it knows which part of its idle time was a queue).
#[derive(Debug, Clone, Default)]
pub struct QueueClock(Arc<AtomicU64>);

impl QueueClock {
    pub fn add(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// What a handler's busy and idle time mean, known from the RPC and its mode before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Causes {
    /// The verdict when polling dominates: `own-cpu`, or `blocking-call` for a thread sleep.
    pub busy: &'static str,
    /// The verdict when waiting (other than in a queue) dominates: `backend`, `upstream`,
    /// `offloaded-cpu`, `timer`.
    pub idle: &'static str,
}

impl Causes {
    pub const CPU: Self = Self {
        busy: "own-cpu",
        idle: "waiting",
    };

    pub const fn waiting_on(idle: &'static str) -> Self {
        Self {
            busy: "own-cpu",
            idle,
        }
    }
}

/// One request's delay split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    pub total: Duration,
    pub busy: Duration,
    pub scheduled: Duration,
    pub idle: Duration,
    pub queue: Duration,
    pub polls: u64,
    pub max_poll: Duration,
}

impl Split {
    /// Combines the task monitor's counters (of a monitor that watched only this request)
    /// with the poll stats and the handler's queue time.
    pub fn from_metrics(
        total: Duration,
        task: &TaskMetrics,
        polls: PollStats,
        queue: Duration,
    ) -> Self {
        Self {
            total,
            busy: task.total_poll_duration,
            // The wait between hand-over and first poll is a wait for a worker too.
            scheduled: task.total_first_poll_delay + task.total_scheduled_duration,
            idle: task.total_idle_duration,
            queue: queue.min(task.total_idle_duration),
            polls: polls.polls,
            max_poll: polls.max_poll,
        }
    }

    /// The dominant cause, in one word.
    pub fn verdict(&self, causes: Causes) -> &'static str {
        if self.total < NOT_LATE_BELOW {
            return "none";
        }
        let waiting = self.idle.saturating_sub(self.queue);
        [
            (self.busy, causes.busy),
            (self.scheduled, "runtime-contention"),
            (self.queue, "resource-queue"),
            (waiting, causes.idle),
        ]
        .into_iter()
        .max_by_key(|(time, _)| *time)
        .map_or("none", |(_, verdict)| verdict)
    }

    pub fn to_proto(&self, causes: Causes, trace_id: String) -> proto::Diagnostics {
        proto::Diagnostics {
            trace_id,
            total_us: micros(self.total),
            busy_us: micros(self.busy),
            scheduled_us: micros(self.scheduled),
            idle_us: micros(self.idle),
            queue_us: micros(self.queue),
            verdict: self.verdict(causes).to_owned(),
            polls: self.polls,
            max_poll_us: micros(self.max_poll),
        }
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn verdict_names_the_largest_component() {
        let split = Split {
            total: ms(500),
            busy: ms(1),
            scheduled: ms(480),
            idle: ms(19),
            ..Split::default()
        };
        assert_eq!(split.verdict(Causes::CPU), "runtime-contention");

        let queued = Split {
            total: ms(300),
            idle: ms(299),
            queue: ms(200),
            ..Split::default()
        };
        assert_eq!(
            queued.verdict(Causes::waiting_on("backend")),
            "resource-queue"
        );

        let backend = Split {
            queue: ms(50),
            ..queued
        };
        assert_eq!(backend.verdict(Causes::waiting_on("backend")), "backend");
    }

    #[test]
    fn a_quick_request_is_not_late() {
        let split = Split {
            total: Duration::from_micros(300),
            scheduled: Duration::from_micros(250),
            ..Split::default()
        };
        assert_eq!(split.verdict(Causes::CPU), "none");
    }

    #[tokio::test]
    async fn timed_counts_polls() {
        let ((), stats) = Timed::new(async {
            tokio::task::yield_now().await;
            std::thread::sleep(ms(5));
        })
        .await;
        assert_eq!(stats.polls, 2);
        assert!(stats.max_poll >= ms(5));
    }
}
