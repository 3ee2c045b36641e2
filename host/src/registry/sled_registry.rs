//! The record stores ([`TenantStore`], [`TokenStore`], [`ImageStore`], [`EndpointStore`]) on
//! sled: one tree per record kind, JSON values, flush after each write.
//! Every write into a tenant, and the tenant's deletion, is one sled transaction that also
//! reads and updates the tenant's index (see [`super::contents`]), so none of them can
//! interleave with another.

use super::contents::{self, abort, require_tenant, TxError};
use super::endpoints::EndpointRecord;
use super::records::{now_secs, ImageDraft, ImageRecord, Sharing, TenantRecord, TokenRecord};
use super::{EndpointStore, ImageStore, RegistryError, TenantStore, TokenStore};
use crate::blobs::Digest;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{TransactionError, Transactional};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

const ADMIN_KEY: &[u8] = b"admin_credential";

/// The sled-backed registry.
pub struct SledRegistry {
    db: sled::Db,
    tenants: sled::Tree,
    tokens: sled::Tree,
    images: sled::Tree,
    next_version: sled::Tree,
    endpoints: sled::Tree,
    /// What each tenant owns: [`super::contents`].
    contents: sled::Tree,
    meta: sled::Tree,
}

fn storage(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Storage(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(value).map_err(storage)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(storage)
}

fn model_prefix(tenant: &str, name: &str) -> Vec<u8> {
    format!("{tenant}/{name}/").into_bytes()
}

fn image_key(tenant: &str, name: &str, version: u64) -> Vec<u8> {
    let mut key = model_prefix(tenant, name);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn endpoint_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

fn tx_error(e: TransactionError<RegistryError>) -> RegistryError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

/// How long `open` waits for the database's file lock: sled's background flusher of a
/// handle just dropped (a restart in the same process, or a test reopening) may hold it
/// for a moment; another live server holds it for good and still fails.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_db(path: &Path) -> Result<sled::Db, RegistryError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(storage),
        }
    }
}

impl SledRegistry {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let db = open_db(path)?;
        let tree = |name: &str| db.open_tree(name).map_err(storage);
        let registry = Self {
            tenants: tree("tenants")?,
            tokens: tree("tokens")?,
            images: tree("images")?,
            next_version: tree("next_version")?,
            endpoints: tree("endpoints")?,
            contents: tree("tenant_contents")?,
            meta: tree("meta")?,
            db,
        };
        contents::rebuild(&contents::Trees {
            tenants: &registry.tenants,
            tokens: &registry.tokens,
            images: &registry.images,
            endpoints: &registry.endpoints,
            index: &registry.contents,
        })?;
        registry.flush()?;
        Ok(registry)
    }

    fn flush(&self) -> Result<(), RegistryError> {
        self.db.flush().map(|_| ()).map_err(storage)
    }

    fn scan<T: DeserializeOwned>(
        tree: &sled::Tree,
        prefix: &[u8],
    ) -> Result<Vec<T>, RegistryError> {
        tree.scan_prefix(prefix)
            .map(|item| item.map_err(storage).and_then(|(_, v)| decode(&v)))
            .collect()
    }
}

impl TenantStore for SledRegistry {
    fn create_tenant(&self, name: &str) -> Result<TenantRecord, RegistryError> {
        let record = TenantRecord {
            name: name.to_string(),
            created_at: now_secs(),
        };
        let inserted = self
            .tenants
            .compare_and_swap(name, None as Option<&[u8]>, Some(encode(&record)?))
            .map_err(storage)?;
        if inserted.is_err() {
            return Err(RegistryError::AlreadyExists {
                kind: "tenant",
                name: name.to_string(),
            });
        }
        self.flush()?;
        Ok(record)
    }

    fn tenant(&self, name: &str) -> Result<TenantRecord, RegistryError> {
        match self.tenants.get(name).map_err(storage)? {
            Some(bytes) => decode(&bytes),
            None => Err(RegistryError::NotFound {
                kind: "tenant",
                name: name.to_string(),
            }),
        }
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        Self::scan(&self.tenants, b"")
    }

    fn delete_tenant(&self, name: &str) -> Result<(), RegistryError> {
        (&self.tenants, &self.tokens, &self.contents)
            .transaction(|(tenants, tokens, index)| {
                require_tenant(tenants, name)?;
                let owned = contents::read(index, name)?;
                if let Some(refused) = owned.deletion_refused(name) {
                    return Err(abort(refused));
                }
                for token_id in &owned.tokens {
                    tokens.remove(token_id.as_bytes())?;
                }
                index.remove(name)?;
                tenants.remove(name)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.flush()
    }
}

impl TokenStore for SledRegistry {
    fn put_token(&self, token: &TokenRecord) -> Result<(), RegistryError> {
        let value = encode(token)?;
        (&self.tenants, &self.tokens, &self.contents)
            .transaction(|(tenants, tokens, index)| {
                require_tenant(tenants, &token.tenant)?;
                if tokens.get(token.token_id.as_bytes())?.is_some() {
                    return Err(abort(RegistryError::AlreadyExists {
                        kind: "token",
                        name: token.token_id.clone(),
                    }));
                }
                tokens.insert(token.token_id.as_bytes(), value.clone())?;
                contents::update(index, &token.tenant, |owned| {
                    owned.tokens.insert(token.token_id.clone());
                })
            })
            .map_err(tx_error)?;
        self.flush()
    }

    fn token(&self, token_id: &str) -> Result<TokenRecord, RegistryError> {
        match self.tokens.get(token_id).map_err(storage)? {
            Some(bytes) => decode(&bytes),
            None => Err(RegistryError::NotFound {
                kind: "token",
                name: token_id.to_string(),
            }),
        }
    }

    fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>, RegistryError> {
        let all: Vec<TokenRecord> = Self::scan(&self.tokens, b"")?;
        Ok(all
            .into_iter()
            .filter(|t| tenant.is_none_or(|name| t.tenant == name))
            .collect())
    }

    fn delete_token(&self, token_id: &str) -> Result<(), RegistryError> {
        (&self.tokens, &self.contents)
            .transaction(|(tokens, index)| {
                let Some(bytes) = tokens.remove(token_id.as_bytes())? else {
                    return Err(abort(RegistryError::NotFound {
                        kind: "token",
                        name: token_id.to_string(),
                    }));
                };
                // An unreadable record is still revoked; it was never in the index.
                match decode::<TokenRecord>(&bytes) {
                    Ok(record) => contents::update(index, &record.tenant, |owned| {
                        owned.tokens.remove(token_id);
                    }),
                    Err(_) => Ok(()),
                }
            })
            .map_err(tx_error)?;
        self.flush()
    }

    fn set_admin_credential(&self, salt: &str, hash: &str) -> Result<(), RegistryError> {
        self.meta
            .insert(ADMIN_KEY, encode(&(salt, hash))?)
            .map_err(storage)?;
        self.flush()
    }

    fn admin_credential(&self) -> Result<Option<(String, String)>, RegistryError> {
        self.meta
            .get(ADMIN_KEY)
            .map_err(storage)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }
}

impl ImageStore for SledRegistry {
    fn publish_image(&self, draft: ImageDraft) -> Result<ImageRecord, RegistryError> {
        let counter_key = model_prefix(&draft.tenant, &draft.name);
        let record = (
            &self.tenants,
            &self.images,
            &self.next_version,
            &self.contents,
        )
            .transaction(|(tenants, images, counters, index)| {
                // An upload authorised before its tenant was deleted must not publish into
                // the deleted (or a re-created) tenant.
                require_tenant(tenants, &draft.tenant)?;
                let version = match counters.get(&counter_key)? {
                    Some(bytes) => {
                        let mut raw = [0u8; 8];
                        if bytes.len() == 8 {
                            raw.copy_from_slice(&bytes);
                        }
                        u64::from_be_bytes(raw).max(1)
                    }
                    None => 1,
                };
                let record = ImageRecord {
                    tenant: draft.tenant.clone(),
                    name: draft.name.clone(),
                    version,
                    digest: draft.digest.clone(),
                    size_bytes: draft.size_bytes,
                    manifest: draft.manifest.clone(),
                    files: draft.files.clone(),
                    created_at: now_secs(),
                    created_by: draft.created_by.clone(),
                    sharing: None,
                };
                let value = encode(&record).map_err(abort)?;
                images.insert(image_key(&draft.tenant, &draft.name, version), value)?;
                counters.insert(counter_key.as_slice(), &(version + 1).to_be_bytes())?;
                contents::update(index, &draft.tenant, |owned| {
                    owned.add_version(&draft.name, version);
                })?;
                Ok(record)
            })
            .map_err(tx_error)?;
        self.flush()?;
        Ok(record)
    }

    fn image(&self, tenant: &str, name: &str, version: u64) -> Result<ImageRecord, RegistryError> {
        match self
            .images
            .get(image_key(tenant, name, version))
            .map_err(storage)?
        {
            Some(bytes) => decode(&bytes),
            None => Err(RegistryError::NotFound {
                kind: "model version",
                name: format!("{name}/{version}"),
            }),
        }
    }

    fn images(&self, tenant: &str, name: &str) -> Result<Vec<ImageRecord>, RegistryError> {
        Self::scan(&self.images, &model_prefix(tenant, name))
    }

    fn models(&self, tenant: &str) -> Result<Vec<String>, RegistryError> {
        let images: Vec<ImageRecord> = Self::scan(&self.images, format!("{tenant}/").as_bytes())?;
        let names: BTreeSet<String> = images.into_iter().map(|i| i.name).collect();
        Ok(names.into_iter().collect())
    }

    fn delete_image(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<ImageRecord, RegistryError> {
        let record = (&self.images, &self.contents)
            .transaction(|(images, index)| {
                let Some(bytes) = images.remove(image_key(tenant, name, version))? else {
                    return Err(abort(RegistryError::NotFound {
                        kind: "model version",
                        name: format!("{name}/{version}"),
                    }));
                };
                let record: ImageRecord = decode(&bytes).map_err(abort)?;
                contents::update(index, tenant, |owned| owned.remove_version(name, version))?;
                Ok(record)
            })
            .map_err(tx_error)?;
        self.flush()?;
        Ok(record)
    }

    fn set_sharing(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
        sharing: Sharing,
    ) -> Result<ImageRecord, RegistryError> {
        let key = image_key(tenant, name, version);
        let record = self
            .images
            .transaction(|images| {
                let Some(bytes) = images.get(&key)? else {
                    return Err(abort(RegistryError::NotFound {
                        kind: "model version",
                        name: format!("{name}/{version}"),
                    }));
                };
                let mut record: ImageRecord = decode(&bytes).map_err(abort)?;
                record.sharing = Some(sharing.clone());
                images.insert(key.as_slice(), encode(&record).map_err(abort)?)?;
                Ok::<_, TxError>(record)
            })
            .map_err(tx_error)?;
        self.flush()?;
        Ok(record)
    }

    fn referenced_blobs(&self) -> Result<HashSet<Digest>, RegistryError> {
        let images: Vec<ImageRecord> = Self::scan(&self.images, b"")?;
        Ok(images.iter().flat_map(|i| i.blobs().cloned()).collect())
    }
}

impl EndpointStore for SledRegistry {
    fn create_endpoint(&self, endpoint: &EndpointRecord) -> Result<(), RegistryError> {
        let key = endpoint_key(&endpoint.tenant, &endpoint.name);
        let value = encode(endpoint)?;
        (&self.tenants, &self.endpoints, &self.contents)
            .transaction(|(tenants, endpoints, index)| {
                require_tenant(tenants, &endpoint.tenant)?;
                if endpoints.get(key.as_bytes())?.is_some() {
                    return Err(abort(RegistryError::AlreadyExists {
                        kind: "serving endpoint",
                        name: endpoint.name.clone(),
                    }));
                }
                endpoints.insert(key.as_bytes(), value.clone())?;
                contents::update(index, &endpoint.tenant, |owned| {
                    owned.endpoints.insert(endpoint.name.clone());
                })
            })
            .map_err(tx_error)?;
        self.flush()
    }

    fn put_endpoint(&self, endpoint: &EndpointRecord) -> Result<(), RegistryError> {
        // Only over an existing record: a write that lost a race with the endpoint's
        // deletion must not bring it back outside the tenant's index.
        let key = endpoint_key(&endpoint.tenant, &endpoint.name);
        let value = encode(endpoint)?;
        self.endpoints
            .transaction(|endpoints| {
                if endpoints.get(key.as_bytes())?.is_none() {
                    return Err(abort(RegistryError::NotFound {
                        kind: "serving endpoint",
                        name: endpoint.name.clone(),
                    }));
                }
                endpoints.insert(key.as_bytes(), value.clone())?;
                Ok::<_, TxError>(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    fn swap_endpoint(
        &self,
        current: &EndpointRecord,
        next: &EndpointRecord,
    ) -> Result<(), RegistryError> {
        let key = endpoint_key(&next.tenant, &next.name);
        let value = encode(next)?;
        self.endpoints
            .transaction(|endpoints| {
                let Some(stored) = endpoints.get(key.as_bytes())? else {
                    return Err(abort(RegistryError::NotFound {
                        kind: "serving endpoint",
                        name: next.name.clone(),
                    }));
                };
                let stored: EndpointRecord = decode(&stored).map_err(abort)?;
                if &stored != current {
                    return Err(abort(RegistryError::Conflict(format!(
                        "serving endpoint `{}` was changed by another request meanwhile; \
                         read it again and retry",
                        next.name
                    ))));
                }
                endpoints.insert(key.as_bytes(), value.clone())?;
                Ok::<_, TxError>(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    fn endpoint(&self, tenant: &str, name: &str) -> Result<EndpointRecord, RegistryError> {
        match self
            .endpoints
            .get(endpoint_key(tenant, name))
            .map_err(storage)?
        {
            Some(bytes) => decode(&bytes),
            None => Err(RegistryError::NotFound {
                kind: "serving endpoint",
                name: name.to_string(),
            }),
        }
    }

    fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<EndpointRecord>, RegistryError> {
        let prefix = tenant.map(|t| format!("{t}/")).unwrap_or_default();
        Self::scan(&self.endpoints, prefix.as_bytes())
    }

    fn delete_endpoint(&self, tenant: &str, name: &str) -> Result<(), RegistryError> {
        let key = endpoint_key(tenant, name);
        (&self.endpoints, &self.contents)
            .transaction(|(endpoints, index)| {
                if endpoints.remove(key.as_bytes())?.is_none() {
                    return Err(abort(RegistryError::NotFound {
                        kind: "serving endpoint",
                        name: name.to_string(),
                    }));
                }
                contents::update(index, tenant, |owned| {
                    owned.endpoints.remove(name);
                })
            })
            .map_err(tx_error)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests;

/// Tenant deletion against the writes that race with it, called in the racing order.
#[cfg(test)]
mod tenant_deletion_tests;
