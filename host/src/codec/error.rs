//! Why a request body could not be turned into tensors (always the client's mistake).

use thiserror::Error;

/// A malformed request: the message names the offending field (HTTP 400).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The body is not the JSON shape the format requires.
    #[error("malformed request body: {0}")]
    Json(String),
    /// A field holds a value of the wrong kind.
    #[error("`{field}`: {problem}")]
    Field {
        /// Path of the field, e.g. `inputs[0].data[3]`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An input tensor does not match the model signature.
    #[error("input `{input}`: {problem}")]
    Signature {
        /// Name of the input tensor.
        input: String,
        /// What the signature expected and what was given.
        problem: String,
    },
}

impl CodecError {
    pub(crate) fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Field {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn signature(input: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Signature {
            input: input.into(),
            problem: problem.into(),
        }
    }
}
