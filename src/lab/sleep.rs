//! `Sleep`: waiting versus blocking.
//!
//! `ASYNC` awaits a tokio timer: the worker serves other requests meanwhile and nobody else
//! is delayed. `BLOCKING` calls `std::thread::sleep` on the runtime worker: that worker runs
//! nothing else until it wakes. The two look identical to the caller; the difference is what
//! everybody else pays, which is what the `Fast` probe beside it measures.

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::support::{error::LabError, validate};
use crate::{
    config::Limits,
    lab::micros,
    proto::{SleepMode, SleepReply, SleepRequest},
};

#[derive(Debug, Clone, Copy)]
pub struct SleepPlan {
    pub mode: SleepMode,
    pub duration: Duration,
}

impl SleepPlan {
    /// # Errors
    /// INVALID_ARGUMENT for an unknown mode or a duration over the cap; FAILED_PRECONDITION
    /// for BLOCKING under `--refuse-blocking-modes`.
    pub fn new(request: &SleepRequest, limits: &Limits) -> Result<Self, LabError> {
        let mode = validate::choice(
            "mode",
            request.mode,
            &[SleepMode::Async, SleepMode::Blocking],
        )?;
        if mode == SleepMode::Blocking && limits.refuse_blocking_modes {
            return Err(LabError::ModeRefused {
                mode: "Sleep BLOCKING".to_owned(),
                instead: "ASYNC",
            });
        }
        let ms = validate::in_range(
            "duration_ms",
            request.duration_ms,
            0,
            limits.max_sleep_ms,
            Some("--max-sleep-ms"),
        )?;
        Ok(Self {
            mode,
            duration: Duration::from_millis(u64::from(ms)),
        })
    }

    pub async fn run(self) -> Result<SleepReply, LabError> {
        let start = Instant::now();
        match self.mode {
            // DELIBERATELY BLOCKING: this is the mistake the RPC exists to show. The worker
            // thread stops here and every task queued on it waits.
            SleepMode::Blocking => std::thread::sleep(self.duration),
            // A stage of kind `timer`: the diagnosis engine counts this wait as `timer`.
            _ => {
                tokio::time::sleep(self.duration)
                    .instrument(tracing::info_span!(
                        target: "holdup::sleep",
                        "sleep",
                        holdup.stage = "timer"
                    ))
                    .await;
            }
        }
        Ok(SleepReply {
            slept_us: micros(start.elapsed()),
            mode: self.mode.into(),
            diagnostics: None,
        })
    }
}
