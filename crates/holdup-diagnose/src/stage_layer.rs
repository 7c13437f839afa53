//! The `tracing` layer that tells the engine which stage spans a request has open, so that its
//! parked time is charged to the innermost one. Add it to the subscriber beside the others
//! (`registry().with(StageLayer::new())`); without it every wait is `waiting`.
//!
//! A span opened while a request is polled (its future, its handler task, its streaming body:
//! [`Measured`](super::measured::Measured) says which) is that request's stage, and carries
//! the request in its extensions; a span opened under a stage inherits it from its parent.
//!
//! The layer does not need the request's own span, and does not ask for it: with no other
//! layer that wants it (no OpenTelemetry, no log of spans), the request span is never made,
//! and the registry's work for it (a slot, its fields, enter and exit at every poll, its
//! close) is not done. Measured on the benchmark's bare echo: that was a quarter of what the
//! engine cost per call.

use std::sync::Weak;

use tracing::{Metadata, Subscriber, span};
use tracing_subscriber::{
    Layer,
    layer::{Context, Filter},
    registry::LookupSpan,
};

use super::{
    occupancy::{self, Holder},
    resource::{self, EventVisitor, Holds, Resource, ResourceKind, ResourceVisitor},
    stage::KindVisitor,
    timeline::Timeline,
};

/// In a stage span's extensions: the request it belongs to. Weak: the timeline holds the
/// request's span, which must close when the request is done.
#[derive(Debug, Clone)]
pub(crate) struct InRequest {
    pub(crate) timeline: Weak<Timeline>,
}

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageLayer;

impl StageLayer {
    pub fn new() -> Self {
        Self
    }

    /// Spans the layer needs to see: DEBUG and above, and not tokio's own task and resource
    /// instrumentation, which is the console's and never a stage, nor the engine's own
    /// request spans (see the module docs).
    ///
    /// Not TRACE: libraries open TRACE spans around every frame they read or write (h2 opens
    /// about fifty per unary call), never across a wait, so none is a stage; admitting them
    /// made every one a span in the registry, and they cost the request path more than
    /// everything else the engine does.
    ///
    /// Not the HTTP/2 stack's: h2 opens a DEBUG span per connection (`Connection`, a root span)
    /// and enters it at every poll of the connection, several times per call; admitted, each
    /// entry and exit was a registry look-up for every filtered layer, about 4 % of a `Fast`
    /// call's instructions, for a span that outlives every request on it and so is never one's
    /// stage.
    pub fn wants(meta: &Metadata<'_>) -> bool {
        meta.is_span() && may_be_stage(meta.target(), meta.name(), *meta.level())
    }

    /// Whether a span or event is tokio's resource instrumentation (`--cfg tokio_unstable`
    /// and tokio's `tracing` feature, as tokio-console needs): the `runtime.resource` spans of
    /// timers, semaphores, mutexes and channels and the events of their operations, which say
    /// what a request parked on and who holds a lock. Read only through
    /// [`StageAndResourceFilter`].
    pub fn wants_resource(meta: &Metadata<'_>) -> bool {
        if meta.is_span() {
            is_resource_span(meta)
        } else {
            is_resource_event(meta)
        }
    }
}

/// tokio's spans of a resource and of the operations on it.
fn is_resource_span(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("tokio") && meta.name().starts_with("runtime.resource")
}

/// tokio's events of a resource: an operation polled, permits taken or given back.
fn is_resource_event(meta: &Metadata<'_>) -> bool {
    matches!(
        meta.target(),
        "runtime::resource::poll_op" | "runtime::resource::state_update" | HANDED_OVER_TARGET
    )
}

/// The event of permits assigned to one waiter. A holder that gives its permits back while a
/// waiter queues hands them straight to the waiter: tokio then says so only with this event
/// (in the waiter's operation span, while the releaser runs: the request, or a task of its
/// own, as sqlx's pool returns a connection), not with the semaphore's own
/// `permits.op = "add"`. Missed, the hold never ended, and every later waiter blamed every
/// earlier holder.
const HANDED_OVER_TARGET: &str = "runtime::resource::async_op::state_update";

/// Whether a span with this target, name and level may be a request's stage.
fn may_be_stage(target: &str, name: &str, level: tracing::Level) -> bool {
    level <= tracing::Level::DEBUG
        && target != super::layer::REQUEST_SPAN_TARGET
        && !target.starts_with("tokio")
        && !name.starts_with("runtime.")
        && !TRANSPORT_CRATES.contains(&crate_of(target))
}

/// Crates whose spans belong to connections, not to requests.
const TRANSPORT_CRATES: [&str; 5] = ["h2", "hyper", "hyper_util", "tonic", "tower"];

/// The crate a target names (`h2::proto::connection` → `h2`).
fn crate_of(target: &str) -> &str {
    target.split_once("::").map_or(target, |(krate, _)| krate)
}

impl<S> Layer<S> for StageLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if attrs.metadata().name() == "runtime.resource" {
            let mut fields = ResourceVisitor::default();
            attrs.record(&mut fields);
            // A resource tokio builds inside another (the semaphore of a `Mutex`) is made while
            // the outer one's span is entered.
            let outer = ctx.lookup_current().and_then(|current| {
                current
                    .extensions()
                    .get::<Resource>()
                    .map(Resource::visible)
            });
            let resource = fields.resource(id.into_u64(), outer);
            let mut extensions = span.extensions_mut();
            if resource.this.kind == ResourceKind::Lock && resource.outer.is_none() {
                extensions.insert(Holds::default());
            }
            extensions.insert(resource);
            return;
        }
        // tokio's spans of operations on a resource (`runtime.resource.async_op`) are read
        // for what they say about the resource, never charged as stages.
        if !Self::wants(attrs.metadata()) {
            return;
        }
        let from_parent = span.parent().and_then(|parent| {
            parent
                .extensions()
                .get::<InRequest>()
                .map(|r| r.timeline.clone())
        });
        let Some(request) = from_parent.or_else(super::measured::polling_request) else {
            return;
        };
        let Some(timeline) = request.upgrade() else {
            return;
        };
        let mut kind = KindVisitor::default();
        attrs.record(&mut kind);
        timeline.stage_opened(id.into_u64(), attrs.metadata().name(), kind.kind());
        span.extensions_mut()
            .insert(InRequest { timeline: request });
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        // `depth`: how many spans of the scope came before the resource's (0: the event's own).
        let Some((depth, resource, span)) = scope.into_iter().enumerate().find_map(|(i, span)| {
            let found = span.extensions().get::<Resource>().copied();
            found.map(|r| (i, r, span))
        }) else {
            return;
        };
        let Resource {
            this,
            outer,
            internal,
        } = resource;
        let mut fields = EventVisitor::default();
        event.record(&mut fields);
        match fields.ready {
            Some(false) => resource::not_ready(resource),
            // An acquisition, counted once: on the lock the user sees, not on the semaphore
            // tokio keeps inside it.
            Some(true) if this.kind == ResourceKind::Lock && !internal => {
                if let Some(holder) = occupancy::current_holder()
                    && let Some(holds) = span.extensions_mut().get_mut::<Holds>()
                {
                    holds.acquired(holder, super::clock::now_ns());
                }
            }
            _ if fields.duration_ms.is_some() && this.kind == ResourceKind::Timer => {
                let ms = fields.duration_ms.unwrap_or_default();
                let deadline = super::clock::now_ns().saturating_add(ms.saturating_mul(1_000_000));
                span.extensions_mut().replace(resource::Deadline(deadline));
            }
            _ if fields.added => {
                // Permits given back (to the semaphore, or handed to a waiter): on the inner
                // semaphore, counted against the outer lock.
                let target = match outer {
                    Some(outer) if internal => ctx.span(&span::Id::from_u64(outer.span)),
                    _ => Some(span),
                };
                if let Some(target) = target
                    && let Some(holds) = target.extensions_mut().get_mut::<Holds>()
                {
                    // The same event says a waiter took free permits itself (tokio sends it
                    // then in the semaphore's own span, not in the waiter's operation span),
                    // or, with none obtained, that a waiter joined the queue: neither ends a
                    // hold.
                    let not_a_release = event.metadata().target() == HANDED_OVER_TARGET
                        && (depth == 0 || fields.permits_obtained == Some(0));
                    if !not_a_release {
                        let by = occupancy::current_holder();
                        holds.released(by.as_ref(), super::clock::now_ns());
                    }
                }
            }
            _ => {}
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let request = span.extensions_mut().remove::<InRequest>();
        if let Some(request) = request
            && let Some(timeline) = request.timeline.upgrade()
        {
            timeline.stage_closed(id.into_u64());
        }
    }
}

/// The per-layer filter that goes with [`StageLayer`]: see [`StageLayer::wants`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StageFilter;

impl<S> Filter<S> for StageFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        StageLayer::wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        interest(StageLayer::wants(meta))
    }

    /// Stages are DEBUG or above. Without this hint a subscriber whose other layers set none
    /// runs at TRACE: every `trace!` and `trace_span!` of h2 and hyper (hundreds per request)
    /// is then asked whether it is enabled. Measured: bare tonic with the engine and only this
    /// layer used 2.3x bare's CPU per call, against 1.3x with an INFO-filtered layer beside it.
    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        Some(tracing_subscriber::filter::LevelFilter::DEBUG)
    }
}

/// A filter's answer for a callsite, fixed for the callsite's life: the filters decide on the
/// metadata alone, so tracing need never ask again.
fn interest(wanted: bool) -> tracing::subscriber::Interest {
    if wanted {
        tracing::subscriber::Interest::always()
    } else {
        tracing::subscriber::Interest::never()
    }
}

/// [`StageFilter`], and tokio's resource instrumentation too ([`StageLayer::wants_resource`]):
/// with it (and `--cfg tokio_unstable` and tokio's `tracing` feature, as tokio-console needs)
/// a wait on a tokio timer is `timer`, on a semaphore, mutex or read-write lock
/// `resource-queue` with the lock's holders named.
///
/// Not the default, for its cost: tokio's resources are TRACE, so the subscriber runs at
/// TRACE, and every `trace!` of h2 and hyper is asked whether it is enabled where another
/// layer is interested in all (an `Option` layer that is `None` is); and every tokio timer,
/// channel and lock the process makes is a span in the registry. Measured on the benchmark's
/// bare echo: 1.95x bare's CPU per call, against 1.27x then with [`StageFilter`] (1.08x
/// since the engine makes no request span for the stage layer alone). A service that runs
/// tokio-console already pays it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageAndResourceFilter;

impl<S> Filter<S> for StageAndResourceFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        StageLayer::wants(meta) || StageLayer::wants_resource(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        interest(StageLayer::wants(meta) || StageLayer::wants_resource(meta))
    }

    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        Some(tracing_subscriber::filter::LevelFilter::TRACE)
    }
}

/// Who held the lock whose resource span is `resource` during `from..to`, other than
/// `victim`, and for how long of it (empty when the subscriber is not a registry, or the lock
/// is gone).
pub(crate) fn holders_of(resource: u64, from: u64, to: u64, victim: &Holder) -> Vec<(Holder, u64)> {
    read_resource(resource, |holds: &Holds| holds.during(from, to, victim)).unwrap_or_default()
}

/// The deadline of the timer whose resource span is `resource`, if tokio said.
pub(crate) fn deadline_of(resource: u64) -> Option<u64> {
    read_resource(resource, |deadline: &resource::Deadline| deadline.0)
}

/// Reads what the layer keeps in a resource's span (`T`), from outside a `tracing` callback
/// (a request's wake): through the global registry, if the subscriber is one.
fn read_resource<T: 'static, R>(resource: u64, read: impl Fn(&T) -> R) -> Option<R> {
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(&span::Id::from_u64(resource))?;
        span.extensions().get::<T>().map(&read)
    })
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::may_be_stage;

    #[test]
    fn a_services_own_spans_may_be_stages_and_the_transports_are_not() {
        assert!(may_be_stage("greeter::cache", "cache.refresh", Level::INFO));
        assert!(may_be_stage("holdup::db", "pool.acquire", Level::DEBUG));
        assert!(
            may_be_stage("h2o", "bottle", Level::INFO),
            "a crate that only starts like h2"
        );
        assert!(!may_be_stage(
            "h2::proto::connection",
            "Connection",
            Level::DEBUG
        ));
        assert!(!may_be_stage(
            "hyper_util::rt::tokio",
            "caller",
            Level::INFO
        ));
        assert!(!may_be_stage("tokio::task", "runtime.spawn", Level::INFO));
        assert!(
            !may_be_stage("holdup::rpc", "rpc", Level::INFO),
            "a request's own span"
        );
        assert!(!may_be_stage("greeter::codec", "frame", Level::TRACE));
    }
}
