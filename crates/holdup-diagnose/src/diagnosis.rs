//! A request's handle on its own diagnosis, for handlers that want more than the header: to
//! hand their work to a task of its own (measured as the request's), or to read the report so
//! far (the Lab puts it in its reply).

use std::{future::Future, io, sync::Arc};

use tokio::{runtime::Handle, task::JoinHandle};

use super::{
    clock::{instant_at, now_ns},
    engine::gated_spawn,
    identity::Identity,
    measured::Measured,
    report::Report,
    timeline::Timeline,
};

/// In each request's extensions (`request.extensions().get::<Diagnosis>()`), put there by the
/// [`DiagnoseLayer`](super::layer::DiagnoseLayer).
#[derive(Debug, Clone)]
pub struct Diagnosis(pub(crate) Arc<Timeline>);

impl Diagnosis {
    /// The diagnosis of an HTTP request, if the layer is installed. In a tonic handler:
    /// `request.extensions().get::<Diagnosis>()`.
    pub fn of(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<Self>()
    }

    pub fn identity(&self) -> &Identity {
        &self.0.identity
    }

    /// When the request reached the layer: the instant a caller's deadline counts from on the
    /// server. tonic's transport starts its own `grpc-timeout` timer just after the layer is
    /// called, and answers CANCELLED when it fires; a handler that counts from here instead of
    /// from when it runs is never later than that timer, so it can answer DEADLINE_EXCEEDED.
    pub fn arrived(&self) -> std::time::Instant {
        instant_at(self.0.started)
    }

    /// The request's span: the server span, with the split and verdict recorded on it at the end.
    pub fn span(&self) -> &tracing::Span {
        &self.0.span
    }

    /// What the request measured so far. Taken as a handler builds its reply, it misses only
    /// the rest of that last poll (microseconds).
    pub fn report(&self) -> Report {
        self.0.report(now_ns())
    }

    /// Runs `future` as a task of its own on `runtime`, measured as this request and polled
    /// in its span (spans it opens are the request's stages): its polls, its waits for a
    /// worker (blamed) and its parked time are the request's. When
    /// tokio-console will show it ([`name_tasks_through`](super::name_tasks_through)), the task
    /// is called `"{label} {short trace id}"`, else `label`.
    ///
    /// One handler task per request: the engine accounts for the waits of one task at a time.
    ///
    /// # Errors
    /// The I/O error tokio reports when the runtime is shutting down.
    pub fn spawn<F>(
        &self,
        label: &str,
        runtime: &Handle,
        future: F,
    ) -> io::Result<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut measured = Some(Measured::handed_over(Arc::clone(&self.0), future));
        let mut spawned = None;
        gated_spawn(&mut |named| {
            let Some(measured) = measured.take() else {
                return;
            };
            let short = if named {
                self.0.identity.short_trace_id()
            } else {
                String::new()
            };
            spawned = Some(if short.is_empty() {
                spawn_named(label, runtime, measured)
            } else {
                spawn_named(&format!("{label} {short}"), runtime, measured)
            });
        });
        spawned.unwrap_or_else(|| Err(io::Error::other("the spawn gate did not spawn")))
    }
}

/// Spawns `future` on `handle` under `name`, the name tokio-console shows for the task
/// (names need `--cfg tokio_unstable`; without it the task is spawned unnamed).
fn spawn_named<F>(name: &str, handle: &Handle, future: F) -> io::Result<JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[cfg(all(tokio_unstable, feature = "task-names"))]
    {
        tokio::task::Builder::new()
            .name(name)
            .spawn_on(future, handle)
    }
    #[cfg(not(all(tokio_unstable, feature = "task-names")))]
    {
        let _ = name;
        Ok(handle.spawn(future))
    }
}
