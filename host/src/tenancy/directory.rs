//! The tenancy service: tenants, tokens and the admin credential over their stores, with
//! the token cache kept in step. Authentication (a presented bearer string to a
//! [`Principal`]) happens here; what a principal may do is decided by the callers with
//! [`TenantGrant`]'s rules. `api/` reaches tenant and token records only through this.

use super::admin_cache::AdminCache;
use super::cache::TokenCache;
use super::tokens::{hash_secret, new_salt, secret_matches, IssuedToken, TokenString};
use super::{Principal, TenantGrant};
use crate::registry::{
    unix_millis, Permission, RegistryError, TenantRecord, TenantStore, TokenRecord, TokenStore,
};
use std::sync::Arc;
use thiserror::Error;

/// Why a presented credential does not authenticate.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Unknown, revoked or wrong.
    #[error("invalid or revoked token")]
    Invalid,
    /// A tenant token past its lifetime.
    #[error("token expired; ask your tenant's manager for a new one")]
    Expired,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] RegistryError),
}

/// A token to issue (checked by the caller: who may issue what).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Its tenant (must exist).
    pub tenant: String,
    /// Its level.
    pub permission: Permission,
    /// Resource names it covers (`*` = all).
    pub resources: Vec<String>,
    /// When it was made (Unix milliseconds).
    pub created_at_ms: u64,
    /// When it expires, if ever.
    pub expires_at_ms: Option<u64>,
    /// Free text.
    pub comment: Option<String>,
    /// Who issued it (a token id, or `admin`).
    pub created_by: String,
}

/// Tenants, tokens and the admin credential.
pub struct Directory {
    tenants: Arc<dyn TenantStore>,
    tokens: Arc<dyn TokenStore>,
    cache: TokenCache,
    admin: AdminCache,
}

impl Directory {
    /// A directory over these stores.
    pub fn new(tenants: Arc<dyn TenantStore>, tokens: Arc<dyn TokenStore>) -> Self {
        Self {
            tenants,
            tokens,
            cache: TokenCache::default(),
            admin: AdminCache::default(),
        }
    }

    /// The principal `presented` (a bearer token's text) stands for.
    pub fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        if let Some(token) = TokenString::parse(presented) {
            let record = match self.cache.get(self.tokens.as_ref(), &token.token_id) {
                Ok(record) => record,
                Err(RegistryError::NotFound { .. }) => return Err(AuthError::Invalid),
                Err(e) => return Err(e.into()),
            };
            if !token.matches(&record.salt, &record.hash) {
                return Err(AuthError::Invalid);
            }
            if record.expires_at_ms.is_some_and(|t| t <= unix_millis()) {
                return Err(AuthError::Expired);
            }
            return Ok(Principal::Tenant(TenantGrant {
                tenant: record.tenant.clone(),
                token_id: record.token_id.clone(),
                permission: record.permission,
                resources: record.resources.clone(),
                expires_at_ms: record.expires_at_ms,
            }));
        }
        match self.admin.get(self.tokens.as_ref())?.as_ref() {
            Some((salt, hash)) if secret_matches(presented, salt, hash) => Ok(Principal::Admin),
            _ => Err(AuthError::Invalid),
        }
    }

    /// At start-up: stores `token` as the admin credential (salted hash), or keeps the
    /// stored one when none is given. Returns whether an admin credential exists now and
    /// whether it was (re)set.
    pub fn bootstrap_admin(&self, token: Option<&str>) -> Result<AdminBootstrap, RegistryError> {
        let stored = self.tokens.admin_credential()?;
        Ok(match (token, stored) {
            (Some(token), Some((salt, hash))) if secret_matches(token, &salt, &hash) => {
                AdminBootstrap::Kept
            }
            (Some(token), _) => {
                let salt = new_salt();
                self.tokens
                    .set_admin_credential(&salt, &hash_secret(&salt, token))?;
                self.admin.forget();
                AdminBootstrap::Set
            }
            (None, Some(_)) => AdminBootstrap::Kept,
            (None, None) => AdminBootstrap::Missing,
        })
    }

    /// Creates a tenant.
    pub fn create_tenant(&self, name: &str) -> Result<TenantRecord, RegistryError> {
        self.tenants.create_tenant(name)
    }

    /// One tenant.
    pub fn tenant(&self, name: &str) -> Result<TenantRecord, RegistryError> {
        self.tenants.tenant(name)
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        self.tenants.tenants()
    }

    /// Deletes a tenant and its tokens (refused while it owns models or endpoints); its
    /// tokens stop working at once.
    pub fn delete_tenant(&self, name: &str) -> Result<(), RegistryError> {
        self.tenants.delete_tenant(name)?;
        self.cache.forget_tenant(name);
        Ok(())
    }

    /// Issues a token: returns the token text (shown once) and its record.
    pub fn issue_token(&self, new: NewToken) -> Result<(String, TokenRecord), RegistryError> {
        self.tenants.tenant(&new.tenant)?;
        let issued = IssuedToken::generate();
        let record = TokenRecord {
            token_id: issued.token_id,
            tenant: new.tenant,
            salt: issued.salt,
            hash: issued.hash,
            permission: new.permission,
            resources: new.resources,
            created_at_ms: new.created_at_ms,
            expires_at_ms: new.expires_at_ms,
            comment: new.comment,
            created_by: new.created_by,
        };
        self.tokens.put_token(&record)?;
        // Its id may have been looked up (and found unknown) before.
        self.cache.forget(&record.token_id);
        Ok((issued.token, record))
    }

    /// Tokens of one tenant, or all.
    pub fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>, RegistryError> {
        self.tokens.tokens(tenant)
    }

    /// One token.
    pub fn token(&self, token_id: &str) -> Result<TokenRecord, RegistryError> {
        self.tokens.token(token_id)
    }

    /// Revokes a token; it stops working at once.
    pub fn revoke_token(&self, token_id: &str) -> Result<(), RegistryError> {
        self.tokens.delete_token(token_id)?;
        self.cache.forget(token_id);
        Ok(())
    }

    /// Drops the cached record of a token another node issued or revoked (cluster mode).
    pub fn forget_cached_token(&self, token_id: &str) {
        self.cache.forget(token_id);
    }

    /// Drops the cached tokens of a tenant another node created or deleted.
    pub fn forget_cached_tenant(&self, tenant: &str) {
        self.cache.forget_tenant(tenant);
    }

    /// Drops the cached admin credential (another node replaced it).
    pub fn forget_cached_admin(&self) {
        self.admin.forget();
    }

    /// Drops every cached token and the admin credential (the node could not tell what
    /// changed).
    pub fn forget_all_cached(&self) {
        self.cache.forget_all();
        self.admin.forget();
    }
}

/// What [`Directory::bootstrap_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminBootstrap {
    /// The stored credential stays.
    Kept,
    /// The given token is the credential now.
    Set,
    /// No token given and none stored.
    Missing,
}
