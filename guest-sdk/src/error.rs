//! The error a handler returns: what the caller sees and which HTTP status it becomes.

use crate::tensor::TensorError;
use std::fmt;

/// Why a handler refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// The request was malformed. The message is shown to the caller (HTTP 400), so make
    /// it say what to fix.
    InvalidInput(String),
    /// Something the handler needs is temporarily unavailable (HTTP 503).
    Unavailable(String),
    /// The handler failed. The message goes to the host log; the caller sees a generic
    /// error (HTTP 500).
    Internal(String),
}

impl HandlerError {
    /// Shorthand for [`HandlerError::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// Shorthand for [`HandlerError::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Unavailable(m) => write!(f, "unavailable: {m}"),
            Self::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for HandlerError {}

/// A tensor that does not match what the handler expects is the caller's mistake.
impl From<TensorError> for HandlerError {
    fn from(error: TensorError) -> Self {
        Self::InvalidInput(error.to_string())
    }
}

/// Inputs the graph rejects (wrong name, type or shape) are the caller's mistake (400);
/// any other failed inference is the handler's (500).
impl From<crate::nn::NnError> for HandlerError {
    fn from(error: crate::nn::NnError) -> Self {
        if error.is_invalid_input() {
            let message = error
                .message
                .strip_prefix("invalid input: ")
                .unwrap_or(&error.message);
            Self::InvalidInput(message.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}
