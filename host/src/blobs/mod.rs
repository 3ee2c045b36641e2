//! The content-addressed blob store: large immutable files (archives, components, model
//! weights) named by their sha256.
//!
//! [`BlobStore`] (`store.rs`) is what the rest of the server uses. On a single node it is
//! the local folder alone (`local.rs`). In cluster mode it puts an object store behind the
//! [`RemoteBlobs`] trait (`remote.rs`; S3-compatible storage in `s3.rs`) and keeps the local
//! folder as a node-local cache with a byte budget (`cache.rs`: LRU that never evicts a
//! pinned blob, `pins.rs`), checking the sha256 of every fetched blob and fetching each
//! missing blob once however many ask for it at the same time (`flight.rs`).

mod cache;
mod flight;
mod local;
mod pins;
mod remote;
mod s3;
mod store;

pub use local::{BlobWriter, LocalBlobs};
pub use pins::{BlobPin, PinTable};
pub use remote::{RemoteBlobs, RemoteObject};
pub use s3::{S3Blobs, S3Settings};
pub use store::{BlobStore, CacheSettings, REMOTE_DELETE_GRACE};

use sha2::{Digest as _, Sha256};
use std::fmt;
use thiserror::Error;

/// A sha256 content digest, shown as `sha256:<64 hex>`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<hex>` or bare 64-character lower- or upper-case hex.
    pub fn parse(text: &str) -> Result<Self, BlobError> {
        let hex = text
            .strip_prefix("sha256:")
            .unwrap_or(text)
            .to_ascii_lowercase();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(hex))
        } else {
            Err(BlobError::BadDigest(text.to_string()))
        }
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// The digest whose raw sha256 output is `hash`.
    pub(crate) fn from_hash(hash: &[u8]) -> Self {
        Self(hex::encode(hash))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = BlobError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.to_string()
    }
}

/// A blob store failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BlobError {
    /// A file-system operation failed.
    #[error("blob store I/O error while {action}: {source}")]
    Io {
        /// What the store was doing.
        action: String,
        /// The error.
        source: std::io::Error,
    },
    /// No blob has this digest.
    #[error("no blob {0}")]
    NotFound(Digest),
    /// Not a sha256 digest.
    #[error("`{0}` is not a sha256 digest (expected sha256:<64 hex characters>)")]
    BadDigest(String),
    /// A write went past its size limit.
    #[error("blob larger than the {limit}-byte limit")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The object store could not be reached or failed. The detail names the store's
    /// endpoint: it is logged where the failure happens and never shown, since this
    /// message can reach a tenant (an endpoint's `update_error`).
    #[error("the object store that holds model files cannot be reached")]
    Unavailable(String),
    /// What the object store returned is not the blob it was asked for; it was refused
    /// and not cached.
    #[error("blob {expected} in the object store is corrupted (its content hashes to {actual}); it was refused")]
    Corrupt {
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
}

impl BlobError {
    /// A copy for the other waiters of a shared fetch (`flight.rs`): the same kind, the
    /// I/O source kept as text.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Io { action, source } => Self::Io {
                action: action.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Self::NotFound(d) => Self::NotFound(d.clone()),
            Self::BadDigest(t) => Self::BadDigest(t.clone()),
            Self::TooLarge { limit } => Self::TooLarge { limit: *limit },
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::Corrupt { expected, actual } => Self::Corrupt {
                expected: expected.clone(),
                actual: actual.clone(),
            },
        }
    }
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlobError {
    let action = action.into();
    move |source| BlobError::Io { action, source }
}

#[cfg(test)]
mod tests;
