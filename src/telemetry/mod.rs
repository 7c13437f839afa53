//! Everything that reports on requests: the per-request delay split and the tracing
//! subscriber. The subscriber is built here and nowhere else.

pub mod diagnostics;
pub mod subscriber;
