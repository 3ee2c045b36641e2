//! The admin credential (salt and hash) kept in memory, so that a bearer that is not a
//! tenant token (the admin's, or garbage) costs one sha256 instead of a registry read.
//! Replacing the credential forgets it here at once, and on the other nodes of a cluster
//! when their change stream brings the change (`Change::Admin`). As in the token cache, a
//! read that raced with a replacement is not kept (an epoch counts the invalidations).

use crate::registry::{RegistryError, TokenStore};
use std::sync::{Arc, RwLock};

/// The salt and hash of the admin credential, when there is one.
pub type AdminCredential = Option<(String, String)>;

/// The admin credential, read through to the registry.
#[derive(Default)]
pub struct AdminCache {
    state: RwLock<(Option<Arc<AdminCredential>>, u64)>,
}

impl AdminCache {
    /// The credential, from memory or the registry.
    pub fn get(&self, store: &dyn TokenStore) -> Result<Arc<AdminCredential>, RegistryError> {
        self.get_with(|| store.admin_credential())
    }

    fn get_with(
        &self,
        fetch: impl FnOnce() -> Result<AdminCredential, RegistryError>,
    ) -> Result<Arc<AdminCredential>, RegistryError> {
        let epoch = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            if let Some(known) = &state.0 {
                return Ok(known.clone());
            }
            state.1
        };
        let read = Arc::new(fetch()?);
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.1 == epoch {
            state.0 = Some(read.clone());
        }
        Ok(read)
    }

    /// Forgets the credential; call after it is replaced in the registry.
    pub fn forget(&self) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.0 = None;
        state.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_read_once_until_forgotten_and_a_racing_read_is_not_kept() {
        let cache = AdminCache::default();
        let reads = std::cell::Cell::new(0);
        let read = |value: &str| {
            reads.set(reads.get() + 1);
            Ok(Some(("salt".to_string(), value.to_string())))
        };
        for _ in 0..3 {
            assert_eq!(
                cache.get_with(|| read("h1")).unwrap().as_ref(),
                &Some(("salt".into(), "h1".into()))
            );
        }
        assert_eq!(reads.get(), 1);
        cache.forget();
        let raced = cache
            .get_with(|| {
                cache.forget();
                read("old")
            })
            .unwrap();
        assert_eq!(raced.as_ref(), &Some(("salt".into(), "old".into())));
        assert_eq!(
            cache.get_with(|| read("h2")).unwrap().as_ref(),
            &Some(("salt".into(), "h2".into())),
            "the raced read was not kept"
        );
        assert!(
            cache
                .get_with(|| Err(RegistryError::Storage("down".into())))
                .is_ok(),
            "kept values need no read"
        );
    }
}
