//! [`ModelRegistry`] on sled: one tree per record kind, JSON values, flush after each write.

use super::endpoints::EndpointRecord;
use super::records::{now_secs, ImageDraft, ImageRecord, TenantRecord, TokenRecord};
use super::{ModelRegistry, RegistryError};
use crate::blobs::Digest;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
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

fn tx_error(e: TransactionError<RegistryError>) -> RegistryError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

impl SledRegistry {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let db = sled::Config::new().path(path).open().map_err(storage)?;
        let tree = |name: &str| db.open_tree(name).map_err(storage);
        Ok(Self {
            tenants: tree("tenants")?,
            tokens: tree("tokens")?,
            images: tree("images")?,
            next_version: tree("next_version")?,
            endpoints: tree("endpoints")?,
            meta: tree("meta")?,
            db,
        })
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

impl ModelRegistry for SledRegistry {
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
        self.tenant(name)?;
        if self.images.scan_prefix(format!("{name}/")).next().is_some() {
            return Err(RegistryError::Conflict(format!(
                "tenant `{name}` still has model images; delete them first"
            )));
        }
        let tokens: Vec<TokenRecord> = self.tokens(Some(name))?;
        (&self.tenants, &self.tokens)
            .transaction(|(tenants, token_tree)| {
                tenants.remove(name)?;
                for token in &tokens {
                    token_tree.remove(token.token_id.as_bytes())?;
                }
                Ok::<_, ConflictableTransactionError<RegistryError>>(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    fn put_token(&self, token: &TokenRecord) -> Result<(), RegistryError> {
        self.tokens
            .insert(token.token_id.as_bytes(), encode(token)?)
            .map_err(storage)?;
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
        if self.tokens.remove(token_id).map_err(storage)?.is_none() {
            return Err(RegistryError::NotFound {
                kind: "token",
                name: token_id.to_string(),
            });
        }
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

    fn publish_image(&self, draft: ImageDraft) -> Result<ImageRecord, RegistryError> {
        let counter_key = model_prefix(&draft.tenant, &draft.name);
        let record = (&self.images, &self.next_version)
            .transaction(|(images, counters)| {
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
                };
                let value = encode(&record).map_err(ConflictableTransactionError::Abort)?;
                images.insert(image_key(&draft.tenant, &draft.name, version), value)?;
                counters.insert(counter_key.as_slice(), &(version + 1).to_be_bytes())?;
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
        let record = self.image(tenant, name, version)?;
        self.images
            .remove(image_key(tenant, name, version))
            .map_err(storage)?;
        self.flush()?;
        Ok(record)
    }

    fn referenced_blobs(&self) -> Result<HashSet<Digest>, RegistryError> {
        let images: Vec<ImageRecord> = Self::scan(&self.images, b"")?;
        Ok(images.iter().flat_map(|i| i.blobs().cloned()).collect())
    }

    fn create_endpoint(&self, endpoint: &EndpointRecord) -> Result<(), RegistryError> {
        let key = format!("{}/{}", endpoint.tenant, endpoint.name);
        let inserted = self
            .endpoints
            .compare_and_swap(key, None as Option<&[u8]>, Some(encode(endpoint)?))
            .map_err(storage)?;
        if inserted.is_err() {
            return Err(RegistryError::AlreadyExists {
                kind: "serving endpoint",
                name: endpoint.name.clone(),
            });
        }
        self.flush()
    }

    fn put_endpoint(&self, endpoint: &EndpointRecord) -> Result<(), RegistryError> {
        let key = format!("{}/{}", endpoint.tenant, endpoint.name);
        self.endpoints
            .insert(key, encode(endpoint)?)
            .map_err(storage)?;
        self.flush()
    }

    fn endpoint(&self, tenant: &str, name: &str) -> Result<EndpointRecord, RegistryError> {
        match self
            .endpoints
            .get(format!("{tenant}/{name}"))
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
        if self
            .endpoints
            .remove(format!("{tenant}/{name}"))
            .map_err(storage)?
            .is_none()
        {
            return Err(RegistryError::NotFound {
                kind: "serving endpoint",
                name: name.to_string(),
            });
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ImageFile;

    fn draft(tenant: &str, name: &str) -> ImageDraft {
        ImageDraft {
            tenant: tenant.into(),
            name: name.into(),
            digest: Digest::of(name.as_bytes()),
            size_bytes: 10,
            manifest: "name = \"x\"".into(),
            files: vec![ImageFile {
                path: "h.wasm".into(),
                digest: Digest::of(b"h"),
                size_bytes: 1,
            }],
            created_by: "t1".into(),
        }
    }

    #[test]
    fn versions_count_up_per_model_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let reg = SledRegistry::open(dir.path()).unwrap();
            reg.create_tenant("acme").unwrap();
            assert!(matches!(
                reg.create_tenant("acme"),
                Err(RegistryError::AlreadyExists { .. })
            ));
            assert_eq!(reg.publish_image(draft("acme", "a")).unwrap().version, 1);
            assert_eq!(reg.publish_image(draft("acme", "a")).unwrap().version, 2);
            assert_eq!(reg.publish_image(draft("acme", "b")).unwrap().version, 1);
            reg.delete_image("acme", "a", 2).unwrap();
        }
        let reg = SledRegistry::open(dir.path()).unwrap();
        assert_eq!(reg.models("acme").unwrap(), vec!["a", "b"]);
        assert_eq!(
            reg.publish_image(draft("acme", "a")).unwrap().version,
            3,
            "deleted versions are never reused"
        );
        assert!(matches!(
            reg.delete_tenant("acme"),
            Err(RegistryError::Conflict(_))
        ));
        assert_eq!(reg.referenced_blobs().unwrap().len(), 3);
    }
}
