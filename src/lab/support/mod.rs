//! What the per-RPC modules share, apart from any one cause of delay: admission (in-flight
//! limits), the caller's deadline, input validation, retries with backoff, the bounded compute
//! pool, the error type every handler returns, and the Lab's metrics.

pub mod admission;
pub mod compute_pool;
pub mod deadline;
pub mod error;
pub mod metrics;
pub mod retry;
pub mod validate;
