//! A budget of new tasks per second that tokio-console sees, so that the console costs the
//! same whatever the request rate.
//!
//! The console keeps two HDR histograms (about 50 KB) per task until its retention passes,
//! and its aggregator handles every poll and wake of every task it sees. At lab rates (tens
//! to a hundred requests a second) that is nothing; at thousands of requests a second it
//! was gigabytes and most of the CPU (docs/performance.md). So the console layer's filter
//! admits new tasks through a token bucket ([`DEFAULT_CONSOLE_BUDGET`] a second, a second's
//! worth of burst): below it the console shows every task; above it, a sample, said once in
//! the log and counted in `holdup_console_tasks_total{outcome}`.
//!
//! A task the console does not see costs nothing more: tokio gives it no span, so its polls
//! and wakes emit no events. That takes [`ConsoleGate`] as well as the filter: a per-layer
//! filter alone hides a span from its layer but does not stop the registry making it.
//!
//! Timers, locks and channels (the console's *resources*) are shown when a shown *named* task
//! creates them (holdup's handlers and background jobs), so they cost no tokens and follow
//! their task. The unnamed tasks are tonic's and hyper's connections and
//! streams: a connection polls its keep-alive and idle timers on every read, and with those
//! timers shown, every call cost the console three span entries and a poll-op event per timer,
//! enough to keep its aggregator waking hundreds of times a second. Request handler tasks are
//! named with their trace id only when they will be shown
//! ([`crate::diagnose::name_tasks_through`]).
//!
//! For the same reason tokio's poll-op events (one per poll of any timer, lock or channel) are
//! left out: the console's resource detail loses its list of poll results, and keeps each
//! resource, its attributes and its task.

use std::{
    cell::Cell,
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tracing::{Metadata, span, subscriber::Interest};
use tracing_subscriber::{
    layer::{Context, Filter},
    registry::LookupSpan,
};

/// New tasks a second tokio-console sees by default: a Lab request is two tasks (its HTTP/2
/// stream on the transport runtime, its handler on the lab runtime), so every request up to
/// about 100 a second, the rates the lessons run at, with room for connections and
/// background tasks. With [`super::subscriber::DEFAULT_CONSOLE_RETENTION`] it bounds the
/// finished tasks the console keeps (docs/performance.md).
pub const DEFAULT_CONSOLE_BUDGET: u32 = 250;

/// The event tokio emits at every poll of a timer, lock or channel (`trace_poll_op!`).
const POLL_OP_TARGET: &str = "runtime::resource::poll_op";

/// The span tokio opens for every task (spawn, spawn_blocking, block_on).
const TASK_SPAN: &str = "runtime.spawn";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `shown`, or `sampled_out` (over the budget).
    pub outcome: &'static str,
}

/// The process's budget: one console layer per process, like the subscriber.
#[derive(Debug)]
struct Budget {
    /// Nanoseconds between tokens.
    interval: u64,
    /// How far ahead of now the bucket may be booked: the burst.
    burst: u64,
    /// Generic cell rate algorithm: the time (ns since `epoch`) at which the bucket is full
    /// again. A task is admitted if booking one more interval keeps it within the burst.
    full_at: AtomicU64,
    epoch: Instant,
    per_second: u32,
    /// Set when a task was first refused; the log line is written once, outside the filter.
    sampling: AtomicBool,
    logged: AtomicBool,
}

impl Budget {
    fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        let interval = 1_000_000_000 / u64::from(per_second);
        Self {
            interval,
            burst: interval * u64::from(per_second),
            full_at: AtomicU64::new(0),
            epoch: Instant::now(),
            per_second,
            sampling: AtomicBool::new(false),
            logged: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes a token if there is one.
    fn admit(&self) -> bool {
        let now = self.now();
        let mut full_at = self.full_at.load(Ordering::Relaxed);
        loop {
            let booked = full_at.max(now) + self.interval;
            if booked - now > self.burst {
                let counters = counters();
                counters.sampled_out.inc();
                self.sampling.store(true, Ordering::Relaxed);
                return false;
            }
            match self.full_at.compare_exchange_weak(
                full_at,
                booked,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    counters().shown.inc();
                    return true;
                }
                Err(current) => full_at = current,
            }
        }
    }

    /// Says once, in the log, that the console shows a sample from now on.
    fn log_once(&self) {
        if self.sampling.load(Ordering::Relaxed) && !self.logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                budget = self.per_second,
                "tokio-console: more than {} new tasks a second; it shows a sample of them from \
                 now on (every task below that rate); holdup_console_tasks_total counts both",
                self.per_second
            );
        }
    }
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

struct Counters {
    shown: Counter,
    sampled_out: Counter,
    family: Family<OutcomeLabels, Counter>,
}

fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let family = Family::<OutcomeLabels, Counter>::default();
        let shown = family
            .get_or_create(&OutcomeLabels { outcome: "shown" })
            .clone();
        let sampled_out = family
            .get_or_create(&OutcomeLabels {
                outcome: "sampled_out",
            })
            .clone();
        Counters {
            shown,
            sampled_out,
            family,
        }
    })
}

/// `holdup_console_tasks_total{outcome}`, shared by every metrics registry in the process.
pub fn tasks_metric() -> Family<OutcomeLabels, Counter> {
    counters().family.clone()
}

thread_local! {
    /// The decision already taken for the next task spawned on this thread (by
    /// [`decide_next_spawn`]), so that the filter does not take a second token.
    static DECIDED: Cell<Option<bool>> = const { Cell::new(None) };
    /// How many shown named tasks' spans are entered on this thread: a resource made inside one
    /// is shown with it.
    static IN_SHOWN_TASK: Cell<u32> = const { Cell::new(0) };
    /// Set by [`ConsoleGate`] when it admitted the task or resource span being created on this
    /// thread, so that the filter does not decide (and take a token) a second time.
    static SPAN_SHOWN: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Decides whether the console will see the task `spawn` spawns on this thread, and calls
/// `spawn` with the answer (so that a name is formatted only for a task someone will read).
/// Without a console, the answer is no.
pub fn decide_next_spawn(spawn: &mut dyn FnMut(bool)) {
    let Some(budget) = BUDGET.get() else {
        return spawn(false);
    };
    budget.log_once();
    let shown = budget.admit();
    DECIDED.set(Some(shown));
    spawn(shown);
    DECIDED.set(None);
}

/// The console layer's filter: tokio's task, resource and waker instrumentation, with new
/// tasks admitted through the budget.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleFilter;

impl ConsoleFilter {
    /// The filter, and the process's budget of `per_second` new tasks (the first call sets it).
    pub fn new(per_second: u32) -> Self {
        let _ = BUDGET.set(Budget::new(per_second));
        Self
    }

    /// What the console reads at all: tokio's instrumentation.
    fn wants(meta: &Metadata<'_>) -> bool {
        if meta.is_event() {
            meta.target() != POLL_OP_TARGET
                && (meta.target().starts_with("runtime") || meta.target().starts_with("tokio"))
        } else {
            meta.name().starts_with("runtime.") || meta.target().starts_with("tokio")
        }
    }

    /// Spans decided one by one: tasks (the budget) and resources (their task).
    fn per_span(meta: &Metadata<'_>) -> bool {
        meta.is_span() && meta.name().starts_with("runtime.")
    }
}

impl<S> Filter<S> for ConsoleFilter
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if !Self::wants(meta) {
            return false;
        }
        if !Self::per_span(meta) {
            return true;
        }
        // Decided already by `ConsoleGate`, before this filter, when there is one.
        SPAN_SHOWN.take().unwrap_or_else(|| decide_span(meta))
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if !Self::wants(meta) {
            Interest::never()
        } else if Self::per_span(meta) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != TASK_SPAN {
            return;
        }
        let mut named = NamedTask(false);
        attrs.record(&mut named);
        if named.0
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(ShowsResources);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if shows_resources(id, &ctx) {
            IN_SHOWN_TASK.set(IN_SHOWN_TASK.get() + 1);
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if shows_resources(id, &ctx) {
            IN_SHOWN_TASK.set(IN_SHOWN_TASK.get().saturating_sub(1));
        }
    }
}

/// Carries out the console's decision on tokio's task and resource spans for the whole
/// subscriber: a span it refuses is not created at all. Goes in the layers before the
/// console's, with its filter: `ConsoleGate.with_filter(ConsoleGate)`.
///
/// Why: a per-layer filter keeps a span from its own layer only, and the registry
/// (tracing-subscriber 0.3) creates the span unless every one of its 64 filter slots refused
/// it, which a handful of filters never does. So every task the budget left out still had a
/// span: created, entered and exited at each poll, and its wakers' clone, wake and drop were
/// events sent through every layer, about 25 per `Fast` call, for each filter to drop. A
/// filtered layer whose filter admits a callsite may still refuse it in its own `enabled`, and
/// that refusal is global; as a filtered layer it says nothing about any other callsite. No
/// other layer reads these spans (the log would, at TRACE, only as context).
#[derive(Debug, Clone, Copy)]
pub struct ConsoleGate;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ConsoleGate {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Decided per span, in `enabled`; only the console's own callsites reach here.
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        let shown = decide_span(meta);
        if shown {
            SPAN_SHOWN.set(Some(true));
        }
        shown
    }
}

/// The gate's filter: the spans the console decides one by one, nothing else.
impl<S> Filter<S> for ConsoleGate {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        ConsoleFilter::wants(meta) && ConsoleFilter::per_span(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if ConsoleFilter::wants(meta) && ConsoleFilter::per_span(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
}

/// Whether the console shows the task or resource span about to be created on this thread.
fn decide_span(meta: &Metadata<'_>) -> bool {
    if meta.name() == TASK_SPAN {
        DECIDED
            .take()
            .unwrap_or_else(|| BUDGET.get().is_none_or(Budget::admit))
    } else {
        IN_SHOWN_TASK.get() > 0
    }
}

/// In the extensions of a shown task whose resources are shown too.
struct ShowsResources;

fn shows_resources<S>(id: &span::Id, ctx: &Context<'_, S>) -> bool
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    ctx.span(id).is_some_and(|span| {
        span.name() == TASK_SPAN && span.extensions().get::<ShowsResources>().is_some()
    })
}

/// Whether a task span's `task.name` is not empty (tokio records it with `%`, empty for an
/// unnamed task): writes nothing, allocates nothing.
struct NamedTask(bool);

impl tracing::field::Visit for NamedTask {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "task.name" {
            self.0 = !value.is_empty();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        /// Notes whether anything at all is written.
        struct Any(bool);
        impl std::fmt::Write for Any {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0 |= !s.is_empty();
                Ok(())
            }
        }
        if field.name() == "task.name" {
            let mut any = Any(false);
            let _ = std::fmt::write(&mut any, format_args!("{value:?}"));
            self.0 = any.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A task span made as tokio makes one (`runtime.spawn`, a root span), after the budget's
    /// decision `shown`: whether the subscriber created it.
    fn task_span_created(gate: bool, shown: bool) -> bool {
        use tracing_subscriber::{Layer, layer::SubscriberExt};

        /// Stands for the console's layer: sees what its filter admits.
        struct Console;
        impl<S: tracing::Subscriber> Layer<S> for Console {}

        let mut layers = vec![
            // Stands for the log: a filtered layer that wants none of tokio's spans.
            Console
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
                .boxed(),
        ];
        if gate {
            layers.push(ConsoleGate.with_filter(ConsoleGate).boxed());
        }
        layers.push(Console.with_filter(ConsoleFilter).boxed());
        let subscriber = tracing_subscriber::registry().with(layers);
        tracing::subscriber::with_default(subscriber, || {
            DECIDED.set(Some(shown));
            let span = tracing::trace_span!(
                target: "tokio::task",
                parent: None,
                "runtime.spawn",
                kind = "task"
            );
            DECIDED.set(None);
            span.id().is_some()
        })
    }

    #[test]
    fn a_task_the_console_leaves_out_has_no_span_at_all() {
        assert!(task_span_created(true, true));
        assert!(!task_span_created(true, false));
        // Without the gate the registry makes the span anyway: the console's filter only keeps
        // it from the console's layer. That is what the gate is for.
        assert!(task_span_created(false, false));
    }

    #[test]
    fn the_bucket_admits_a_burst_then_the_rate() {
        let budget = Budget::new(100);
        let admitted = (0..1_000).filter(|_| budget.admit()).count();
        // A second's worth of burst (give or take the token that refilled meanwhile).
        assert!((100..=102).contains(&admitted), "admitted {admitted}");
        std::thread::sleep(Duration::from_millis(100));
        let more = (0..1_000).filter(|_| budget.admit()).count();
        // Ten tokens a 100 ms; a busy machine may sleep longer.
        assert!((9..=40).contains(&more), "admitted {more} after 100 ms");
        assert!(budget.sampling.load(Ordering::Relaxed));
    }
}
