//! Why an endpoint operation or query failed.

use crate::images::ImageError;
use crate::registry::RegistryError;
use crate::runtime::RuntimeError;
use thiserror::Error;

/// A serving failure; the API maps each case to one HTTP status.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServingError {
    /// The endpoint config is malformed.
    #[error("{0}")]
    InvalidConfig(String),
    /// An update is already running.
    #[error("endpoint `{0}` is already being updated; wait until state.config_update is not IN_PROGRESS")]
    UpdateInProgress(String),
    /// The endpoint has no config ready yet.
    #[error("endpoint `{0}` is not ready yet; poll GET /api/2.0/serving-endpoints/{0} until state.ready is READY")]
    NotReady(String),
    /// No served entity of that name.
    #[error("endpoint `{endpoint}` has no served entity `{entity}`")]
    NoSuchEntity {
        /// Endpoint.
        endpoint: String,
        /// Entity asked for.
        entity: String,
    },
    /// The entity is at its concurrency limit and its queue is full.
    #[error("served entity `{entity}` is at capacity ({running} running, {queued} queued); retry after a moment")]
    Overloaded {
        /// Entity.
        entity: String,
        /// Requests running.
        running: usize,
        /// Requests waiting.
        queued: usize,
    },
    /// A queued request waited for a slot until its deadline.
    #[error("served entity `{0}` stayed busy until the request's deadline; retry after a moment")]
    QueueTimeout(String),
    /// The handler failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Image failure.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Metadata failure.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl ServingError {
    /// Whether a retry on another served entity may help (a 5xx of the handler or host).
    pub fn is_server_side(&self) -> bool {
        match self {
            Self::Runtime(e) => !e.is_client_error(),
            Self::Overloaded { .. } | Self::QueueTimeout(_) => true,
            _ => false,
        }
    }
}
