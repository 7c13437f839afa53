//! # Arrival: when a request reached the machine, not when the server got round to it
//!
//! A request can wait before any code of the server reads it: every worker busy, or only the
//! one whose queue holds its connection's task. A tower layer starts its clock only when the
//! request's own task is first polled, so that wait is invisible to it. [`Arrival`] is what a
//! connection-level service puts into each request's extensions so that the engine can count
//! that wait, and say which clock it counted from.

#![forbid(unsafe_code)]

mod record;

pub use record::{Arrival, SocketWait, Source};
