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
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use super::error::LabError;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug)]
pub struct ComputePool {
    sender: SyncSender<Job>,
    threads: usize,
    /// Jobs submitted but not yet started: the queue depth that metrics report.
    queued: Arc<AtomicUsize>,
}

impl ComputePool {
    /// Starts `threads` threads named `holdup-compute-N` sharing a queue of `capacity` jobs.
    ///
    /// # Errors
    /// The I/O error if a thread cannot be spawned.
    pub fn start(threads: usize, capacity: usize) -> io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("holdup-compute-{n}"))
                .spawn(move || work_loop(&receiver))?;
        }
        Ok(Self {
            sender,
            threads,
            queued: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
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
        let queued = Arc::clone(&self.queued);
        queued.fetch_add(1, Ordering::Relaxed);
        let started = Arc::clone(&queued);
        let boxed: Job = Box::new(move || {
            started.fetch_sub(1, Ordering::Relaxed);
            // The caller may have gone; its result is then simply dropped.
            let _ = done.send(job(enqueued.elapsed()));
        });
        match self.sender.try_send(boxed) {
            Ok(()) => Ok(result),
            Err(TrySendError::Full(_)) => {
                let waiting = queued.fetch_sub(1, Ordering::Relaxed) - 1;
                Err(LabError::ComputeQueueFull {
                    queued: waiting,
                    threads: self.threads,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                queued.fetch_sub(1, Ordering::Relaxed);
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
        let pool = ComputePool::start(1, 4).unwrap();
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
        let pool = ComputePool::start(1, 1).unwrap();
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
