//! `CpuBound`: real CPU work in a handler, and the four places it can run.
//!
//! The work is a SHA-256 hash chain: `digest = sha256^n(seed)`. It cannot be optimised away,
//! and anyone can check it (`for _ in range(n): s = hashlib.sha256(s).digest()`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use tracing::{Instrument, Span};

use super::support::{compute_pool::ComputePool, error::LabError, validate};
use crate::{
    config::Limits,
    lab::micros,
    proto::{CpuBoundReply, CpuBoundRequest, CpuMode},
};

/// Most rounds one request may ask for: about 6 s of hashing on one core here (2 million
/// rounds took 123 ms). Rounds also stop at `--max-cpu-ms`, as `work_ms` does: an operator who
/// lowers that cap lowers both.
pub const MAX_ITERATIONS: u64 = 100_000_000;
/// Rounds between checks of the clock, of cancellation and, in COOPERATIVE mode, between
/// yields: ~0.5 ms of work, short enough that a cooperative task never holds a worker long.
pub const SLICE_ROUNDS: u64 = 2_048;

/// A SHA-256 hash chain.
#[derive(Debug, Clone)]
pub struct HashChain {
    seed: [u8; 32],
    state: [u8; 32],
    rounds: u64,
}

impl Default for HashChain {
    fn default() -> Self {
        let seed: [u8; 32] = Sha256::digest(b"holdup").into();
        Self {
            seed,
            state: seed,
            rounds: 0,
        }
    }
}

impl HashChain {
    pub fn advance(&mut self, rounds: u64) {
        for _ in 0..rounds {
            self.state = Sha256::digest(self.state).into();
        }
        self.rounds += rounds;
    }

    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    pub fn digest_hex(&self) -> String {
        hex::encode(self.state)
    }

    pub fn seed_hex(&self) -> String {
        hex::encode(self.seed)
    }
}

/// How much work a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Rounds(u64),
    For(Duration),
}

/// Work in progress: the chain and when it started.
#[derive(Debug)]
struct Job {
    chain: HashChain,
    budget: Budget,
    /// The server's CPU cap (`--max-cpu-ms`): rounds stop there too.
    cap: Duration,
    started: Instant,
}

impl Job {
    fn new(budget: Budget, cap: Duration) -> Self {
        Self {
            chain: HashChain::default(),
            budget,
            cap,
            started: Instant::now(),
        }
    }

    /// Runs one slice; true once the budget is spent.
    fn slice(&mut self) -> bool {
        match self.budget {
            Budget::Rounds(total) => {
                self.chain
                    .advance(SLICE_ROUNDS.min(total - self.chain.rounds()));
                self.chain.rounds() >= total || self.started.elapsed() >= self.cap
            }
            Budget::For(duration) => {
                self.chain.advance(SLICE_ROUNDS);
                self.started.elapsed() >= duration
            }
        }
    }

    /// Runs to the end, or until `cancelled`; `None` if cancelled.
    fn run_to_end(mut self, cancelled: &AtomicBool) -> Option<Done> {
        while !self.slice() {
            if cancelled.load(Ordering::Relaxed) {
                return None;
            }
        }
        Some(self.done())
    }

    fn done(self) -> Done {
        Done {
            chain: self.chain,
            work: self.started.elapsed(),
        }
    }
}

#[derive(Debug)]
struct Done {
    chain: HashChain,
    work: Duration,
}

/// Set when the request's future is dropped (client gone, deadline passed), so offloaded work
/// stops at its next slice instead of burning a thread for nobody.
#[derive(Debug, Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CpuPlan {
    pub mode: CpuMode,
    pub budget: Budget,
    /// `--max-cpu-ms`: where rounds stop.
    pub cap: Duration,
}

impl CpuPlan {
    /// # Errors
    /// INVALID_ARGUMENT for an unknown mode, both or neither of work_ms and iterations, or a
    /// value over its cap; FAILED_PRECONDITION for INLINE under `--refuse-blocking-modes`.
    pub fn new(request: &CpuBoundRequest, limits: &Limits) -> Result<Self, LabError> {
        let mode = validate::choice(
            "mode",
            request.mode,
            &[
                CpuMode::Inline,
                CpuMode::BlockingPool,
                CpuMode::ComputePool,
                CpuMode::Cooperative,
            ],
        )?;
        if mode == CpuMode::Inline && limits.refuse_blocking_modes {
            return Err(LabError::ModeRefused {
                mode: "CpuBound INLINE".to_owned(),
                instead: "COOPERATIVE, BLOCKING_POOL or COMPUTE_POOL",
            });
        }
        let budget = match (request.work_ms, request.iterations) {
            (0, 0) | (1.., 1..) => {
                return Err(LabError::invalid(
                    "work_ms",
                    format!(
                        "set exactly one of work_ms (1..={}) and iterations (1..={MAX_ITERATIONS})",
                        limits.max_cpu_ms
                    ),
                ));
            }
            (ms, 0) => Budget::For(Duration::from_millis(u64::from(validate::in_range(
                "work_ms",
                ms,
                1,
                limits.max_cpu_ms,
                Some("--max-cpu-ms"),
            )?))),
            (0, n) => Budget::Rounds(validate::in_range(
                "iterations",
                n,
                1,
                MAX_ITERATIONS,
                None,
            )?),
        };
        Ok(Self {
            mode,
            budget,
            cap: Duration::from_millis(u64::from(limits.max_cpu_ms)),
        })
    }

    /// Whether the work runs on another thread (the handler waits for it).
    pub fn runs_elsewhere(&self) -> bool {
        matches!(self.mode, CpuMode::BlockingPool | CpuMode::ComputePool)
    }

    pub fn mode_name(&self) -> &'static str {
        self.mode.as_str_name()
    }

    /// The job for another thread: its `cpu.queue` span runs from now until a thread takes
    /// it, its `cpu.work` span for the work, both children of the current (server) span.
    /// The job returns how long it waited: the time from now to its start, unless the pool
    /// measured that itself (passed in as non-zero).
    fn offloaded(
        &self,
        cancel: &CancelOnDrop,
    ) -> impl FnOnce(Duration) -> (Option<Done>, Duration) + Send + 'static {
        let flag = Arc::clone(&cancel.0);
        let (budget, cap) = (self.budget, self.cap);
        let mode = self.mode_name();
        let parent = Span::current();
        // Stages for the diagnosis engine: the handler waits in a queue, then for offloaded work.
        let queued = tracing::info_span!(target: "holdup::cpu", parent: &parent, "cpu.queue", holdup.stage = "queue", holdup.mode = mode);
        let enqueued = Instant::now();
        move |measured| {
            let waited = if measured.is_zero() {
                enqueued.elapsed()
            } else {
                measured
            };
            drop(queued);
            let _work = tracing::info_span!(target: "holdup::cpu", parent: &parent, "cpu.work", holdup.stage = "offloaded", holdup.mode = mode).entered();
            (Job::new(budget, cap).run_to_end(&flag), waited)
        }
    }

    pub async fn run(self, compute: Arc<ComputePool>) -> Result<CpuBoundReply, LabError> {
        let cancel = CancelOnDrop::default();
        let mode = self.mode_name();
        let work_span =
            || tracing::info_span!(target: "holdup::cpu", "cpu.work", holdup.mode = mode);
        let (done, waited) = match self.mode {
            // DELIBERATELY BLOCKING: the whole chain runs inside one poll and holds this
            // runtime worker until it is done. This is the mistake the mode exists to show.
            CpuMode::Inline => {
                let _work = work_span().entered();
                (
                    Job::new(self.budget, self.cap).run_to_end(&cancel.0),
                    Duration::ZERO,
                )
            }
            CpuMode::Cooperative => {
                async {
                    let mut job = Job::new(self.budget, self.cap);
                    while !job.slice() {
                        tokio::task::yield_now().await;
                    }
                    (Some(job.done()), Duration::ZERO)
                }
                .instrument(work_span())
                .await
            }
            CpuMode::BlockingPool => {
                let job = self.offloaded(&cancel);
                crate::runtime::spawn_blocking_named("CpuBound BLOCKING_POOL job", move || {
                    job(Duration::ZERO)
                })
                .map_err(|_| LabError::ShuttingDown)?
                .await
                .map_err(|e| LabError::Internal(format!("blocking job failed: {e}")))?
            }
            // A full queue is counted as rejected by the pool itself.
            CpuMode::ComputePool => compute
                .submit(self.offloaded(&cancel))?
                .await
                .map_err(|_| LabError::ShuttingDown)?,
            CpuMode::Unspecified => unreachable!("CpuPlan::new refuses an unspecified mode"),
        };
        let done = done.ok_or(LabError::ShuttingDown)?;
        if let Budget::Rounds(asked) = self.budget
            && done.chain.rounds() < asked
        {
            return Err(LabError::CpuCapReached {
                asked,
                ran: done.chain.rounds(),
                cap_ms: u32::try_from(self.cap.as_millis()).unwrap_or(u32::MAX),
            });
        }
        if matches!(self.mode, CpuMode::BlockingPool | CpuMode::ComputePool) {
            compute.observe_queue_wait(waited);
        }
        Ok(CpuBoundReply {
            digest: done.chain.digest_hex(),
            iterations: done.chain.rounds(),
            work_us: micros(done.work),
            queue_us: micros(waited),
            mode: self.mode.into(),
            seed: done.chain.seed_hex(),
            diagnostics: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_matches_a_hand_computed_digest() {
        let mut chain = HashChain::default();
        chain.advance(2);
        let seed = Sha256::digest(b"holdup");
        let expected = Sha256::digest(Sha256::digest(seed));
        assert_eq!(chain.digest_hex(), hex::encode(expected));
        assert_eq!(chain.rounds(), 2);
    }

    #[test]
    fn rounds_budget_is_exact() {
        let cancelled = AtomicBool::new(false);
        let done = Job::new(Budget::Rounds(SLICE_ROUNDS + 5), Duration::from_secs(60))
            .run_to_end(&cancelled)
            .unwrap();
        assert_eq!(done.chain.rounds(), SLICE_ROUNDS + 5);
    }

    #[test]
    fn rounds_stop_at_the_cpu_cap() {
        let cancelled = AtomicBool::new(false);
        let done = Job::new(Budget::Rounds(MAX_ITERATIONS), Duration::from_millis(20))
            .run_to_end(&cancelled)
            .unwrap();
        assert!(done.chain.rounds() < MAX_ITERATIONS);
        assert!(done.work >= Duration::from_millis(20));
    }

    #[test]
    fn cancelled_work_stops() {
        let cancelled = AtomicBool::new(true);
        assert!(
            Job::new(
                Budget::For(Duration::from_secs(60)),
                Duration::from_secs(60)
            )
            .run_to_end(&cancelled)
            .is_none()
        );
    }
}
