//! Why a query failed, as one typed error the API maps to one status each.

use super::super::ServingError;
use crate::codec::CodecError;
use crate::governance::Refusal;
use thiserror::Error;

/// A failed query.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The caller's grant does not allow querying the name (handlers authorize before
    /// they call the pipeline; the pipeline refuses a query that skipped it).
    #[error("this token may not query `{0}`")]
    NotAllowed(String),
    /// A rate limit or the tenant's concurrency quota refused it (nothing was run).
    #[error(transparent)]
    Refused(#[from] Refusal),
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
            Self::NotAllowed(_) | Self::Codec(_) | Self::Refused(_) => false,
            Self::CodecBudget { .. } | Self::Output { .. } => true,
            Self::Serving(e) => e.is_server_side(),
        }
    }
}

/// The error a query's caller answers with, as the pipeline's hooks record it: the API's
/// error type (its HTTP status) or, in tests, [`QueryError`] itself.
pub trait Answered: From<QueryError> + std::fmt::Display {
    /// The status code the caller answers.
    fn status_code(&self) -> u16;
}

impl Answered for QueryError {
    /// Without the API's mapping: 500 for a server-side failure, else 400.
    fn status_code(&self) -> u16 {
        if self.is_server_side() {
            500
        } else {
            400
        }
    }
}
