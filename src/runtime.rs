//! The lab runtime: the small tokio runtime on which every handler runs.
//!
//! holdup runs two runtimes. The transport runtime accepts connections, speaks HTTP/2 and
//! decodes protobuf; the lab runtime runs the handlers. Why not one: when a handler blocks
//! every worker of a single runtime, the next request is not even read off the socket until
//! a worker frees, so no code in the server can see that it waited: only the client can.
//! With the handlers on their own runtime, the transport still receives the request, hands
//! it over at once, and the wait for a lab worker is measured (`scheduled_us`) exactly as
//! tokio-console measures a task's scheduled time. The lesson is unchanged: a blocked lab
//! worker still delays every request queued behind it.

use std::{future::Future, io, thread};

use tokio::{runtime, sync::oneshot, task::JoinHandle};

/// A multi-thread runtime with `workers` worker threads named `name`, timers and I/O enabled,
/// and the diagnosis engine's poll hooks (so that blame can name any task that holds one of its
/// workers): how every runtime of holdup is built (lab, transport, load generator, telemetry
/// export).
///
/// # Errors
/// The I/O error if the runtime cannot be created.
pub fn multi_thread(name: &str, workers: usize) -> io::Result<runtime::Runtime> {
    let mut builder = runtime::Builder::new_multi_thread();
    crate::diagnose::install_hooks(&mut builder);
    builder
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
}

/// Owns a runtime on a thread of its own, so that it can be dropped from anywhere (dropping a
/// runtime inside an async context panics). The lab runtime is one; the telemetry export
/// runtime another.
#[derive(Debug)]
pub struct OwnedRuntime {
    handle: runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl OwnedRuntime {
    /// Starts a multi-thread runtime with `workers` worker threads called `name`.
    ///
    /// # Errors
    /// The I/O error if the runtime or its owner thread cannot be created.
    pub fn start(name: &str, workers: usize) -> io::Result<Self> {
        let rt = multi_thread(name, workers)?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        thread::Builder::new()
            .name(format!("{name}-owner"))
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Blocking jobs that ignore cancellation must not hold the process open.
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
        })
    }

    pub fn handle(&self) -> &runtime::Handle {
        &self.handle
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Spawns `future` on `handle` under `name`, the name tokio-console shows for the task.
///
/// # Errors
/// The I/O error tokio reports when the runtime is shutting down.
pub fn spawn_named<F>(
    name: &str,
    handle: &runtime::Handle,
    future: F,
) -> io::Result<JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[cfg(tokio_unstable)]
    {
        tokio::task::Builder::new()
            .name(name)
            .spawn_on(future, handle)
    }
    #[cfg(not(tokio_unstable))]
    {
        let _ = name;
        Ok(handle.spawn(future))
    }
}

/// Runs `job` on the current runtime's blocking pool under `name`, the name tokio-console
/// shows for it.
///
/// # Errors
/// The I/O error tokio reports when the runtime is shutting down.
pub fn spawn_blocking_named<F, R>(name: &str, job: F) -> io::Result<JoinHandle<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    #[cfg(tokio_unstable)]
    {
        tokio::task::Builder::new().name(name).spawn_blocking(job)
    }
    #[cfg(not(tokio_unstable))]
    {
        let _ = name;
        Ok(tokio::task::spawn_blocking(job))
    }
}
