//! Metadata: tenants, tokens, model images and serving endpoints, one store trait per
//! record kind ([`TenantStore`], [`TokenStore`], [`ImageStore`], [`EndpointStore`]; all
//! four together are a [`ModelRegistry`]), kept in sled by [`SledRegistry`] (one node, the
//! default) or in PostgreSQL by [`PostgresRegistry`] (cluster mode: nodes share it and learn
//! each other's writes as [`Change`]s). Every acknowledged write is durable before the call
//! returns; changes touching several records are one transaction.

mod change;
mod contents;
mod endpoints;
mod permission;
pub mod postgres;
mod records;
mod sled_registry;

pub use change::Change;
pub use endpoints::{
    unix_millis, ConfigUpdate, EndpointConfig, EndpointRecord, EndpointState, EndpointTag,
    Readiness, Route, ServedEntity, TrafficConfig,
};
pub use permission::Permission;
pub use postgres::PostgresRegistry;
pub use records::{
    now_secs, ImageDraft, ImageFile, ImageRecord, Sharing, TenantRecord, TokenRecord,
};
pub use sled_registry::SledRegistry;

use crate::blobs::Digest;
use std::collections::HashSet;
use thiserror::Error;

/// A registry failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The thing does not exist (or is not visible to the caller).
    #[error("{kind} `{name}` does not exist")]
    NotFound {
        /// What kind of thing.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A thing of that name exists already.
    #[error("{kind} `{name}` already exists")]
    AlreadyExists {
        /// What kind of thing.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("metadata store error: {0}")]
    Storage(String),
    /// The database cannot be reached now (down, restarting, or every connection busy):
    /// worth retrying. The detail is for the log, not for callers.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
}

impl RegistryError {
    /// True when the store failed, false when the request asked for something absent,
    /// present or conflicting (what the API answers with a 4xx).
    pub fn is_server_side(&self) -> bool {
        match self {
            Self::NotFound { .. } | Self::AlreadyExists { .. } | Self::Conflict(_) => false,
            Self::Storage(_) | Self::Unavailable(_) => true,
        }
    }
}

/// Tenant records.
pub trait TenantStore: Send + Sync {
    /// Creates a tenant.
    fn create_tenant(&self, name: &str) -> Result<TenantRecord, RegistryError>;
    /// A tenant by name.
    fn tenant(&self, name: &str) -> Result<TenantRecord, RegistryError>;
    /// Every tenant.
    fn tenants(&self) -> Result<Vec<TenantRecord>, RegistryError>;
    /// Deletes a tenant and, in the same transaction, its tokens; refused (`Conflict`) while
    /// it has model images or serving endpoints.
    fn delete_tenant(&self, name: &str) -> Result<(), RegistryError>;
}

/// Token records and the admin credential.
pub trait TokenStore: Send + Sync {
    /// Stores a new token; `NotFound` (kind `tenant`) unless its tenant exists when it is
    /// written.
    fn put_token(&self, token: &TokenRecord) -> Result<(), RegistryError>;
    /// A token by id.
    fn token(&self, token_id: &str) -> Result<TokenRecord, RegistryError>;
    /// Tokens of one tenant, or all.
    fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>, RegistryError>;
    /// Deletes (revokes) a token.
    fn delete_token(&self, token_id: &str) -> Result<(), RegistryError>;

    /// Replaces the admin credential (salt, hash).
    fn set_admin_credential(&self, salt: &str, hash: &str) -> Result<(), RegistryError>;
    /// The admin credential, if bootstrapped.
    fn admin_credential(&self) -> Result<Option<(String, String)>, RegistryError>;
}

/// Model image records (the immutable versions of each model).
pub trait ImageStore: Send + Sync {
    /// Publishes an image as the model's next version; `NotFound` (kind `tenant`) unless its
    /// tenant exists when it is written (an upload can outlive its tenant).
    fn publish_image(&self, draft: ImageDraft) -> Result<ImageRecord, RegistryError>;
    /// One image version.
    fn image(&self, tenant: &str, name: &str, version: u64) -> Result<ImageRecord, RegistryError>;
    /// Every version of one model, oldest first.
    fn images(&self, tenant: &str, name: &str) -> Result<Vec<ImageRecord>, RegistryError>;
    /// Names of a tenant's models.
    fn models(&self, tenant: &str) -> Result<Vec<String>, RegistryError>;
    /// Deletes one image version and returns it.
    fn delete_image(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<ImageRecord, RegistryError>;
    /// Sets whether one image version is shared with other tenants (the one metadata
    /// change an image takes; its files never change) and returns the record.
    fn set_sharing(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
        sharing: Sharing,
    ) -> Result<ImageRecord, RegistryError>;
    /// Every blob some image still references.
    fn referenced_blobs(&self) -> Result<HashSet<Digest>, RegistryError>;
}

/// Serving-endpoint records.
pub trait EndpointStore: Send + Sync {
    /// Creates an endpoint; fails if the tenant has one of that name, and with `NotFound`
    /// (kind `tenant`) unless the tenant exists when it is written.
    fn create_endpoint(&self, endpoint: &EndpointRecord) -> Result<(), RegistryError>;
    /// Replaces an existing endpoint record (`NotFound` if it was deleted).
    fn put_endpoint(&self, endpoint: &EndpointRecord) -> Result<(), RegistryError>;
    /// Replaces `current` with `next` (same tenant and name) only while the stored record
    /// is still `current`: a compare-and-swap. `Conflict` when another writer (another
    /// node, in cluster mode) changed it since it was read, `NotFound` if it was deleted.
    fn swap_endpoint(
        &self,
        current: &EndpointRecord,
        next: &EndpointRecord,
    ) -> Result<(), RegistryError>;
    /// One endpoint.
    fn endpoint(&self, tenant: &str, name: &str) -> Result<EndpointRecord, RegistryError>;
    /// Endpoints of one tenant, or of all tenants.
    fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<EndpointRecord>, RegistryError>;
    /// Deletes an endpoint.
    fn delete_endpoint(&self, tenant: &str, name: &str) -> Result<(), RegistryError>;
}

/// The whole metadata store: every record kind. Each service takes only the store of
/// the records it owns (`Arc<dyn ImageStore>` and so on); a backend implements the four
/// traits (sled today; the cluster mode puts PostgreSQL behind the same traits).
pub trait ModelRegistry: TenantStore + TokenStore + ImageStore + EndpointStore {}

impl<T: TenantStore + TokenStore + ImageStore + EndpointStore> ModelRegistry for T {}
