//! `install_hooks_with` keeps the callbacks a service sets itself: tokio holds one callback per
//! runtime event, so without it the engine's would replace the user's.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

#[test]
fn the_users_thread_park_callback_still_runs() {
    let parks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&parks);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let hooks = holdup_diagnose::Hooks::new().on_thread_park(move || {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let runtime = holdup_diagnose::install_hooks_with(&mut builder, hooks)
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // A worker parks while the timer runs down.
        tokio::spawn(tokio::time::sleep(std::time::Duration::from_millis(20)))
            .await
            .expect("the sleep ran");
    });
    drop(runtime);
    assert!(parks.load(Ordering::Relaxed) > 0, "the user's callback ran");
}

#[cfg(tokio_unstable)]
#[test]
fn the_users_task_poll_callbacks_still_run() {
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&polls);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let hooks = holdup_diagnose::Hooks::new().on_before_task_poll(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let runtime = holdup_diagnose::install_hooks_with(&mut builder, hooks)
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::spawn(async {}).await.expect("the task ran");
    });
    drop(runtime);
    assert!(polls.load(Ordering::Relaxed) > 0, "the user's callback ran");
}
