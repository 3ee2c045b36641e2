//! The records the registry keeps: tenants, tokens (salted hashes only), model images.

use crate::blobs::Digest;
use crate::tenancy::Permission;
use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A tenant: the unit of isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Unique name.
    pub name: String,
    /// Creation time (Unix seconds).
    pub created_at: u64,
}

/// An API token of one tenant. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public identifier (part of the token string).
    pub token_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Random salt, hex.
    pub salt: String,
    /// sha256(salt || secret), hex.
    pub hash: String,
    /// What the token may do.
    pub permission: Permission,
    /// Resource names (models, endpoints) it applies to; `*` for all.
    pub resources: Vec<String>,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Expiry (Unix seconds), if any.
    pub expires_at: Option<u64>,
    /// Free-text comment.
    pub comment: Option<String>,
    /// Who created it (`admin` or a token id).
    pub created_by: String,
}

/// One file of a model image, stored as a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    /// Path inside the package.
    pub path: String,
    /// Content digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// An immutable, versioned model image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Owning tenant.
    pub tenant: String,
    /// Model name.
    pub name: String,
    /// Version, counting up from 1 per model name; never reused.
    pub version: u64,
    /// Digest of the uploaded archive.
    pub digest: Digest,
    /// Size of the uploaded archive.
    pub size_bytes: u64,
    /// The manifest text (`sandserve.toml`).
    pub manifest: String,
    /// Every file of the package.
    pub files: Vec<ImageFile>,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Who uploaded it (a token id).
    pub created_by: String,
}

impl ImageRecord {
    /// Every blob this image keeps alive.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.digest).chain(self.files.iter().map(|f| &f.digest))
    }

    /// The blob of the file at `path`.
    pub fn file(&self, path: &str) -> Option<&ImageFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// An image before the registry gives it a version.
#[derive(Debug, Clone)]
pub struct ImageDraft {
    /// Owning tenant.
    pub tenant: String,
    /// Model name.
    pub name: String,
    /// Digest of the uploaded archive.
    pub digest: Digest,
    /// Size of the uploaded archive.
    pub size_bytes: u64,
    /// Manifest text.
    pub manifest: String,
    /// Package files.
    pub files: Vec<ImageFile>,
    /// Uploader.
    pub created_by: String,
}
