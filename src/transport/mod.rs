//! What every holdup listener does to the connections it accepts, so that a client cannot
//! make holdup the delay it diagnoses: Nagle off, a cap on connections, back-off at descriptor
//! exhaustion ([`listener`]); a watchdog that closes connections that never handshake, stay
//! idle, or leave replies unread ([`connection`], fed by the [`track`] layer); the limits
//! themselves ([`limits`]) and their metrics ([`metrics`]). For gRPC alone: the content-type
//! check ([`content_type`]) and the UNAVAILABLE answer at the end of the grace ([`abandon`]).
//! Both ends (of the grace, of the connections) are a [`signal`] every call or read looks at.

pub mod abandon;
pub mod connection;
pub mod content_type;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod serve;
pub mod signal;
pub mod track;

pub use limits::ConnectionLimits;
pub use listener::Listener;
pub use metrics::TransportMetrics;
