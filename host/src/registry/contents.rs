//! What each tenant owns (token ids, model versions, endpoint names), kept in the
//! `tenant_contents` tree under the tenant's name and changed in the same sled transaction as
//! the records themselves.
//!
//! Why an index: a sled transaction can read and write keys but not scan a tree, and deleting
//! a tenant must, in one transaction, see that it has no models or endpoints left and remove
//! every one of its tokens, while issuing a token, publishing a version or creating an
//! endpoint must see, in the transaction that writes, that the tenant still exists. With the
//! index every one of those is a handful of key reads and writes, so sled serialises them:
//! no write lands in a tenant that a concurrent delete has removed, and no delete removes a
//! tenant that a concurrent write has just filled.
//!
//! Releases before this one kept no index, so it is rebuilt from the records each time the
//! database is opened, before any request is served; that also repairs it after an older
//! release has used the database. Records that an older release's racy tenant deletion left
//! behind are settled at the same time (see [`rebuild`]).

use super::records::{now_secs, TenantRecord};
use super::RegistryError;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::collections::{BTreeMap, BTreeSet};

/// An error that aborts a transaction.
pub(super) type TxError = ConflictableTransactionError<RegistryError>;

/// Aborts a transaction with `e`.
pub(super) fn abort(e: RegistryError) -> TxError {
    ConflictableTransactionError::Abort(e)
}

/// What one tenant owns.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TenantContents {
    /// Ids of its tokens.
    #[serde(default)]
    pub tokens: BTreeSet<String>,
    /// Its model names, each with its stored versions.
    #[serde(default)]
    pub models: BTreeMap<String, BTreeSet<u64>>,
    /// Names of its serving endpoints.
    #[serde(default)]
    pub endpoints: BTreeSet<String>,
}

impl TenantContents {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.models.is_empty() && self.endpoints.is_empty()
    }

    /// Adds model version `name`/`version`.
    pub fn add_version(&mut self, name: &str, version: u64) {
        self.models
            .entry(name.to_string())
            .or_default()
            .insert(version);
    }

    /// Removes model version `name`/`version` (and the model once it has none left).
    pub fn remove_version(&mut self, name: &str, version: u64) {
        if let Some(versions) = self.models.get_mut(name) {
            versions.remove(&version);
            if versions.is_empty() {
                self.models.remove(name);
            }
        }
    }

    /// Why tenant `tenant` may not be deleted yet, if it may not: it still has models or
    /// endpoints (deleting them is the owner's decision, never a side effect).
    pub fn deletion_refused(&self, tenant: &str) -> Option<RegistryError> {
        let versions: usize = self.models.values().map(BTreeSet::len).sum();
        if versions == 0 && self.endpoints.is_empty() {
            return None;
        }
        let mut held = Vec::new();
        if versions > 0 {
            let names: Vec<&str> = self.models.keys().map(String::as_str).collect();
            held.push(format!(
                "{versions} model version(s) (of `{}`)",
                names.join("`, `")
            ));
        }
        if !self.endpoints.is_empty() {
            let names: Vec<&str> = self.endpoints.iter().map(String::as_str).collect();
            held.push(format!("serving endpoint(s) `{}`", names.join("`, `")));
        }
        Some(RegistryError::Conflict(format!(
            "tenant `{tenant}` still has {}; delete them with one of the tenant's CAN_MANAGE \
             tokens first, then delete the tenant",
            held.join(" and ")
        )))
    }
}

/// Fails the transaction with "tenant does not exist" unless `tenant` exists.
pub(super) fn require_tenant(tenants: &TransactionalTree, tenant: &str) -> Result<(), TxError> {
    match tenants.get(tenant)? {
        Some(_) => Ok(()),
        None => Err(abort(RegistryError::NotFound {
            kind: "tenant",
            name: tenant.to_string(),
        })),
    }
}

/// What `tenant` owns, read inside a transaction.
pub(super) fn read(index: &TransactionalTree, tenant: &str) -> Result<TenantContents, TxError> {
    match index.get(tenant)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| abort(RegistryError::Storage(format!("tenant index: {e}")))),
        None => Ok(TenantContents::default()),
    }
}

/// Stores what `tenant` owns inside a transaction (nothing is stored for nothing).
pub(super) fn write(
    index: &TransactionalTree,
    tenant: &str,
    contents: &TenantContents,
) -> Result<(), TxError> {
    if contents.is_empty() {
        index.remove(tenant)?;
    } else {
        let bytes = serde_json::to_vec(contents)
            .map_err(|e| abort(RegistryError::Storage(format!("tenant index: {e}"))))?;
        index.insert(tenant, bytes)?;
    }
    Ok(())
}

/// Changes what `tenant` owns inside a transaction.
pub(super) fn update(
    index: &TransactionalTree,
    tenant: &str,
    change: impl FnOnce(&mut TenantContents),
) -> Result<(), TxError> {
    let mut contents = read(index, tenant)?;
    change(&mut contents);
    write(index, tenant, &contents)
}

/// The owner fields of a stored token, image or endpoint record (read leniently, so that a
/// record of any release is indexed).
#[derive(Deserialize)]
struct Owner {
    tenant: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: u64,
}

/// The trees the index is built from.
pub(super) struct Trees<'a> {
    pub tenants: &'a sled::Tree,
    pub tokens: &'a sled::Tree,
    pub images: &'a sled::Tree,
    pub endpoints: &'a sled::Tree,
    pub index: &'a sled::Tree,
}

fn owners(tree: &sled::Tree, kind: &str) -> Result<Vec<(sled::IVec, Owner)>, RegistryError> {
    let mut found = Vec::new();
    for item in tree.iter() {
        let (key, value) = item.map_err(|e| RegistryError::Storage(e.to_string()))?;
        match serde_json::from_slice::<Owner>(&value) {
            Ok(owner) => found.push((key, owner)),
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(&key),
                "skipping an unreadable {kind} record while indexing tenants: {e}"
            ),
        }
    }
    Ok(found)
}

/// Rebuilds the index from the records; call before the registry serves anything.
///
/// A tenant deletion of an older release could leave records of a tenant that no longer
/// exists. Its tokens are revoked (the deletion meant to remove them). Its models and
/// endpoints are not handed to whoever creates a tenant of that name next, nor silently
/// deleted: the tenant is listed again, so that the admin sees them and can delete them (or
/// the tenant) deliberately.
pub(super) fn rebuild(trees: &Trees<'_>) -> Result<(), RegistryError> {
    let storage = |e: sled::Error| RegistryError::Storage(e.to_string());
    let mut index: BTreeMap<String, TenantContents> = BTreeMap::new();
    let mut orphan_tokens = Vec::new();
    for (key, owner) in owners(trees.tokens, "token")? {
        let id = String::from_utf8_lossy(&key).into_owned();
        if trees.tenants.contains_key(&owner.tenant).map_err(storage)? {
            index.entry(owner.tenant).or_default().tokens.insert(id);
        } else {
            orphan_tokens.push((key, owner.tenant));
        }
    }
    for (_, owner) in owners(trees.images, "model image")? {
        index
            .entry(owner.tenant)
            .or_default()
            .add_version(&owner.name, owner.version);
    }
    for (_, owner) in owners(trees.endpoints, "serving endpoint")? {
        index
            .entry(owner.tenant)
            .or_default()
            .endpoints
            .insert(owner.name);
    }
    for (key, tenant) in orphan_tokens {
        tracing::warn!(
            token_id = %String::from_utf8_lossy(&key),
            tenant,
            "revoking a token of a deleted tenant"
        );
        trees.tokens.remove(key).map_err(storage)?;
    }
    for tenant in index.keys() {
        if !trees.tenants.contains_key(tenant).map_err(storage)? {
            tracing::warn!(
                tenant,
                "a deleted tenant still has models or endpoints; listing it again so that \
                 the admin can delete them"
            );
            let record = TenantRecord {
                name: tenant.clone(),
                created_at: now_secs(),
            };
            let bytes =
                serde_json::to_vec(&record).map_err(|e| RegistryError::Storage(e.to_string()))?;
            trees
                .tenants
                .insert(tenant.as_bytes(), bytes)
                .map_err(storage)?;
        }
    }
    trees.index.clear().map_err(storage)?;
    for (tenant, contents) in &index {
        let bytes =
            serde_json::to_vec(contents).map_err(|e| RegistryError::Storage(e.to_string()))?;
        trees
            .index
            .insert(tenant.as_bytes(), bytes)
            .map_err(storage)?;
    }
    Ok(())
}
