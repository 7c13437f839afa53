//! The engine's settings and what it does when a request ends: the report goes on the span
//! (attributes and links to the culprits' spans), into Prometheus and, for a long blamed
//! wait, into the log.

use std::{sync::OnceLock, time::Duration};

use tracing::field::{Field, Value};

use super::{
    clock::nanos,
    grpc_status::GrpcStatus,
    identity::Identity,
    report::{Report, culprit_label, micros, signed},
    timeline::Timeline,
};
#[cfg(feature = "prometheus")]
use super::{intern, metrics::DiagnoseMetrics};

/// Polls longer than this get a WARN event on their request's span: 10 ms is far past a
/// healthy poll (microseconds) and already a visible delay for every task queued behind it.
pub const DEFAULT_LONG_POLL: Duration = Duration::from_millis(10);
/// Waits for a worker at least this long are blamed; shorter ones are the ordinary cost of
/// sharing workers, and looking them up would cost more than they do.
pub const DEFAULT_BLAME_FROM: Duration = Duration::from_millis(1);
/// A request whose blamed wait reaches this is logged at WARN with its culprits.
pub const DEFAULT_WARN_BLAMED_FROM: Duration = Duration::from_millis(50);
/// Requests at least this long get the whole split in their header and on their span; quicker
/// ones only their verdict and total. The same bound as `verdict=none`: a request under a
/// millisecond was not late, and its full header was the largest single part of what the
/// engine cost it (callgrind on the benchmark's echo: about 5 000 of the 14 300 instructions
/// the engine added per call; its attributes cost more again with an OpenTelemetry layer).
pub const DEFAULT_DETAIL_FROM: Duration = crate::verdict::NOT_LATE_BELOW;

/// Thresholds; see the constants for why each default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    pub long_poll: Duration,
    pub blame_from: Duration,
    pub warn_blamed_from: Duration,
    /// Ports of the service's own databases beyond the well-known ones
    /// ([`DATABASE_PORTS`](crate::DATABASE_PORTS)), 0 for none: a wait that ends on data
    /// from one is `backend`, not `upstream`. Set with [`EngineConfig::backend_port`].
    pub backend_ports: [u16; 4],
    /// Requests this long or longer get the whole split in their `holdup-diagnosis` header
    /// and on their span; quicker ones `verdict` and `total` only. `Duration::ZERO`: the whole
    /// split for every request. Metrics and the `Diagnosis` a handler reads always have it.
    pub detail_from: Duration,
    /// Which responses carry `holdup-diagnosis` and `x-trace-id`, and with
    /// [`ResponseHeaders::WhenLate`] which spans the report.
    pub headers: ResponseHeaders,
}

/// Which responses carry the `holdup-diagnosis` and `x-trace-id` headers. The metrics, the log
/// and the `Diagnosis` a handler reads have every request's report either way; the span too,
/// but for a quick call that succeeded under [`ResponseHeaders::WhenLate`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseHeaders {
    /// Every response: a caller sees each request's verdict and id (a stream's head says
    /// `partial=head`, its trailers have the whole call's diagnosis).
    #[default]
    Always,
    /// Only a call that took [`EngineConfig::detail_from`] or longer: a reply complete when
    /// its head goes out (unary) in its head, any other (a stream) in its trailers, as its
    /// head cannot know yet. Over HTTP/1.1 a stream's head declares both trailers (`Trailer`),
    /// and only a client that sent `TE: trailers` gets them.
    ///
    /// A call quicker than that which succeeded (or whose status is not known when it is
    /// reported) also leaves its span as the subscriber's layers made it: no `holdup.*`
    /// attributes and no `rpc.grpc.status_code`; a failed one gets its status and report.
    ///
    /// For a service that keeps its responses, and its traces, as they were for callers that
    /// were not kept waiting, and the engine's cheapest setting: the two headers were about
    /// 3 100 of the 11 000 instructions the engine added to a traced call of the benchmark's
    /// echo, and the report on a quick call's span about 700 of the 6 500 left (callgrind).
    WhenLate,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            long_poll: DEFAULT_LONG_POLL,
            blame_from: DEFAULT_BLAME_FROM,
            warn_blamed_from: DEFAULT_WARN_BLAMED_FROM,
            backend_ports: [0; 4],
            detail_from: DEFAULT_DETAIL_FROM,
            headers: ResponseHeaders::Always,
        }
    }
}

impl EngineConfig {
    /// Which responses carry the headers: [`ResponseHeaders`].
    #[must_use]
    pub fn response_headers(mut self, headers: ResponseHeaders) -> Self {
        self.headers = headers;
        self
    }

    /// Says that `port` is a database's (a PostgreSQL on 6543): waits on connections to it are
    /// `backend`. Up to four; more are ignored.
    #[must_use]
    pub fn backend_port(mut self, port: u16) -> Self {
        if let Some(free) = self
            .backend_ports
            .iter_mut()
            .find(|p| **p == 0 || **p == port)
        {
            *free = port;
        }
        self
    }

    /// Whether `report` gets the whole split in its header and on its span.
    pub(crate) fn detailed(&self, report: &Report) -> bool {
        report.split.total >= nanos(self.detail_from)
    }

    /// Whether a response's head carries the headers: `over`, a call whose head ends it (a
    /// unary reply); else a stream, whose trailers say the rest ([`Self::trailers_for`]).
    pub(crate) fn head_for(&self, report: &Report, over: bool) -> bool {
        match self.headers {
            ResponseHeaders::Always => true,
            ResponseHeaders::WhenLate => over && self.detailed(report),
        }
    }

    /// Whether a finished call's span is left as the subscriber's layers made it: with
    /// [`ResponseHeaders::WhenLate`], a call that was not late and did not fail (`status`
    /// OK, or not known yet; a call that failed without one is not `answered`).
    ///
    /// Under an OpenTelemetry layer its report there (the span's lock and three attributes)
    /// was the largest part of the engine's cost that could be turned off alone for such a
    /// call: about 700 of the 6 500 instructions the engine added (callgrind), and about 3 %
    /// of the traced echo's CPU time per call (`tests/bench/pairs.sh`, two runs with the
    /// builds swapped).
    pub(crate) fn leaves_span(
        &self,
        report: &Report,
        answered: bool,
        status: Option<GrpcStatus<'_>>,
    ) -> bool {
        self.headers == ResponseHeaders::WhenLate
            && answered
            && !self.detailed(report)
            && status.is_none_or(|s| s.code == 0)
    }

    /// Whether a stream's trailers carry the diagnosis, and with [`ResponseHeaders::WhenLate`]
    /// the id its head did not have.
    pub(crate) fn trailers_for(&self, report: &Report) -> bool {
        self.headers == ResponseHeaders::Always || self.detailed(report)
    }
}

/// Decides, for each handler task [`Diagnosis::spawn`](super::Diagnosis::spawn) starts,
/// whether it gets a per-request name (`CpuBound INLINE 4bf92f35`): it calls the spawn with
/// its answer. Only worth the formatting when someone (tokio-console) reads the task.
pub type SpawnGate = fn(&mut dyn FnMut(bool));

static SPAWN_GATE: OnceLock<SpawnGate> = OnceLock::new();

/// Installs `gate` (the telemetry module does, when the console is on: the console's budget
/// decides). Without one, handler tasks are named by their label only. The first call wins.
pub fn name_tasks_through(gate: SpawnGate) {
    let _ = SPAWN_GATE.set(gate);
}

/// Whether a spawn gate is installed: someone (tokio-console) reads task names.
pub fn tasks_are_named() -> bool {
    SPAWN_GATE.get().is_some()
}

/// Runs `spawn` with whether the task it spawns should carry a per-request name.
pub(crate) fn gated_spawn(spawn: &mut dyn FnMut(bool)) {
    match SPAWN_GATE.get() {
        Some(gate) => gate(spawn),
        None => spawn(false),
    }
}

/// Shared by every request of one layer.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub config: EngineConfig,
    #[cfg(feature = "prometheus")]
    pub metrics: Option<DiagnoseMetrics>,
}

impl Engine {
    /// A poll of `who` held its worker `held`, `cpu_wait` of it runnable while the machine ran
    /// other threads: past the threshold, a WARN on its span and a count.
    ///
    /// Judged on the poll's own time (on the CPU, or blocked), not the machine's: a thread the
    /// scheduler preempted inside a one-millisecond poll held its worker ten (measured: a
    /// transport poll during two CPU-bound handlers on two cores), but the request did not,
    /// and the warning says what the request did.
    pub(crate) fn poll_held(&self, who: &Identity, span: &tracing::Span, held: u64, cpu_wait: u64) {
        if held.saturating_sub(cpu_wait) < nanos(self.config.long_poll) {
            return;
        }
        let method = who.method();
        tracing::warn!(
            target: "holdup::diagnose",
            parent: span,
            poll_ms = held as f64 / 1e6,
            cpu_wait_ms = cpu_wait as f64 / 1e6,
            threshold_ms = self.config.long_poll.as_secs_f64() * 1e3,
            rpc = method,
            trace_id = %who.trace_id(),
            "long poll: this request held a runtime worker for {:.1} ms without yielding; \
             every task queued on that worker waited as long",
            held as f64 / 1e6
        );
        #[cfg(feature = "prometheus")]
        if let Some(metrics) = &self.metrics {
            metrics.long_poll(intern::unverified_labels(who.full_method()));
        }
    }

    /// Reports a finished request everywhere but the reply and header: span, metrics, log.
    /// `answered` is false for a method the server does not have (`UNIMPLEMENTED`), or a
    /// call that failed without a status: it is not counted under its made-up name. `status`,
    /// when the call's trailers are already known, goes on the span in the same record.
    ///
    /// Returns whether the span was left as it was ([`EngineConfig::leaves_span`]), so that a
    /// status that comes later leaves it so too when it is OK.
    pub(crate) fn finish(
        &self,
        report: &Report,
        timeline: &Timeline,
        answered: bool,
        status: Option<GrpcStatus<'_>>,
    ) -> bool {
        let span = &timeline.span;
        let detailed = self.config.detailed(report);
        let left = self.config.leaves_span(report, answered, status);
        #[cfg(feature = "opentelemetry")]
        match timeline.otel_context() {
            _ if left => {}
            Some(context) => super::otel::record(context, report, detailed, status),
            None => record_on_span(report, span, detailed, status),
        }
        #[cfg(not(feature = "opentelemetry"))]
        if !left {
            record_on_span(report, span, detailed, status);
        }
        #[cfg(feature = "prometheus")]
        if answered && let Some(metrics) = &self.metrics {
            metrics.observe(intern::labels(report.identity.full_method()), report);
        }
        if report.split.blamed >= nanos(self.config.warn_blamed_from) {
            let culprits: Vec<String> = report
                .culprits
                .iter()
                .map(|c| format!("{} ({:.1} ms)", culprit_label(c), c.share as f64 / 1e6))
                .collect();
            tracing::warn!(
                target: "holdup::diagnose",
                parent: span,
                rpc = report.identity.method(),
                trace_id = %report.identity.trace_id(),
                waited_ms = report.split.scheduled as f64 / 1e6,
                blamed_ms = report.split.blamed as f64 / 1e6,
                culprits = culprits.join(", "),
                "waited {:.1} ms for a runtime worker held by {}",
                report.split.scheduled as f64 / 1e6,
                culprits.join(", ")
            );
        }
        left
    }
}

/// The request span's fields [`record_on_span`] records, in its order.
const FIELDS: [&str; 7] = [
    "holdup.total_us",
    "holdup.verdict",
    "holdup.waited_in",
    "holdup.culprits",
    "rpc.grpc.status_code",
    "otel.status_code",
    "otel.status_message",
];

/// The request span's fields, looked up by name once: every request span comes from the one
/// callsite in the layer.
fn span_fields(meta: &'static tracing::Metadata<'static>) -> Option<[Field; 7]> {
    static CACHED: OnceLock<Option<[Field; 7]>> = OnceLock::new();
    let lookup = || {
        let fields = meta.fields();
        let found: Vec<Field> = FIELDS.iter().filter_map(|n| fields.field(n)).collect();
        <[Field; 7]>::try_from(found).ok()
    };
    let cached = CACHED.get_or_init(lookup).as_ref();
    match cached {
        Some(fields) if fields[0].callsite() == meta.callsite() => Some(fields.clone()),
        _ => lookup(),
    }
}

/// The verdict and total as fields of the request's span, with the longest wait and the
/// culprits of a `detailed` report, and the call's `status` when it is known: for the layers
/// of a subscriber without OpenTelemetry (a request span with an OpenTelemetry context takes
/// the report as attributes, [`crate::otel::record`]). All in one `record`: each record costs
/// every layer a span lookup and, in a log layer, a formatting pass.
fn record_on_span(
    report: &Report,
    span: &tracing::Span,
    detailed: bool,
    status: Option<GrpcStatus<'_>>,
) {
    // A disabled span (no layer wants it) still has its metadata: the values would be made
    // and dropped.
    if span.is_disabled() {
        return;
    }
    let Some(meta) = span.metadata() else { return };
    let Some(fields) = span_fields(meta) else {
        return;
    };
    // A brief record has no culprits nor stage: neither is made for it.
    let culprits = (detailed && !report.culprits.is_empty()).then(|| {
        let names: Vec<String> = report.culprits.iter().map(culprit_label).collect();
        names.join(",")
    });
    let total = signed(micros(report.split.total));
    let verdict = report.verdict().as_str();
    let waited_in = report.longest_wait().filter(|_| detailed).map(|w| w.stage);
    // An integer, as the RPC conventions have it (see `GrpcStatus::record`).
    let code = status.map(|s| i64::from(s.code));
    let otel_status = status.and_then(|s| s.otel_status());
    let message = status.and_then(|s| s.message);
    let set = [
        (&fields[0], Some(&total as &dyn Value)),
        (&fields[1], Some(&verdict as &dyn Value)),
        (&fields[2], waited_in.as_ref().map(|w| w as &dyn Value)),
        (&fields[3], culprits.as_ref().map(|c| c as &dyn Value)),
        (&fields[4], code.as_ref().map(|c| c as &dyn Value)),
        (&fields[5], otel_status.as_ref().map(|s| s as &dyn Value)),
        (&fields[6], message.as_ref().map(|m| m as &dyn Value)),
    ];
    // `value_set` is how tracing's own macros build a record; hidden, but stable in 0.1.
    span.record_all(&meta.fields().value_set(&set));
}

#[cfg(all(test, feature = "prometheus"))]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn a_long_poll_is_the_requests_own_time_not_the_machines() {
        let mut registry = Registry::default();
        let engine = Engine {
            config: EngineConfig {
                long_poll: Duration::from_millis(10),
                ..EngineConfig::default()
            },
            metrics: Some(DiagnoseMetrics::register(&mut registry)),
        };
        let who = Identity::untraced("/test.engine.Svc/Poll");
        let span = tracing::Span::none();
        let ms = |n: u64| n * 1_000_000;
        // 11 ms held, 2 of them preempted: 9 ms of its own, under the threshold.
        engine.poll_held(&who, &span, ms(11), ms(2));
        // 30 ms held, 5 preempted: 25 of its own.
        engine.poll_held(&who, &span, ms(30), ms(5));
        // 12 ms, all its own.
        engine.poll_held(&who, &span, ms(12), 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("holdup_long_polls_total{"))
            .unwrap_or_else(|| panic!("no long polls counted:\n{text}"));
        assert!(line.ends_with(" 2"), "{line}");
    }
}
