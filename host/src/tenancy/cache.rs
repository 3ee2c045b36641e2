//! An in-memory cache of token records, so that authenticating a request costs a hash map
//! lookup and one sha256 instead of a database read and a JSON decode. Revoking a token or
//! deleting a tenant invalidates its entries in the same process at once.
//!
//! Token ids the registry does not know are cached too (at most [`MAX_MISSING`], the set
//! started afresh when full), so that a flood of requests with a bogus token costs one
//! registry read per distinct id, not one per request; issuing a token forgets its id (in
//! cluster mode, every node learns of the issue from the change stream).
//!
//! The registry read of a missing entry happens outside the cache's lock, so a revocation
//! can complete between that read and the insert of what it returned. Every invalidation
//! therefore runs after the registry write and counts up an epoch; a read inserts its record
//! only if no invalidation happened since before it read the registry. A revoked token is
//! thus never stored, whatever the interleaving (the one request whose read raced with the
//! revocation is answered as if it had come a moment earlier, like any request already
//! running when a token is revoked).

use crate::registry::{RegistryError, TokenRecord, TokenStore};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Most unknown token ids remembered (about 100 bytes each).
pub const MAX_MISSING: usize = 100_000;

/// Token records by id, read through to the registry.
#[derive(Default)]
pub struct TokenCache {
    state: RwLock<CacheState>,
}

#[derive(Default)]
struct CacheState {
    records: HashMap<String, Arc<TokenRecord>>,
    /// Ids the registry had no token for.
    missing: HashSet<String>,
    /// How many invalidations there have been.
    epoch: u64,
}

impl TokenCache {
    fn read(&self) -> RwLockReadGuard<'_, CacheState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, CacheState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of `token_id`, from memory or the registry.
    pub fn get(
        &self,
        store: &dyn TokenStore,
        token_id: &str,
    ) -> Result<Arc<TokenRecord>, RegistryError> {
        self.get_with(token_id, || store.token(token_id))
    }

    /// The record of `token_id`, from memory or `fetch`.
    fn get_with(
        &self,
        token_id: &str,
        fetch: impl FnOnce() -> Result<TokenRecord, RegistryError>,
    ) -> Result<Arc<TokenRecord>, RegistryError> {
        let epoch = {
            let state = self.read();
            if let Some(record) = state.records.get(token_id) {
                return Ok(record.clone());
            }
            if state.missing.contains(token_id) {
                return Err(missing(token_id));
            }
            state.epoch
        };
        let record = match fetch() {
            Ok(record) => Arc::new(record),
            Err(e @ RegistryError::NotFound { .. }) => {
                let mut state = self.write();
                if state.epoch == epoch {
                    if state.missing.len() >= MAX_MISSING {
                        state.missing.clear();
                    }
                    state.missing.insert(token_id.to_string());
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut state = self.write();
        if state.epoch == epoch {
            state.records.insert(token_id.to_string(), record.clone());
        }
        Ok(record)
    }

    /// Forgets one token; call after the revocation is written to the registry.
    pub fn forget(&self, token_id: &str) {
        let mut state = self.write();
        state.epoch += 1;
        state.records.remove(token_id);
        state.missing.remove(token_id);
    }

    /// Forgets every token (another node changed what this one cannot tell).
    pub fn forget_all(&self) {
        let mut state = self.write();
        state.epoch += 1;
        state.records.clear();
        state.missing.clear();
    }

    /// Forgets every token of `tenant`; call after the tenant's deletion is written to the
    /// registry.
    pub fn forget_tenant(&self, tenant: &str) {
        let mut state = self.write();
        state.epoch += 1;
        state.records.retain(|_, record| record.tenant != tenant);
    }
}

fn missing(token_id: &str) -> RegistryError {
    RegistryError::NotFound {
        kind: "token",
        name: token_id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::Permission;

    fn record(token_id: &str) -> TokenRecord {
        TokenRecord {
            token_id: token_id.into(),
            tenant: "acme".into(),
            salt: "00".into(),
            hash: "11".into(),
            permission: Permission::CanManage,
            resources: vec!["*".into()],
            created_at_ms: 1,
            expires_at_ms: None,
            comment: None,
            created_by: "admin".into(),
        }
    }

    fn gone() -> Result<TokenRecord, RegistryError> {
        Err(RegistryError::NotFound {
            kind: "token",
            name: "t1".into(),
        })
    }

    #[test]
    fn a_token_revoked_between_the_read_and_the_insert_is_not_cached() {
        let cache = TokenCache::default();
        // The registry read returns the record; before the cache stores it, the revocation
        // removes it from the registry and tells the cache.
        let read = cache.get_with("t1", || {
            let stale = record("t1");
            cache.forget("t1");
            Ok(stale)
        });
        assert!(read.is_ok());
        assert!(
            matches!(
                cache.get_with("t1", gone),
                Err(RegistryError::NotFound { .. })
            ),
            "the revoked token must be looked up again, and found gone"
        );
    }

    #[test]
    fn a_token_of_a_tenant_deleted_between_the_read_and_the_insert_is_not_cached() {
        let cache = TokenCache::default();
        let read = cache.get_with("t1", || {
            let stale = record("t1");
            cache.forget_tenant("acme");
            Ok(stale)
        });
        assert!(read.is_ok());
        assert!(matches!(
            cache.get_with("t1", gone),
            Err(RegistryError::NotFound { .. })
        ));
    }

    #[test]
    fn an_unknown_token_is_read_once_until_a_token_of_that_id_is_issued() {
        let cache = TokenCache::default();
        let reads = std::cell::Cell::new(0);
        let counted = || {
            reads.set(reads.get() + 1);
            gone()
        };
        for _ in 0..5 {
            assert!(matches!(
                cache.get_with("t1", counted),
                Err(RegistryError::NotFound { .. })
            ));
        }
        assert_eq!(reads.get(), 1, "one registry read for five lookups");
        // Issued (here, or on another node: the change stream forgets it the same way).
        cache.forget("t1");
        assert_eq!(
            cache.get_with("t1", || Ok(record("t1"))).unwrap().token_id,
            "t1"
        );
        // An unknown id whose read raced with an invalidation is not remembered.
        let raced = cache.get_with("t2", || {
            cache.forget("t2");
            gone()
        });
        assert!(raced.is_err());
        assert_eq!(
            cache.get_with("t2", || Ok(record("t2"))).unwrap().token_id,
            "t2"
        );
        // Bounded: the set starts afresh when full.
        for i in 0..=MAX_MISSING {
            let _ = cache.get_with(&format!("x{i}"), gone);
        }
        assert!(cache.read().missing.len() <= MAX_MISSING);
    }

    #[test]
    fn a_token_read_without_a_revocation_is_cached() {
        let cache = TokenCache::default();
        cache.get_with("t1", || Ok(record("t1"))).unwrap();
        assert_eq!(cache.get_with("t1", gone).unwrap().token_id, "t1");
        cache.forget("t1");
        assert!(cache.get_with("t1", gone).is_err());
    }
}
