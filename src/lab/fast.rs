//! `Fast`: the canary. It does nothing, so any latency it shows was caused by someone else.

use super::support::error::LabError;
use crate::proto::{FastReply, FastRequest};

/// Longest echo accepted: the canary must stay cheap.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// # Errors
/// INVALID_ARGUMENT when the message is longer than [`MAX_MESSAGE_BYTES`].
pub fn plan(request: FastRequest) -> Result<String, LabError> {
    let len = request.message.len();
    if len > MAX_MESSAGE_BYTES {
        return Err(LabError::invalid(
            "message",
            format!("must be at most {MAX_MESSAGE_BYTES} bytes, got {len}"),
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
