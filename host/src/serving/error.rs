//! Why an endpoint operation or query failed ([`ServingError`]), and why a config could
//! not be prepared ([`PrepareError`], recorded as the endpoint's `update_error`).

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
    /// A model name with no version (a query of a bare model name).
    #[error("model `{0}` does not exist")]
    NoSuchModel(String),
    /// Another tenant's model version that does not exist or is not shared (one answer for
    /// both, so that nobody learns what another tenant has).
    #[error("model `{model}` version {version} does not exist or is not shared by its owner")]
    NotShared {
        /// `owner/model` as the config names it.
        model: String,
        /// The version.
        version: u64,
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
    /// Host work for the request failed (a task panicked); the server log says more.
    #[error("{0}")]
    Internal(String),
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
    /// Whether the server or the handler failed (what the API answers with a 5xx), as
    /// opposed to the request or the caller: a query falls back to another served entity
    /// only after such a failure. A full queue (429) is the caller's to retry later.
    pub fn is_server_side(&self) -> bool {
        match self {
            Self::InvalidConfig(_)
            | Self::UpdateInProgress(_)
            | Self::NoSuchEntity { .. }
            | Self::NoSuchModel(_)
            | Self::NotShared { .. }
            | Self::Overloaded { .. } => false,
            Self::NotReady(_) | Self::QueueTimeout(_) | Self::Internal(_) => true,
            Self::Runtime(e) => !e.is_client_error(),
            Self::Image(e) => e.is_server_side(),
            Self::Registry(e) => e.is_server_side(),
        }
    }
}

/// Why a config could not be prepared; its text is what the endpoint's `update_error`
/// says.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// A served entity names no valid version (configs are checked before they are
    /// stored, so only a record written by hand gets here).
    #[error("entity_version `{0}` is not a number")]
    BadVersion(String),
    /// A served entity's image could not be loaded.
    #[error("served entity `{entity}`: {source}")]
    Load {
        /// The served entity.
        entity: String,
        /// Why.
        source: ImageError,
    },
    /// One sandbox of the entity could never fit the server's memory budget.
    #[error(
        "served entity `{entity}` may use {needs_mib} MiB of memory, more than this server's \
         whole memory budget of {budget_mib} MiB; lower its memory_mib or ask the operator to \
         raise memory_budget_mib"
    )]
    OverMemoryBudget {
        /// The served entity.
        entity: String,
        /// What one of its sandboxes may use.
        needs_mib: usize,
        /// The server's whole budget.
        budget_mib: usize,
    },
    /// Another tenant's model version that is not shared (any more), or does not exist.
    #[error(
        "served entity `{entity}`: model `{model}` version {version} does not exist or is \
         not shared by its owner"
    )]
    NotShared {
        /// The served entity.
        entity: String,
        /// `owner/model`.
        model: String,
        /// The version.
        version: u64,
    },
    /// The preparing task itself failed (it panicked); the server log says why.
    #[error("preparing the config failed: {0}")]
    Crashed(String),
}
