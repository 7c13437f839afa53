//! # Arrival: when a request reached the machine, not when the server got round to it
//!
//! A request can wait before any code of the server reads it: every worker busy, or only the
//! one whose queue holds its connection's task. A tower layer starts its clock only when the
//! request's own task is first polled, so that wait is invisible to it. This module measures
//! it: the kernel stamps each received segment (`SO_TIMESTAMPING`, else `SO_TIMESTAMPNS`), the
//! connection reads with `recvmsg` and keeps the stamp of the newest bytes, and a hyper service
//! that runs in the connection task ([`Stamp`]) puts an [`Arrival`] into each request's
//! extensions before the tower stack runs. Everything from the arrival to the request's first
//! poll is time the request was ready and not served.
//!
//! The parts, smallest first:
//!
//! - [`Arrival`] (always): what a request carries, in the engine's clock.
//! - feature `arrival`: [`enable`] turns the timestamps on at bind; [`TimestampedStream`] reads
//!   with them and keeps the latest in its [`ReadMarks`].
//! - feature `serve`: [`Stamp`], the hyper service that stamps; [`serve`](fn@serve), a whole
//!   accept loop for a tonic `Routes` or an axum `Router`.
//! - feature `tonic`: [`incoming`](fn@incoming), for tonic's own
//!   `Server::serve_with_incoming`: the connection's marks reach the layer through tonic's
//!   connect info, and the layer reads them when the request reaches it.
//!
//! A tonic service served this way, with the engine's layer (without [`DiagnoseLayer`]
//! requests are stamped and served, and nothing reads the stamps):
//!
//! ```no_run
//! # #[cfg(feature = "serve")]
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! let (_, health) = tonic_health::server::health_reporter();
//! let routes = tonic::service::Routes::new(health).prepare();
//! let service = tower::ServiceBuilder::new()
//!     .layer(holdup_diagnose::DiagnoseLayer::new())
//!     .service(routes);
//! holdup_diagnose::arrival::serve(listener, service, std::future::pending::<()>()).await
//! # }
//! ```
//!
//! [`DiagnoseLayer`]: crate::DiagnoseLayer

#![forbid(unsafe_code)]

// What an accept loop needs: `serve`'s and `incoming`'s.
#[cfg(any(feature = "serve", feature = "tonic"))]
mod accept;
#[cfg(feature = "arrival")]
mod enable;
mod first_poll;
#[cfg(feature = "tonic")]
mod incoming;
#[cfg(feature = "arrival")]
mod marks;
#[cfg(all(feature = "arrival", target_os = "linux"))]
mod realtime;
mod record;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "serve")]
mod stamp;
#[cfg(feature = "arrival")]
mod stream;
#[cfg(all(feature = "arrival", target_os = "linux"))]
mod timestamps;

#[cfg(feature = "arrival")]
pub use enable::{Support, enable, enable_stream};
pub(crate) use first_poll::task_first_polled;
#[cfg(feature = "tonic")]
pub use incoming::{Incoming, StampedConnectInfo, incoming};
#[cfg(feature = "arrival")]
pub use marks::{ReadMarks, ReadSnapshot};
pub use record::{Arrival, SocketWait, Source};
#[cfg(feature = "serve")]
pub use serve::serve;
#[cfg(feature = "serve")]
pub use stamp::{Stamp, Stamped};
#[cfg(feature = "arrival")]
pub use stream::TimestampedStream;
