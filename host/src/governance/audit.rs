//! The audit log: one entry per control-plane action (who, what, on what, when, with
//! which result), appended and never changed; read by time range. One node keeps it in the
//! `audit` sled tree under a time-and-sequence key ([`SledAudit`]); a cluster in PostgreSQL
//! (see `super::shared`), so any node reads every node's entries.

use super::shared::AuditStore;
use super::GovernanceError;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One control-plane action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it was answered, Unix milliseconds.
    pub timestamp_ms: u64,
    /// `admin`, a token id, or `anonymous` when the credentials were missing or wrong.
    pub actor: String,
    /// The actor's tenant, for a tenant token.
    pub tenant: Option<String>,
    /// The HTTP method.
    pub method: String,
    /// The path acted on (the target is in it: tenant, token, model, endpoint).
    pub path: String,
    /// The status answered.
    pub status: u16,
}

/// The log.
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
}

/// The log in a sled tree (one node).
pub struct SledAudit {
    tree: sled::Tree,
    sequence: AtomicU64,
}

fn db_error(e: impl std::fmt::Display) -> GovernanceError {
    GovernanceError::Store(e.to_string())
}

impl AuditLog {
    /// The log in the sled `tree`.
    pub fn new(tree: sled::Tree) -> Self {
        Self::with_store(Self::sled_store(tree))
    }

    /// A sled tree as an audit store.
    pub fn sled_store(tree: sled::Tree) -> Arc<dyn AuditStore> {
        Arc::new(SledAudit {
            tree,
            sequence: AtomicU64::new(0),
        })
    }

    /// The log in `store`.
    pub fn with_store(store: Arc<dyn AuditStore>) -> Self {
        Self { store }
    }

    /// Appends `entry`.
    pub fn append(&self, entry: &AuditEntry) -> Result<(), GovernanceError> {
        self.store.append(entry)
    }

    /// Entries from `from_ms` (inclusive) to `to_ms` (exclusive), oldest first, at most
    /// `limit`, and whether more were left out.
    pub fn read(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), GovernanceError> {
        self.store.read(from_ms, to_ms, limit)
    }
}

impl AuditStore for SledAudit {
    fn append(&self, entry: &AuditEntry) -> Result<(), GovernanceError> {
        let mut key = entry.timestamp_ms.to_be_bytes().to_vec();
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        key.extend_from_slice(&n.to_be_bytes());
        // Unique across restarts too: the sequence restarts, the clock does not go back
        // to the same millisecond with the same sequence (a clash only adds a suffix).
        while self.tree.contains_key(&key).map_err(db_error)? {
            key.push(0);
        }
        let value = serde_json::to_vec(entry).map_err(db_error)?;
        self.tree.insert(key, value).map_err(db_error)?;
        Ok(())
    }

    fn read(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), GovernanceError> {
        let mut out = Vec::new();
        for item in self.tree.range(from_ms.to_be_bytes()..to_ms.to_be_bytes()) {
            let (_, v) = item.map_err(db_error)?;
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(serde_json::from_slice(&v).map_err(db_error)?);
        }
        Ok((out, false))
    }
}
