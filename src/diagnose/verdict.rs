//! The verdict: the one word that says where a late request's time went.
//!
//! This enum is the only list of verdict words. The proto comment on `Diagnostics.verdict`, the
//! README table, the `verdict` label of `holdup_verdicts_total` and the tests all take their
//! words from here (tests check that the proto and the README say exactly these).

use std::{fmt, time::Duration};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

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
    /// Every verdict, in the order the README and the proto list them.
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

impl EncodeLabelValue for Verdict {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
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

    /// The words between `from` and `to` in `text` that look like verdicts (lowercase words
    /// with hyphens), in order.
    fn words_between<'a>(text: &'a str, from: &str, to: &str) -> Vec<&'a str> {
        let start = text.find(from).expect("start marker") + from.len();
        let end = start + text[start..].find(to).expect("end marker");
        text[start..end]
            .split(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .filter(|w| Verdict::parse(w).is_some())
            .collect()
    }

    #[test]
    fn the_proto_comment_lists_exactly_these_words() {
        let proto = include_str!("../../proto/holdup/v1/lab.proto");
        let listed = words_between(proto, "in one word:", "string verdict = 7;");
        let all: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(listed, all);
    }

    #[test]
    fn the_readme_table_lists_exactly_these_words() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("| verdict | the largest component is |")
            .expect("the verdict table");
        let table: Vec<&str> = readme[start..]
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .filter_map(|row| row.split('`').nth(1))
            .collect();
        let all: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(table, all);
    }
}
