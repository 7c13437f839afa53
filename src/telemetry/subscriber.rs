//! The one place a `tracing` subscriber is built.

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Installs the global subscriber: human-readable logs to stderr filtered by `RUST_LOG`
/// (default `info`). Calling it twice is harmless: the second call keeps the first subscriber,
/// which lets every test in one process ask for logging.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(fmt).try_init();
}
