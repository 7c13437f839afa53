//! A bounded, dedicated pool of compute threads with a bounded queue.
//!
//! `spawn_blocking` is elastic (up to 512 threads by default) and unbounded in its queue, so
//! a flood of CPU jobs oversubscribes the cores and is never refused. This pool has a fixed
//! number of threads and a fixed queue: a job that finds the queue full is refused at once
//! with RESOURCE_EXHAUSTED, and the time a job waited for a thread is measured.

use std::{
    io,
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::sync::oneshot;

use super::error::LabError;
use crate::telemetry::metrics::{latency_histogram, register_fields, to_i64};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Offloaded CPU work in Prometheus: `holdup_compute_{threads,queue_depth,rejected}` and
/// `holdup_compute_queue_wait_seconds`.
#[derive(Debug, Clone)]
pub struct ComputeMetrics {
    threads: Gauge,
    /// Jobs submitted but not yet started: the pool counts its queue in this gauge itself.
    queue_depth: Gauge,
    queue_wait: Histogram,
    rejected: Counter,
}

impl Default for ComputeMetrics {
    /// Metrics in no registry, for a pool nobody scrapes.
    fn default() -> Self {
        Self {
            threads: Gauge::default(),
            queue_depth: Gauge::default(),
            queue_wait: latency_histogram(),
            rejected: Counter::default(),
        }
    }
}

impl ComputeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        register_fields!(registry.sub_registry_with_prefix("holdup_compute"), metrics, {
            threads: "Threads of the compute pool",
            queue_depth: "Jobs waiting for a compute thread",
            queue_wait [Seconds]:
                "Time offloaded CPU jobs waited for a thread (compute pool and blocking pool)",
            rejected: "Jobs refused because the compute queue was full",
        });
        metrics
    }
}

#[derive(Debug)]
pub struct ComputePool {
    sender: SyncSender<Job>,
    threads: usize,
    metrics: ComputeMetrics,
}

impl ComputePool {
    /// Starts `threads` threads named `holdup-compute-N` sharing a queue of `capacity` jobs.
    ///
    /// # Errors
    /// The I/O error if a thread cannot be spawned.
    pub fn start(threads: usize, capacity: usize, metrics: ComputeMetrics) -> io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("holdup-compute-{n}"))
                .spawn(move || work_loop(&receiver))?;
        }
        metrics.threads.set(to_i64(threads));
        Ok(Self {
            sender,
            threads,
            metrics,
        })
    }

    /// Jobs submitted but not yet started.
    pub fn queued(&self) -> usize {
        usize::try_from(self.metrics.queue_depth.get()).unwrap_or(0)
    }

    /// Records how long an offloaded job (this pool's, or `spawn_blocking`'s) waited for a
    /// thread.
    pub fn observe_queue_wait(&self, waited: Duration) {
        self.metrics.queue_wait.observe(waited.as_secs_f64());
    }

    /// Queues `job`, which receives how long it waited for a thread.
    ///
    /// # Errors
    /// [`LabError::ComputeQueueFull`] at once when the queue is full.
    pub fn submit<R, F>(&self, job: F) -> Result<oneshot::Receiver<R>, LabError>
    where
        F: FnOnce(Duration) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let enqueued = Instant::now();
        let queued = &self.metrics.queue_depth;
        queued.inc();
        let started = queued.clone();
        let boxed: Job = Box::new(move || {
            started.dec();
            // The caller may have gone; its result is then simply dropped.
            let _ = done.send(job(enqueued.elapsed()));
        });
        match self.sender.try_send(boxed) {
            Ok(()) => Ok(result),
            Err(TrySendError::Full(_)) => {
                let waiting = queued.dec() - 1;
                self.metrics.rejected.inc();
                Err(LabError::ComputeQueueFull {
                    queued: usize::try_from(waiting).unwrap_or(0),
                    threads: self.threads,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                queued.dec();
                Err(LabError::ShuttingDown)
            }
        }
    }
}

fn work_loop(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // A poisoned lock means another compute thread panicked while receiving, which
        // `recv` cannot do; treat it like a closed queue and stop.
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_measures_queue_wait() {
        let pool = ComputePool::start(1, 4, ComputeMetrics::default()).unwrap();
        let first = pool
            .submit(|_| std::thread::sleep(Duration::from_millis(50)))
            .unwrap();
        let second = pool.submit(|waited| waited).unwrap();
        first.await.unwrap();
        let waited = second.await.unwrap();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
    }

    #[tokio::test]
    async fn refuses_when_full() {
        let pool = ComputePool::start(1, 1, ComputeMetrics::default()).unwrap();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let running = pool
            .submit(move |_| {
                let _ = hold.recv();
            })
            .unwrap();
        // Wait until the thread took the first job, so exactly one slot of queue remains.
        while pool.queued() > 0 {
            tokio::task::yield_now().await;
        }
        let queued = pool.submit(|_| ()).unwrap();
        let refused = pool.submit(|_| ()).unwrap_err();
        assert!(matches!(refused, LabError::ComputeQueueFull { .. }));
        release.send(()).unwrap();
        running.await.unwrap();
        queued.await.unwrap();
    }
}
