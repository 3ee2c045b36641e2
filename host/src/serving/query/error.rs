//! Why a query failed, as one typed error the API maps to one status each.

use super::super::ServingError;
use crate::codec::CodecError;
use thiserror::Error;

/// A failed query.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The caller's grant does not allow querying the name (handlers authorize before
    /// they call the pipeline; the pipeline refuses a query that skipped it).
    #[error("this token may not query `{0}`")]
    NotAllowed(String),
    /// Routing, admission or the handler failed.
    #[error(transparent)]
    Serving(#[from] ServingError),
    /// The body is malformed or does not match the model signature.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The server's memory budget cannot hold the body's decoding or the answer's
    /// encoding now.
    #[error(
        "the server's memory budget cannot hold this request's {} MiB of JSON work now; \
         retry shortly",
        .cost_bytes >> 20
    )]
    CodecBudget {
        /// What the work would hold, in bytes.
        cost_bytes: usize,
    },
    /// The handler's output cannot be encoded in the protocol (for the host log only).
    #[error("handler output of `{entity}`: {source}")]
    Output {
        /// The served entity that gave it.
        entity: String,
        /// Why.
        source: CodecError,
    },
}

impl QueryError {
    /// Whether the server or the handler failed (the API answers a 5xx), as opposed to
    /// the caller or its body: the fallback decision.
    pub fn is_server_side(&self) -> bool {
        match self {
            Self::NotAllowed(_) | Self::Codec(_) => false,
            Self::CodecBudget { .. } | Self::Output { .. } => true,
            Self::Serving(e) => e.is_server_side(),
        }
    }
}
