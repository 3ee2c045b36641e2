//! Why an image could not be published or loaded.

use crate::blobs::BlobError;
use crate::inference::InferenceError;
use crate::package::PackageError;
use crate::registry::RegistryError;
use crate::runtime::RuntimeError;
use thiserror::Error;

/// An image failure; each case maps to one HTTP status in the API layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The package itself is malformed or hostile.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The manifest names another model than the URL.
    #[error("the package is for model `{manifest}`, but was uploaded to `{url}`; upload it to /api/2.0/models/{manifest}/versions or fix `name` in sandserve.toml")]
    NameMismatch {
        /// Name in the manifest.
        manifest: String,
        /// Name in the URL.
        url: String,
    },
    /// The handler component is invalid, imports what the host does not offer, or is not
    /// a handler.
    #[error("handler component refused: {0}")]
    Component(RuntimeError),
    /// A graph does not load.
    #[error("{0}")]
    Graph(#[from] InferenceError),
    /// The manifest asks for something this server does not provide.
    #[error("{0}")]
    Unsupported(String),
    /// Metadata failure.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Blob store failure.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl ImageError {
    /// True when the server failed (storage, an engine it cannot load), false when the
    /// package or the request is at fault (what the API answers with a 4xx).
    pub fn is_server_side(&self) -> bool {
        match self {
            Self::Package(p) => matches!(p, PackageError::Io(_)),
            Self::NameMismatch { .. } | Self::Component(_) | Self::Unsupported(_) => false,
            Self::Graph(g) => matches!(
                g,
                InferenceError::EngineUnavailable { .. } | InferenceError::EngineLoad { .. }
            ),
            Self::Registry(r) => r.is_server_side(),
            Self::Blob(_) => true,
        }
    }
}
