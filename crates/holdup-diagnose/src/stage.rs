//! Stages: the spans a request opens around what it waits for (`pool.acquire`, `db.query`,
//! `upstream.attempt`, ...). Idle time is charged to the innermost stage open while the request
//! was parked, and the stage's kind turns that time into a verdict.
//!
//! A span says its kind in a `holdup.stage` field (`queue`, `backend`, `upstream`, `offloaded`,
//! `timer`). A span that does not, but follows OpenTelemetry's semantic conventions, is
//! recognised from them: a `db.system` / `db.system.name` field makes it `backend`; an
//! `otel.kind = "client"` (or an `http.request.method` / `rpc.system` field on a span that is
//! not the request's own) makes it `upstream`. Any other span still names the wait (`waiting
//! in cache.refresh`) but has no kind, so its idle time is `waiting`.

use std::fmt;

use tracing::field::{Field, Visit};

/// The span field in which a stage declares its kind.
pub const STAGE_FIELD: &str = "holdup.stage";

/// What a stage waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// A bounded resource: a pool connection, a compute slot, a semaphore permit.
    Queue,
    /// A database or other storage the service owns.
    Backend,
    /// Another service: an HTTP or gRPC call.
    Upstream,
    /// CPU work handed to another thread.
    Offloaded,
    /// A timer: an awaited sleep, a retry backoff.
    Timer,
}

impl StageKind {
    pub const ALL: [Self; 5] = [
        Self::Queue,
        Self::Backend,
        Self::Upstream,
        Self::Offloaded,
        Self::Timer,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Backend => "backend",
            Self::Upstream => "upstream",
            Self::Offloaded => "offloaded",
            Self::Timer => "timer",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// Index into per-kind arrays; 0 is "no kind".
    pub(crate) const fn slot(kind: Option<Self>) -> usize {
        match kind {
            None => 0,
            Some(Self::Queue) => 1,
            Some(Self::Backend) => 2,
            Some(Self::Upstream) => 3,
            Some(Self::Offloaded) => 4,
            Some(Self::Timer) => 5,
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a new span's fields for what kind of stage it is.
#[derive(Debug, Default)]
pub(crate) struct KindVisitor {
    declared: Option<StageKind>,
    database: bool,
    client: bool,
    remote: bool,
}

impl KindVisitor {
    /// The span's kind: declared if it says, else inferred from OpenTelemetry conventions.
    pub(crate) fn kind(&self) -> Option<StageKind> {
        if self.declared.is_some() {
            self.declared
        } else if self.database {
            Some(StageKind::Backend)
        } else if self.client || self.remote {
            Some(StageKind::Upstream)
        } else {
            None
        }
    }
}

impl Visit for KindVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            STAGE_FIELD => self.declared = StageKind::parse(value),
            "otel.kind" => self.client = value.eq_ignore_ascii_case("client"),
            _ => self.record_name(field),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            STAGE_FIELD => self.declared = StageKind::parse(format!("{value:?}").trim_matches('"')),
            "otel.kind" => {
                self.client = format!("{value:?}")
                    .trim_matches('"')
                    .eq_ignore_ascii_case("client");
            }
            _ => self.record_name(field),
        }
    }
}

impl KindVisitor {
    fn record_name(&mut self, field: &Field) {
        match field.name() {
            "db.system" | "db.system.name" => self.database = true,
            "http.request.method" | "rpc.system" => self.remote = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in StageKind::ALL {
            assert_eq!(StageKind::parse(kind.as_str()), Some(kind));
            assert_ne!(StageKind::slot(Some(kind)), 0);
        }
        assert_eq!(StageKind::parse("nonsense"), None);
    }

    #[test]
    fn a_declared_kind_wins_over_conventions() {
        let visitor = KindVisitor {
            declared: Some(StageKind::Queue),
            database: true,
            ..KindVisitor::default()
        };
        assert_eq!(visitor.kind(), Some(StageKind::Queue));
        let database = KindVisitor {
            database: true,
            ..KindVisitor::default()
        };
        assert_eq!(database.kind(), Some(StageKind::Backend));
        assert_eq!(KindVisitor::default().kind(), None);
    }
}
