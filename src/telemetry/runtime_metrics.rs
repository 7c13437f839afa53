//! The lab runtime in Prometheus: how late its lag probe fired (`holdup_runtime_lag_seconds`)
//! and tokio's own counters (`holdup_tokio_*`), mirrored at scrape time.

use std::{sync::Mutex, time::Duration};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::metrics::{latency_histogram, register_fields, to_i64};

#[derive(Debug)]
pub struct RuntimeMetrics {
    lag: Histogram,
    workers: Gauge,
    alive_tasks: Gauge,
    global_queue_depth: Gauge,
    local_queue_depth: Gauge,
    blocking_threads: Gauge,
    blocking_queue_depth: Gauge,
    worker_busy: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Busy time already added to `worker_busy`, so each scrape adds only the increase.
    busy_seen: Mutex<Duration>,
}

impl RuntimeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            lag: latency_histogram(),
            workers: Gauge::default(),
            alive_tasks: Gauge::default(),
            global_queue_depth: Gauge::default(),
            local_queue_depth: Gauge::default(),
            blocking_threads: Gauge::default(),
            blocking_queue_depth: Gauge::default(),
            worker_busy: Counter::default(),
            busy_seen: Mutex::new(Duration::ZERO),
        };
        registry.register_with_unit(
            "holdup_runtime_lag",
            "How late the lab runtime's probe timer fired: what every task there pays for blocked workers",
            Unit::Seconds,
            metrics.lag.clone(),
        );
        register_fields!(registry.sub_registry_with_prefix("holdup_tokio"), metrics, {
            workers: "Worker threads of the lab runtime",
            alive_tasks: "Tasks alive on the lab runtime",
            global_queue_depth: "Tasks in the lab runtime's injection queue",
            local_queue_depth: "Tasks in the lab workers' local queues, summed",
            blocking_threads: "Threads of the lab runtime's blocking pool",
            blocking_queue_depth: "spawn_blocking jobs waiting for a thread",
            worker_busy [Seconds]: "Time the lab runtime's workers spent busy, summed over workers",
        });
        metrics
    }

    /// What the lag probe records into.
    pub fn lag(&self) -> Histogram {
        self.lag.clone()
    }

    /// Mirrors the lab runtime's counters into the gauges.
    pub fn sample(&self, handle: &tokio::runtime::Handle) {
        let m = handle.metrics();
        self.workers.set(to_i64(m.num_workers()));
        self.alive_tasks.set(to_i64(m.num_alive_tasks()));
        self.global_queue_depth.set(to_i64(m.global_queue_depth()));
        let busy: Duration = (0..m.num_workers())
            .map(|w| m.worker_total_busy_duration(w))
            .sum();
        #[cfg(tokio_unstable)]
        {
            let local: usize = (0..m.num_workers())
                .map(|w| m.worker_local_queue_depth(w))
                .sum();
            self.local_queue_depth.set(to_i64(local));
            self.blocking_threads.set(to_i64(m.num_blocking_threads()));
            self.blocking_queue_depth
                .set(to_i64(m.blocking_queue_depth()));
        }
        // A poisoned lock only means a scrape panicked mid-update; the value is still usable.
        let mut seen = self.busy_seen.lock().unwrap_or_else(|p| p.into_inner());
        if busy > *seen {
            self.worker_busy.inc_by((busy - *seen).as_secs_f64());
            *seen = busy;
        }
    }
}
