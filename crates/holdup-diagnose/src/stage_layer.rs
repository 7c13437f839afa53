//! The `tracing` layer that tells the engine which stage spans a request has open, so that its
//! parked time is charged to the innermost one. Add it to the subscriber beside the others
//! (`registry().with(StageLayer::new())`); without it every wait is `waiting`.
//!
//! A request's span carries its timeline in the span's extensions (put there by the
//! [`DiagnoseLayer`](super::layer::DiagnoseLayer)); every span opened under it inherits it, so a
//! new span finds its request by looking at its parent only.

use std::sync::{Arc, Weak};

use tracing::{Metadata, Subscriber, span};
use tracing_subscriber::{
    Layer,
    layer::{Context, Filter},
    registry::LookupSpan,
};

use super::{stage::KindVisitor, timeline::Timeline};

/// In a span's extensions: the request it belongs to. Weak: the timeline holds the request's
/// span, which must close when the request is done.
#[derive(Debug, Clone)]
pub(crate) struct InRequest {
    pub(crate) timeline: Weak<Timeline>,
    /// The request's own span, not a stage of it.
    pub(crate) root: bool,
}

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageLayer;

impl StageLayer {
    pub fn new() -> Self {
        Self
    }

    /// Spans the layer needs to see: DEBUG and above, and not tokio's own task and resource
    /// instrumentation, which is the console's and never a stage.
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
}

/// Whether a span with this target, name and level may be a request's stage.
fn may_be_stage(target: &str, name: &str, level: tracing::Level) -> bool {
    level <= tracing::Level::DEBUG
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
        let Some(parent) = span.parent() else { return };
        let Some(request) = parent.extensions().get::<InRequest>().cloned() else {
            return;
        };
        let Some(timeline) = request.timeline.upgrade() else {
            return;
        };
        let mut kind = KindVisitor::default();
        attrs.record(&mut kind);
        timeline.stage_opened(id.into_u64(), attrs.metadata().name(), kind.kind());
        span.extensions_mut().insert(InRequest {
            timeline: request.timeline,
            root: false,
        });
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let request = span.extensions_mut().remove::<InRequest>();
        if let Some(request) = request
            && !request.root
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
        if StageLayer::wants(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    /// Stages are DEBUG or above. Without this hint a subscriber whose other layers set none
    /// runs at TRACE: every `trace!` and `trace_span!` of h2 and hyper (hundreds per request)
    /// is then asked whether it is enabled. Measured: bare tonic with the engine and only this
    /// layer used 2.3x bare's CPU per call, against 1.3x with an INFO-filtered layer beside it.
    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        Some(tracing_subscriber::filter::LevelFilter::DEBUG)
    }
}

/// Puts `timeline` in the extensions of its request's span (a no-op when the subscriber is not
/// a `tracing_subscriber` registry, or the span is disabled).
pub(crate) fn attach(span: &tracing::Span, timeline: &Arc<Timeline>) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>()
            && let Some(span) = registry.span(id)
        {
            span.extensions_mut().insert(InRequest {
                timeline: Arc::downgrade(timeline),
                root: true,
            });
        }
    });
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
        assert!(!may_be_stage("greeter::codec", "frame", Level::TRACE));
    }
}
