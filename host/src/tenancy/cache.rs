//! An in-memory cache of token records, so that authenticating a request costs a hash map
//! lookup and one sha256 instead of a database read and a JSON decode. Revoking a token or
//! deleting a tenant invalidates its entries in the same process at once.

use crate::registry::{ModelRegistry, RegistryError, TokenRecord};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Token records by id, read through to the registry.
#[derive(Default)]
pub struct TokenCache {
    records: RwLock<HashMap<String, Arc<TokenRecord>>>,
}

impl TokenCache {
    /// The record of `token_id`, from memory or the registry.
    pub fn get(
        &self,
        registry: &dyn ModelRegistry,
        token_id: &str,
    ) -> Result<Arc<TokenRecord>, RegistryError> {
        if let Some(record) = self
            .records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token_id)
        {
            return Ok(record.clone());
        }
        let record = Arc::new(registry.token(token_id)?);
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token_id.to_string(), record.clone());
        Ok(record)
    }

    /// Forgets one token (after a revocation).
    pub fn forget(&self, token_id: &str) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token_id);
    }

    /// Forgets every token of `tenant` (after the tenant is deleted).
    pub fn forget_tenant(&self, tenant: &str) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, record| record.tenant != tenant);
    }
}
