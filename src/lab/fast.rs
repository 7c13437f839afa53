//! `Fast`: the canary. It does nothing, so any latency it shows was caused by someone else.

use super::support::error::LabError;
use crate::proto::{FastReply, FastRequest};

/// Longest `FastRequest.message` echoed back: the canary must stay cheap.
pub const MAX_ECHO_BYTES: usize = 1024;

/// # Errors
/// INVALID_ARGUMENT when the message is longer than [`MAX_ECHO_BYTES`].
pub fn plan(request: FastRequest) -> Result<String, LabError> {
    let len = request.message.len();
    if len > MAX_ECHO_BYTES {
        return Err(LabError::invalid(
            "message",
            format!("must be at most {MAX_ECHO_BYTES} bytes, got {len}"),
        ));
    }
    Ok(request.message)
}

pub fn reply(message: String) -> FastReply {
    FastReply {
        message,
        diagnostics: None,
    }
}
