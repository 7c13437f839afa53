//! The tasks that send the calls of one stream, open loop or closed loop, and record each
//! into the stream's recorder. Every call is bounded by its deadline, and the open loop by
//! its in-flight cap, so a run always ends: at most one timeout after its window.

use std::sync::Arc;

use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

use super::{
    recorder::{Shared, lock},
    rpc::Caller,
    schedule::{Clock, Schedule, Ticks},
};

/// Sends calls by `schedule` from `clock.start` until `clock.end`, then waits for the calls
/// still in flight.
pub async fn drive(caller: Caller, schedule: Schedule, clock: Clock, recorder: Shared) {
    match schedule {
        Schedule::Open {
            rate,
            max_in_flight,
            arrivals,
        } => {
            let ticks = Ticks::new(clock.start, rate, arrivals);
            open_loop(caller, ticks, max_in_flight, clock, recorder).await;
        }
        Schedule::Closed { concurrency } => closed_loop(caller, concurrency, clock, recorder).await,
    }
}

async fn open_loop(
    caller: Caller,
    ticks: Ticks,
    max_in_flight: u32,
    clock: Clock,
    recorder: Shared,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight as usize));
    let mut ticks = ticks.take_while(|due| *due < clock.end);
    let mut due_in_window: u64 = 0;
    for (n, due) in (0_u64..).zip(ticks.by_ref()) {
        let measured = clock.measures(due);
        if measured {
            due_in_window += 1;
        }
        tokio::time::sleep_until(due).await;
        // Wait for a free slot, but never past the end of the run: the calls that could not
        // be sent by then are counted as unsent, not queued.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = tokio::time::sleep_until(clock.end) => break,
        };
        // The semaphore is never closed, so acquiring only fails if that changes.
        let Ok(slot) = slot else { break };
        if measured {
            lock(&recorder).sent(Instant::now().saturating_duration_since(due));
        }
        let call = caller(n);
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move {
            let outcome = call.await;
            let done = Instant::now();
            let mut recorder = lock(&recorder);
            recorder.tick_progress();
            if measured {
                recorder.record(&outcome, due, done);
            }
            drop(slot);
        });
    }
    // The calls the run ended before reaching were due all the same.
    let never_reached = ticks.filter(|due| clock.measures(*due)).count();
    due_in_window += u64::try_from(never_reached).unwrap_or(u64::MAX);
    lock(&recorder).set_due(due_in_window);
    // Every call ends by its own deadline, so all slots come back.
    let _all = slots.acquire_many(max_in_flight).await;
}

async fn closed_loop(caller: Caller, concurrency: u32, clock: Clock, recorder: Shared) {
    let mut callers = JoinSet::new();
    tokio::time::sleep_until(clock.start).await;
    for worker in 0..u64::from(concurrency) {
        let caller = Arc::clone(&caller);
        let recorder = Arc::clone(&recorder);
        callers.spawn(async move {
            loop {
                let started = Instant::now();
                if started >= clock.end {
                    break;
                }
                // A worker keeps to one connection: the same call number every time.
                let outcome = caller(worker).await;
                let done = Instant::now();
                let mut recorder = lock(&recorder);
                recorder.tick_progress();
                if clock.measures(started) {
                    recorder.sent(std::time::Duration::ZERO);
                    recorder.record(&outcome, started, done);
                }
            }
        });
    }
    while let Some(joined) = callers.join_next().await {
        if let Err(e) = joined {
            tracing::warn!(error = %e, "a load worker failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::{
        recorder::Recorder,
        rpc::{Caller, Outcome},
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A fake server: answers in 1 ms, except that calls arriving between `from` and `until`
    /// are held until `until` (a stall).
    fn stalled_server(start: Instant, from: Duration, until: Duration) -> Caller {
        Arc::new(move |_| {
            Box::pin(async move {
                let now = Instant::now();
                if now >= start + from && now < start + until {
                    tokio::time::sleep_until(start + until).await;
                }
                tokio::time::sleep(ms(1)).await;
                Outcome::Ok(None)
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_sends_at_the_rate_and_counts_the_stall_from_the_intended_time() {
        let start = Instant::now();
        let clock = Clock::new(start, Duration::ZERO, ms(2_000));
        let recorder = Recorder::shared(clock);
        let caller = stalled_server(start, ms(1_000), ms(1_500));
        let schedule = Schedule::open(100.0, 1_000);
        drive(caller, schedule, clock, Arc::clone(&recorder)).await;
        let stats = lock(&recorder).finish("main", "fake".into(), &schedule);
        assert_eq!(stats.due, 200);
        assert_eq!(stats.sent, 200);
        assert_eq!(stats.ok, 200);
        // 50 calls arrived during the 500 ms stall: the first waited ~500 ms.
        assert!(stats.latency.max_ms >= 490.0, "{:?}", stats.latency);
        assert!(stats.latency.p90_ms >= 100.0, "{:?}", stats.latency);
        assert!(stats.latency.p50_ms < 5.0, "{:?}", stats.latency);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_hides_the_stall_in_percentiles_but_not_in_rate() {
        let start = Instant::now();
        let clock = Clock::new(start, Duration::ZERO, ms(2_000));
        let recorder = Recorder::shared(clock);
        let caller = stalled_server(start, ms(1_000), ms(1_500));
        let schedule = Schedule::Closed { concurrency: 2 };
        drive(caller, schedule, clock, Arc::clone(&recorder)).await;
        let stats = lock(&recorder).finish("main", "fake".into(), &schedule);
        // Two callers, ~1 ms a call, 1.5 s of service: ~3000 calls, of which only 2 stalled.
        assert!(stats.ok > 2_000, "{}", stats.ok);
        assert!(stats.latency.p99_ms < 5.0, "{:?}", stats.latency);
        assert!(stats.latency.max_ms >= 490.0, "{:?}", stats.latency);
        assert!(stats.rate_dropped(), "{:?}", stats.timeline);
        assert!(stats.timeline.longest_gap_ms >= 490.0);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_never_exceeds_its_in_flight_cap() {
        let start = Instant::now();
        let clock = Clock::new(start, ms(100), ms(1_000));
        let recorder = Recorder::shared(clock);
        let in_flight = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let caller: Caller = {
            let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
            Arc::new(move |_| {
                let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
                Box::pin(async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = in_flight.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    // Far slower than the arrivals: 4 slots x 10 calls/s for 100/s offered.
                    tokio::time::sleep(ms(400)).await;
                    in_flight.fetch_sub(1, SeqCst);
                    Outcome::Ok(None)
                })
            })
        };
        let schedule = Schedule::open(100.0, 4);
        drive(caller, schedule, clock, Arc::clone(&recorder)).await;
        let stats = lock(&recorder).finish("main", "fake".into(), &schedule);
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 4);
        assert_eq!(stats.due, 100);
        assert!(stats.unsent >= 85, "{stats:?}");
        assert!(stats.sent + stats.unsent == stats.due, "{stats:?}");
        assert!(stats.max_send_lag_ms >= 300.0, "{stats:?}");
        assert!(stats.achieved_share().is_some_and(|s| s < 0.2));
        assert!(!stats.warnings.is_empty());
    }
}
