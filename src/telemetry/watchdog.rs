//! The long-poll watchdog: a tracing layer that times every enter→exit of an RPC's server
//! span. Each enter→exit is one poll of the handler on a runtime worker, so a long one means
//! the handler held that worker without yielding. It becomes a WARN event on the span itself
//! (visible in Jaeger on the very request that blocked) and a count by RPC in Prometheus.
//! Together with the runtime lag probe it says *who* blocked the runtime and *how much*
//! everyone else paid.

use std::{
    thread::{self, ThreadId},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, family::Family};
use tracing::{Subscriber, field::Visit, span};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

use super::delay_metrics::MethodLabels;

/// Polls longer than this are reported: 10 ms is far past a healthy poll (microseconds) and
/// already a visible delay for every task queued behind it.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_millis(10);

/// The span field that marks an RPC's server span (OpenTelemetry's `rpc.method`).
const RPC_METHOD: &str = "rpc.method";

#[derive(Debug, Clone, Copy)]
pub struct Watchdog {
    threshold: Duration,
}

impl Watchdog {
    pub fn new(threshold: Duration) -> Self {
        Self { threshold }
    }
}

/// Where a server span's long polls are counted; attached per span by [`attach`], so that each
/// server (several may share one process in tests) counts its own.
#[derive(Debug, Clone)]
pub struct LongPollSink {
    pub counter: Family<MethodLabels, Counter>,
    pub rpc: &'static str,
}

/// The RPC a span serves, read from its `rpc.method` field.
struct RpcSpan;

/// When the current thread entered the span (a span may be entered on several threads).
#[derive(Default)]
struct Entries(Vec<(ThreadId, Instant)>);

/// Lets the watchdog count `span`'s long polls into `sink`.
pub fn attach(span: &tracing::Span, sink: LongPollSink) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>()
            && let Some(span) = registry.span(id)
        {
            span.extensions_mut().insert(sink);
        }
    });
}

struct HasRpcMethod(bool);

impl Visit for HasRpcMethod {
    fn record_str(&mut self, field: &tracing::field::Field, _value: &str) {
        if field.name() == RPC_METHOD {
            self.0 = true;
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {
        if field.name() == RPC_METHOD {
            self.0 = true;
        }
    }
}

impl<S> Layer<S> for Watchdog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut visitor = HasRpcMethod(false);
        attrs.record(&mut visitor);
        if visitor.0
            && let Some(span) = ctx.span(id)
        {
            let mut extensions = span.extensions_mut();
            extensions.insert(RpcSpan);
            extensions.insert(Entries::default());
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(entries) = span.extensions_mut().get_mut::<Entries>()
        {
            entries.0.push((thread::current().id(), Instant::now()));
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let (held, sink) = {
            let mut extensions = span.extensions_mut();
            let Some(entries) = extensions.get_mut::<Entries>() else {
                return;
            };
            let me = thread::current().id();
            let Some(i) = entries.0.iter().rposition(|(t, _)| *t == me) else {
                return;
            };
            let (_, entered) = entries.0.swap_remove(i);
            let held = entered.elapsed();
            (
                held,
                extensions.get_mut::<LongPollSink>().map(|s| s.clone()),
            )
        };
        if held < self.threshold {
            return;
        }
        let rpc = sink.as_ref().map_or("", |s| s.rpc);
        // The extensions lock is released: the event may be recorded on this very span.
        tracing::warn!(
            target: "holdup::watchdog",
            parent: id.clone(),
            poll_ms = held.as_secs_f64() * 1e3,
            threshold_ms = self.threshold.as_secs_f64() * 1e3,
            rpc,
            "long poll: this request held a runtime worker for {:.1} ms without yielding; \
             every task queued on that worker waited as long",
            held.as_secs_f64() * 1e3
        );
        if let Some(sink) = sink {
            sink.counter
                .get_or_create(&MethodLabels {
                    grpc_method: sink.rpc,
                })
                .inc();
        }
    }
}
