//! Model versions shared across tenants. An owner marks a version shared
//! (`PATCH /api/2.0/models/{name}/versions/{v}` `{"shared": true}`); another tenant then
//! serves it from its own endpoint by naming it `owner/model` in `entity_name`. The
//! serving tenant's entity loads the owner's image, so both tenants' requests reach the
//! same loaded graphs, and a graph that batches gathers the requests of both (each
//! request still runs in its own sandbox and gets only its own rows back). A version that
//! is not shared is never loaded for another tenant, so identical files uploaded by two
//! tenants stay two images with two batchers: nobody learns through a batch's timing that
//! another tenant runs the same model.
//!
//! Who sees what: the serving tenant's requests, metrics, statistics, logs, usage and
//! inference table are its own endpoint's (see `observe`); the owner sees none of them,
//! and the serving tenant sees none of the owner's, nor the version's files or manifest.
//!
//! Unsharing takes effect at once, on every node of a cluster (each applies the change as
//! it follows the metadata: `recheck_shared`, and a followed config is checked again before
//! it is swapped in): every other tenant's endpoint serving the version stops serving (`state.ready` `NOT_READY`, `update_error` saying why) and cannot be created or
//! updated to serve it again; the owner's endpoints are untouched. A shared version that
//! another tenant's endpoint names cannot be deleted (409) until it is unshared.

use super::{lifecycle, EndpointManager, EntityRuntime, PrepareError, ServingError};
use crate::images::ImageService;
use crate::registry::{EndpointConfig, ImageRecord};
use std::sync::Arc;

/// The owner and model an `entity_name` names for `tenant`: `owner/model` is another
/// tenant's (or the tenant's own, spelt out) model; a bare name is the tenant's own.
pub fn owner_and_model<'a>(tenant: &'a str, entity_name: &'a str) -> (&'a str, &'a str) {
    match entity_name.split_once('/') {
        Some((owner, model)) => (owner, model),
        None => (tenant, entity_name),
    }
}

/// The record of `owner/model` version `version` when `tenant` may serve it: its own, or
/// another tenant's that is shared now (whose manifest, as the interface of what it
/// serves, the tenant may read: signature, limits). Otherwise the same "does not exist" as
/// for a version that does not exist (whether another tenant has a model is not told).
pub fn record_for(
    images: &ImageService,
    tenant: &str,
    entity_name: &str,
    version: u64,
) -> Result<ImageRecord, ServingError> {
    let (owner, model) = owner_and_model(tenant, entity_name);
    let not_shared = || ServingError::NotShared {
        model: entity_name.to_string(),
        version,
    };
    match images.version(owner, model, version) {
        Ok(record) if owner == tenant || record.is_shared() => Ok(record),
        Ok(_) => Err(not_shared()),
        Err(crate::registry::RegistryError::NotFound { .. }) if owner != tenant => {
            Err(not_shared())
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuses a config that names another tenant's model version that is not shared with
/// everyone (or does not exist), before it is stored.
pub fn check_config(
    images: &ImageService,
    tenant: &str,
    config: &EndpointConfig,
) -> Result<(), ServingError> {
    for entity in &config.served_entities {
        if !entity.entity_name.contains('/') {
            continue; // the tenant's own model: loading it says whether it exists
        }
        let version = entity.version().ok_or_else(|| {
            ServingError::InvalidConfig(format!(
                "entity_version `{}` is not a version number",
                entity.entity_version
            ))
        })?;
        record_for(images, tenant, &entity.entity_name, version)?;
    }
    Ok(())
}

/// Before an entity's image is loaded for `tenant`'s endpoint: the image it may load.
pub(super) fn check_load(
    images: &ImageService,
    tenant: &str,
    entity: &str,
    entity_name: &str,
    version: u64,
) -> Result<(), PrepareError> {
    if owner_and_model(tenant, entity_name).0 == tenant {
        return Ok(());
    }
    record_for(images, tenant, entity_name, version)
        .map(|_| ())
        .map_err(|_| PrepareError::NotShared {
            entity: entity.to_string(),
            model: entity_name.to_string(),
            version,
        })
}

/// Under the records lock, just before a prepared config is swapped in: every entity of
/// another tenant's version is still shared (an unshare may have run while it loaded).
pub(super) fn still_servable(
    images: &ImageService,
    tenant: &str,
    entities: &[Arc<EntityRuntime>],
) -> Result<(), PrepareError> {
    for entity in entities {
        check_load(images, tenant, &entity.name, &entity.model, entity.version)?;
    }
    Ok(())
}

impl EndpointManager {
    /// Marks `tenant`'s model version shared or not (`by`: `admin` or a token id). Unsharing
    /// stops, at once, every other tenant's endpoint that serves it.
    pub fn set_sharing(
        &self,
        tenant: &str,
        model: &str,
        version: u64,
        shared: bool,
        by: &str,
    ) -> Result<ImageRecord, ServingError> {
        let record = self
            .images
            .set_sharing(tenant, model, version, shared, by)?;
        if !shared {
            self.revoke_shared(tenant, model, version)?;
        }
        Ok(record)
    }

    /// Stops every other tenant's endpoint serving `owner/model@version` (just unshared):
    /// those live here, and (cluster mode) those whose active config names it but that
    /// this node does not serve; their records say why. The other nodes stop theirs when
    /// the change reaches them ([`EndpointManager::recheck_shared`]).
    fn revoke_shared(&self, owner: &str, model: &str, version: u64) -> Result<(), ServingError> {
        let reason = format!(
            "model `{owner}/{model}` version {version} is no longer shared by its owner; \
             update this endpoint's config to serve another model"
        );
        let full = format!("{owner}/{model}");
        {
            let _records = self.lock_records();
            let mut serving = self.live.serving_image(owner, model, version);
            for record in self.registry.endpoints(None)? {
                let key = (record.tenant.clone(), record.name.clone());
                if names_in_active(&record, &full, version) && !serving.contains(&key) {
                    serving.push(key);
                }
            }
            for (tenant, name) in serving {
                if tenant == owner {
                    continue;
                }
                self.live.remove(&tenant, &name);
                match self.registry.endpoint(&tenant, &name) {
                    Ok(mut record) => {
                        lifecycle::revoked(&mut record, &reason);
                        self.registry.put_endpoint(&record)?;
                    }
                    Err(crate::registry::RegistryError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(
                    tenant,
                    endpoint = name,
                    owner,
                    model,
                    version,
                    "stopped serving a model version its owner unshared"
                );
            }
        }
        self.release_unserved();
        Ok(())
    }

    /// Cluster mode: the sharing of `owner/model@version` changed (on any node). Every
    /// other tenant's endpoint live here that serves it and may no longer stops serving
    /// here at once; the node that took the change writes the records' state.
    pub fn recheck_shared(&self, owner: &str, model: &str, version: u64) {
        let mut stopped = false;
        {
            let _records = self.lock_records();
            for (tenant, name) in self.live.serving_image(owner, model, version) {
                if tenant == owner {
                    continue;
                }
                // Only a definite "not shared" stops it (a store failure keeps serving).
                let entity = format!("{owner}/{model}");
                if let Err(ServingError::NotShared { .. }) =
                    record_for(&self.images, &tenant, &entity, version)
                {
                    self.live.remove(&tenant, &name);
                    stopped = true;
                    tracing::info!(
                        tenant,
                        endpoint = name,
                        owner,
                        model,
                        version,
                        "stopped serving a model version its owner unshared (followed)"
                    );
                }
            }
        }
        if stopped {
            self.release_unserved();
        }
    }

    /// Whether `owner/model@version` is shared and some other tenant's endpoint names it
    /// (active or pending config): the owner may not delete it then.
    pub fn shared_and_served_by_others(
        &self,
        owner: &str,
        model: &str,
        version: u64,
    ) -> Result<bool, ServingError> {
        if !self.images.version(owner, model, version)?.is_shared() {
            return Ok(false);
        }
        let full = format!("{owner}/{model}");
        Ok(self
            .registry
            .endpoints(None)?
            .iter()
            .any(|e| e.tenant != owner && e.serves(&full, version)))
    }
}

/// Whether `record`'s active config serves `full` (`owner/model`) version `version`.
fn names_in_active(record: &crate::registry::EndpointRecord, full: &str, version: u64) -> bool {
    record.config.iter().any(|config| {
        config
            .served_entities
            .iter()
            .any(|e| e.entity_name == full && e.version() == Some(version))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_the_tenants_own_and_a_slash_names_the_owner() {
        assert_eq!(owner_and_model("globex", "mlp"), ("globex", "mlp"));
        assert_eq!(owner_and_model("globex", "acme/mlp"), ("acme", "mlp"));
    }
}
