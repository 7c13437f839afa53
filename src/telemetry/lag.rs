//! The runtime lag probe: a timer task on the lab runtime that measures its own lateness.
//!
//! A timer due at `t` fires at `t` plus however long every worker was busy with something
//! else. That lateness is what any task on the runtime pays at that moment, whoever caused it.

use std::time::Duration;

use tokio::time::Instant;

/// Short enough to catch a 10 ms stall, long enough to cost nothing measurable.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(25);

/// Runs until its runtime stops or the task is aborted, handing each lateness to `record`.
pub async fn probe(interval: Duration, mut record: impl FnMut(Duration)) {
    loop {
        let due = Instant::now() + interval;
        tokio::time::sleep_until(due).await;
        record(Instant::now().saturating_duration_since(due));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocked_worker_shows_as_lag() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(probe(Duration::from_millis(5), move |lag| {
            sink.lock().unwrap().push(lag);
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Block the only worker, on purpose.
        tokio::spawn(async { std::thread::sleep(Duration::from_millis(120)) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        task.abort();
        let worst = seen
            .lock()
            .unwrap()
            .iter()
            .copied()
            .max()
            .unwrap_or_default();
        assert!(
            worst >= Duration::from_millis(60),
            "worst lag {worst:?} does not show a 120 ms block"
        );
    }
}
