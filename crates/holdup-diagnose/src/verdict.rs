//! The verdict: the one word that says where a late request's time went.
//!
//! This enum is the only list of verdict words. The proto comment on `Diagnostics.verdict`, the
//! verdict table of docs/diagnosis.md, the `verdict` label of `holdup_verdicts_total` and the tests all take their
//! words from here (tests check that the proto and docs/diagnosis.md say exactly these).

use std::{fmt, time::Duration};

/// Below this total a request is not late, whatever its split says.
pub const NOT_LATE_BELOW: Duration = Duration::from_millis(1);

/// The dominant component of a request's time, measured, never read off its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// The request took under [`NOT_LATE_BELOW`] in all.
    None,
    /// Polled and on the CPU: the handler computed.
    OwnCpu,
    /// Polled but off the CPU: the handler held its worker in a thread sleep, a blocking lock
    /// or blocking I/O.
    BlockingCall,
    /// Ready but waiting for a runtime worker that other work held.
    RuntimeContention,
    /// Parked inside a stage of kind `queue`: waiting for a pool connection, a compute slot.
    ResourceQueue,
    /// Parked inside a stage of kind `backend`: a database.
    Backend,
    /// Parked inside a stage of kind `upstream`: a call to another service.
    Upstream,
    /// Parked inside a stage of kind `offloaded`: CPU work running on another thread.
    OffloadedCpu,
    /// Parked inside a stage of kind `timer`: an awaited sleep or backoff.
    Timer,
    /// Parked inside no stage that says what it waits for.
    Waiting,
}

impl Verdict {
    /// Every verdict, in the order docs/diagnosis.md and the proto list them.
    pub const ALL: [Self; 10] = [
        Self::None,
        Self::OwnCpu,
        Self::BlockingCall,
        Self::RuntimeContention,
        Self::ResourceQueue,
        Self::Backend,
        Self::Upstream,
        Self::OffloadedCpu,
        Self::Timer,
        Self::Waiting,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::OwnCpu => "own-cpu",
            Self::BlockingCall => "blocking-call",
            Self::RuntimeContention => "runtime-contention",
            Self::ResourceQueue => "resource-queue",
            Self::Backend => "backend",
            Self::Upstream => "upstream",
            Self::OffloadedCpu => "offloaded-cpu",
            Self::Timer => "timer",
            Self::Waiting => "waiting",
        }
    }

    /// The word back into the verdict (for clients that read replies and headers).
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == word)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "prometheus")]
impl prometheus_client::encoding::EncodeLabelValue for Verdict {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_are_unique() {
        for verdict in Verdict::ALL {
            assert_eq!(Verdict::parse(verdict.as_str()), Some(verdict));
        }
        let mut words: Vec<_> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), Verdict::ALL.len());
    }
}
