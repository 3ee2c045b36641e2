//! The records the registry keeps: tenants, tokens (salted hashes only), model images.

use super::Permission;
use crate::blobs::Digest;
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
#[serde(from = "StoredTokenRecord", into = "StoredTokenRecord")]
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
    /// Creation time (Unix milliseconds).
    pub created_at_ms: u64,
    /// Expiry (Unix milliseconds), if any.
    pub expires_at_ms: Option<u64>,
    /// Free-text comment.
    pub comment: Option<String>,
    /// Who created it (`admin` or a token id).
    pub created_by: String,
}

/// A token record as stored. Releases before this one kept whole seconds in `created_at` /
/// `expires_at`; those are read and converted, and still written (rounded up, so that a
/// token never outlives its lifetime by more than the rounding) next to the milliseconds,
/// so that going back to such a release keeps every token readable.
#[derive(Serialize, Deserialize)]
struct StoredTokenRecord {
    token_id: String,
    tenant: String,
    salt: String,
    hash: String,
    permission: Permission,
    resources: Vec<String>,
    #[serde(default)]
    created_at_ms: Option<u64>,
    #[serde(default)]
    expires_at_ms: Option<u64>,
    #[serde(default)]
    created_at: Option<u64>,
    #[serde(default)]
    expires_at: Option<u64>,
    comment: Option<String>,
    created_by: String,
}

impl From<TokenRecord> for StoredTokenRecord {
    fn from(record: TokenRecord) -> Self {
        Self {
            token_id: record.token_id,
            tenant: record.tenant,
            salt: record.salt,
            hash: record.hash,
            permission: record.permission,
            resources: record.resources,
            created_at_ms: Some(record.created_at_ms),
            expires_at_ms: record.expires_at_ms,
            created_at: Some(record.created_at_ms / 1000),
            expires_at: record.expires_at_ms.map(|ms| ms.div_ceil(1000)),
            comment: record.comment,
            created_by: record.created_by,
        }
    }
}

impl From<StoredTokenRecord> for TokenRecord {
    fn from(stored: StoredTokenRecord) -> Self {
        let seconds_to_ms = |s: u64| s.saturating_mul(1000);
        Self {
            token_id: stored.token_id,
            tenant: stored.tenant,
            salt: stored.salt,
            hash: stored.hash,
            permission: stored.permission,
            resources: stored.resources,
            created_at_ms: stored
                .created_at_ms
                .or(stored.created_at.map(seconds_to_ms))
                .unwrap_or(0),
            expires_at_ms: stored
                .expires_at_ms
                .or(stored.expires_at.map(seconds_to_ms)),
            comment: stored.comment,
            created_by: stored.created_by,
        }
    }
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
    /// Whether other tenants may serve it, and the last change of that (absent: never
    /// shared; records of older releases have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,
}

/// A model version's sharing state as its last change left it: shared or not, by whom
/// (`admin` or a token id) and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharing {
    /// Whether other tenants may serve the version from their own endpoints.
    pub shared: bool,
    /// Who made the change (`admin` or a token id).
    pub changed_by: String,
    /// When (Unix milliseconds).
    pub changed_at_ms: u64,
}

impl ImageRecord {
    /// Whether other tenants may serve this version now.
    pub fn is_shared(&self) -> bool {
        self.sharing.as_ref().is_some_and(|s| s.shared)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(times: &str) -> String {
        format!(
            r#"{{"token_id":"t1","tenant":"acme","salt":"00","hash":"11","permission":"CAN_VIEW",
            "resources":["*"],{times},"comment":null,"created_by":"admin"}}"#
        )
    }

    #[test]
    fn token_records_in_whole_seconds_are_read_as_milliseconds() {
        let old: TokenRecord = serde_json::from_str(&stored(
            r#""created_at":1700000000,"expires_at":1700000060"#,
        ))
        .unwrap();
        assert_eq!(old.created_at_ms, 1_700_000_000_000);
        assert_eq!(old.expires_at_ms, Some(1_700_000_060_000));
        let never: TokenRecord =
            serde_json::from_str(&stored(r#""created_at":1700000000,"expires_at":null"#)).unwrap();
        assert_eq!(never.expires_at_ms, None);
    }

    #[test]
    fn token_records_round_trip_in_milliseconds_and_keep_seconds_for_older_releases() {
        let record: TokenRecord = serde_json::from_str(&stored(
            r#""created_at_ms":1700000000123,"expires_at_ms":1700000001123"#,
        ))
        .unwrap();
        let text = serde_json::to_string(&record).unwrap();
        let again: TokenRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(again, record);
        assert_eq!(again.expires_at_ms, Some(1_700_000_001_123));
        // What an older release reads: whole seconds, the expiry rounded up.
        let fields: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(fields["created_at"], 1_700_000_000u64);
        assert_eq!(fields["expires_at"], 1_700_000_002u64);
    }
}
