//! Serving endpoints: image versions behind a name, with a traffic split, per-entity limits
//! and zero-downtime updates. An update loads the new config's images in the background
//! (compile, graphs) and swaps it in atomically once everything is ready; requests in flight
//! finish on the config they started with; a failed update leaves the old config serving
//! and records why. Image versions no endpoint serves have their graphs unloaded.

mod config;
mod direct;
mod entity;
mod error;
mod executor;
mod follow;
mod lifecycle;
mod live;
mod load;
mod observe;
mod orphans;
mod owned;
mod placement;
pub mod query;
mod records;
mod routing;
pub mod shared;
mod spare;
mod swap;

pub use entity::EntityRuntime;
pub use error::{PrepareError, ServingError};
pub use executor::{GuestThreadSettings, GuestThreads};
pub use live::ActiveConfig;
pub use owned::{Ownership, Warmed, UNOWNED_IDLE_LIMIT};
pub use placement::InlinePolicy;
pub use records::EndpointMeta;
pub use routing::Split;

use crate::governance::Governance;
use crate::images::ImageService;
use crate::registry::{EndpointConfig, EndpointRecord, EndpointStore, RegistryError};
use crate::telemetry::metrics::EntityLabels;
use crate::telemetry::EntityLogs;
use std::sync::Arc;

/// Owns the live endpoints of all tenants.
pub struct EndpointManager {
    registry: Arc<dyn EndpointStore>,
    images: Arc<ImageService>,
    /// When requests may run inline on the async worker.
    inline: InlinePolicy,
    /// How many spare sandboxes the entities may hold.
    spares: Arc<spare::SpareBudget>,
    /// The threads guests run on, shared fairly between tenants.
    threads: Arc<GuestThreads>,
    /// What serves traffic now.
    live: live::LiveTable,
    /// Serialises every read-modify-write of an endpoint record (create, update, fallback,
    /// activation, failure, delete), so that none of them writes back a stale copy and two
    /// updates never both start.
    records: std::sync::Mutex<()>,
    /// Handler and build output of each entity, for its tenant.
    logs: Arc<EntityLogs>,
    /// Rate limits, quotas, usage and inference tables (the query pipeline's hooks).
    governance: Arc<Governance>,
    /// Cluster mode: which configs this node owns (and so keeps loaded).
    ownership: std::sync::OnceLock<Arc<dyn Ownership>>,
    /// Loads of followed or on-demand configs in flight (one per config).
    loads: owned::Loads,
    /// The config versions queries are placed by, as last read (cluster mode).
    routing_versions: owned::RoutingVersions,
    /// Cluster mode: this node's id, recorded on the updates it runs (`orphans`).
    node: std::sync::OnceLock<String>,
}

impl EndpointManager {
    fn lock_records(&self) -> std::sync::MutexGuard<'_, ()> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A manager over these stores.
    pub fn new(
        registry: Arc<dyn EndpointStore>,
        images: Arc<ImageService>,
        inline: InlinePolicy,
        threads: Arc<GuestThreads>,
        governance: Arc<Governance>,
    ) -> Arc<Self> {
        let slots = images.runtime().config().max_concurrent_instances;
        Arc::new(Self {
            threads,
            registry,
            spares: spare::SpareBudget::for_slots(usize::try_from(slots).unwrap_or(usize::MAX)),
            images,
            inline,
            live: live::LiveTable::default(),
            records: std::sync::Mutex::default(),
            logs: Arc::default(),
            governance,
            ownership: std::sync::OnceLock::new(),
            loads: owned::Loads::default(),
            routing_versions: owned::RoutingVersions::default(),
            node: std::sync::OnceLock::new(),
        })
    }

    /// The handler and build output kept per entity.
    pub fn logs(&self) -> &EntityLogs {
        &self.logs
    }

    /// At start-up: brings every stored endpoint's config back (in the background); an
    /// update that was running when the server stopped is marked failed.
    pub fn restore_all(self: &Arc<Self>) -> Result<(), ServingError> {
        let _records = self.lock_records();
        for mut record in self.registry.endpoints(None)? {
            lifecycle::restarted(&mut record);
            self.registry.put_endpoint(&record)?;
            if let Some(config) = record.config.clone() {
                let manager = self.clone();
                tokio::spawn(async move {
                    manager
                        .prepare(record.tenant, record.name, config, true)
                        .await
                });
            }
        }
        Ok(())
    }

    /// Creates an endpoint and starts preparing its config.
    pub fn create(
        self: &Arc<Self>,
        tenant: &str,
        creator: &str,
        name: &str,
        config: EndpointConfig,
        meta: EndpointMeta,
    ) -> Result<EndpointRecord, ServingError> {
        let (mut record, config) = lifecycle::created(
            lifecycle::NewEndpoint {
                tenant,
                creator,
                name,
            },
            config,
            meta,
        )?;
        shared::check_config(&self.images, tenant, &config)?;
        record.update_node = self.node.get().cloned();
        let _records = self.lock_records();
        self.registry.create_endpoint(&record)?;
        self.spawn_prepare(tenant, name, config);
        Ok(record)
    }

    /// Starts an update to `config`; refused while another update runs.
    pub fn update(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        config: EndpointConfig,
    ) -> Result<EndpointRecord, ServingError> {
        let config = lifecycle::checked(config)?;
        shared::check_config(&self.images, tenant, &config)?;
        let _records = self.lock_records();
        // A compare-and-swap: of two updates accepted at once (on two nodes), one wins and
        // the other finds it running.
        let (record, config) = self.change_record(tenant, name, |record| {
            let config = lifecycle::begin_update(record, config.clone())?;
            record.update_node = self.node.get().cloned();
            Ok(config)
        })?;
        self.spawn_prepare(tenant, name, config);
        Ok(record)
    }

    fn spawn_prepare(self: &Arc<Self>, tenant: &str, name: &str, config: EndpointConfig) {
        let manager = self.clone();
        let (tenant, name) = (tenant.to_string(), name.to_string());
        tokio::spawn(async move { manager.prepare(tenant, name, config, false).await });
    }

    /// Loads every entity of `config`, then swaps it in (or records the failure).
    async fn prepare(
        self: Arc<Self>,
        tenant: String,
        name: String,
        config: EndpointConfig,
        restoring: bool,
    ) {
        let loaded = self.load_config(&tenant, &name, &config).await;
        let outcome = match loaded {
            Ok(entities) => self.activate(&tenant, &name, &config, entities, restoring),
            Err(reason) => self.fail(&tenant, &name, &config, restoring, reason),
        };
        if let Err(e) = outcome {
            tracing::error!(
                tenant,
                endpoint = name,
                "cannot record the endpoint's state: {e}"
            );
        }
        self.release_unserved();
    }

    /// Swaps in a prepared config, unless the record has moved on meanwhile: an update
    /// activates only while its config is still the pending one, and a restore (at start-up)
    /// only while its config is still the stored active one (an update accepted during the
    /// restore may already have replaced it).
    fn activate(
        &self,
        tenant: &str,
        name: &str,
        config: &EndpointConfig,
        entities: Vec<Arc<EntityRuntime>>,
        restoring: bool,
    ) -> Result<(), RegistryError> {
        let _records = self.lock_records();
        // An owner may have unshared a version while it loaded (its revocation takes this
        // lock too, so either it sees this config serving or this sees it unshared).
        if let Err(reason) = shared::still_servable(&self.images, tenant, &entities) {
            tracing::warn!(tenant, endpoint = name, "endpoint update failed: {reason}");
            let mut attempt = 0;
            loop {
                attempt += 1;
                let record = match self.registry.endpoint(tenant, name) {
                    Ok(record) => record,
                    Err(RegistryError::NotFound { .. }) => return Ok(()), // deleted meanwhile
                    Err(e) => return Err(e),
                };
                if !lifecycle::still_wanted(&record, config, restoring) {
                    return Ok(());
                }
                let mut next = record.clone();
                lifecycle::failed(&mut next, restoring, &reason);
                match self.registry.swap_endpoint(&record, &next) {
                    Ok(()) => return Ok(()),
                    Err(RegistryError::Conflict(_)) if attempt < 8 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut entities = Some(entities);
        let mut previous = None;
        for attempt in 1.. {
            let record = match self.registry.endpoint(tenant, name) {
                Ok(record) => record,
                Err(RegistryError::NotFound { .. }) => return Ok(()), // deleted meanwhile
                Err(e) => return Err(e),
            };
            if !lifecycle::still_wanted(&record, config, restoring) {
                if let Some(previous) = previous.take() {
                    self.live.undo_swap(tenant, name, previous);
                }
                tracing::info!(
                    tenant,
                    endpoint = name,
                    config_version = config.config_version,
                    "a newer config replaced this one while it was prepared; dropping it"
                );
                return Ok(());
            }
            let mut next = record.clone();
            lifecycle::activated(&mut next, config, restoring);
            // Live first, so that whoever reads READY in the record finds the config
            // serving; if the record cannot be written, the old config comes back.
            if let Some(entities) = entities.take() {
                let active = follow::active_config(config, entities, record.fallback_enabled);
                previous = Some(self.live.swap_in(tenant, name, Arc::new(active)));
            } else if record.fallback_enabled != next.fallback_enabled {
                let enabled = next.fallback_enabled;
                self.live.modify(tenant, name, |a| a.with_fallback(enabled));
            }
            match self.registry.swap_endpoint(&record, &next) {
                Ok(()) => break,
                // Another node changed the record meanwhile (tags, fallback): decide again.
                Err(RegistryError::Conflict(_)) if attempt < 8 => {}
                Err(e) => {
                    if let Some(previous) = previous.take() {
                        self.live.undo_swap(tenant, name, previous);
                    }
                    return Err(e);
                }
            }
        }
        tracing::info!(
            tenant,
            endpoint = name,
            config_version = config.config_version,
            "endpoint config active"
        );
        Ok(())
    }

    /// Records that `config` could not be prepared, unless the record has moved on (see
    /// [`EndpointManager::activate`]). A failed restore leaves an update accepted meanwhile
    /// running.
    fn fail(
        &self,
        tenant: &str,
        name: &str,
        config: &EndpointConfig,
        restoring: bool,
        reason: PrepareError,
    ) -> Result<(), RegistryError> {
        let _records = self.lock_records();
        tracing::warn!(tenant, endpoint = name, "endpoint update failed: {reason}");
        let changed = self.change_record_if(tenant, name, |record| {
            if !lifecycle::still_wanted(record, config, restoring) {
                return Ok(None);
            }
            lifecycle::failed(record, restoring, &reason);
            Ok(Some(()))
        });
        match changed {
            Ok(_) => Ok(()),
            Err(ServingError::Registry(RegistryError::NotFound { .. })) => Ok(()),
            Err(ServingError::Registry(e)) => Err(e),
            Err(e) => Err(RegistryError::Storage(e.to_string())),
        }
    }

    /// Deletes an endpoint; requests in flight finish.
    pub fn delete(&self, tenant: &str, name: &str) -> Result<(), ServingError> {
        {
            let _records = self.lock_records();
            self.registry.delete_endpoint(tenant, name)?;
            self.live.remove(tenant, name);
        }
        self.logs.requests.forget_endpoint(tenant, name);
        self.logs.builds.forget_endpoint(tenant, name);
        self.release_unserved();
        Ok(())
    }

    /// The stored record.
    pub fn record(&self, tenant: &str, name: &str) -> Result<EndpointRecord, ServingError> {
        Ok(self.registry.endpoint(tenant, name)?)
    }

    /// The stored record, or `None` when the tenant has no endpoint of that name.
    pub fn find_record(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<EndpointRecord>, ServingError> {
        match self.registry.endpoint(tenant, name) {
            Ok(record) => Ok(Some(record)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every endpoint record of a tenant.
    pub fn records(&self, tenant: &str) -> Result<Vec<EndpointRecord>, ServingError> {
        Ok(self.registry.endpoints(Some(tenant))?)
    }

    /// The config serving traffic now.
    pub fn active(&self, tenant: &str, name: &str) -> Result<Arc<ActiveConfig>, ServingError> {
        if let Some(active) = self.live.get(tenant, name) {
            return Ok(active);
        }
        // Distinguish "no such endpoint" (404) from "not ready yet" (503).
        self.registry.endpoint(tenant, name)?;
        Err(ServingError::NotReady(name.to_string()))
    }

    /// Releases the spare sandboxes that have sat unused for [`spare::SPARE_IDLE_LIMIT`];
    /// returns how many.
    pub fn release_idle_spares(&self) -> usize {
        self.live
            .entities()
            .iter()
            .filter(|entity| entity.release_idle_spare(spare::SPARE_IDLE_LIMIT))
            .count()
    }

    /// The entity that serves direct queries of a model version (KServe V2 on a model
    /// name that no endpoint has), loading the version on first use. It has the
    /// manifest's limits and is released after [`direct::DIRECT_IDLE_LIMIT`] unused.
    pub async fn direct_entity(
        self: &Arc<Self>,
        tenant: &str,
        model: &str,
        version: u64,
    ) -> Result<Arc<EntityRuntime>, ServingError> {
        let key = (tenant.to_string(), model.to_string(), version);
        if let Some(entity) = self.live.direct.get(&key) {
            return Ok(entity);
        }
        let images = self.images.clone();
        let (t, m) = (tenant.to_string(), model.to_string());
        let image = tokio::task::spawn_blocking(move || images.load(&t, &m, version))
            .await
            .map_err(|e| {
                ServingError::Internal(format!("loading the model version failed: {e}"))
            })??;
        let config = crate::registry::ServedEntity::with_manifest_limits(
            format!("{model}-{version}"),
            model,
            &version.to_string(),
        );
        let observed = observe::Observed::direct(
            &EntityLabels {
                tenant,
                endpoint: "",
                entity: &config.name,
                model,
                version,
            },
            self.images.stats().model(tenant, model, version),
        );
        let entity = EntityRuntime::new(
            &config,
            version,
            image,
            self.inline,
            self.spares.clone(),
            self.threads.clone(),
            observed,
        );
        entity
            .fits_memory_budget()
            .map_err(|e| ServingError::InvalidConfig(e.to_string()))?;
        let entity = Arc::new(entity);
        let held = self.live.direct.insert(key.clone(), entity);
        // A delete of this version that ran while it loaded has already released what was
        // held; do not keep serving it.
        if let Err(e) = self.images.version(tenant, model, version) {
            self.live.direct.remove(&key);
            self.release_unserved();
            return Err(e.into());
        }
        // Inserting may have pushed the least recently used version out.
        self.release_unserved();
        Ok(held)
    }

    /// The latest version of `model` (what a query of the bare model name serves).
    pub fn latest_version(&self, tenant: &str, model: &str) -> Result<u64, ServingError> {
        self.images
            .versions(tenant, model)?
            .last()
            .map(|i| i.version)
            .ok_or_else(|| ServingError::NoSuchModel(model.to_string()))
    }

    /// Releases a directly queried version at once (it is being deleted).
    pub fn release_direct(&self, tenant: &str, model: &str, version: u64) {
        if self
            .live
            .direct
            .remove(&(tenant.to_string(), model.to_string(), version))
        {
            self.release_unserved();
        }
    }

    /// Releases the directly queried versions unused for [`direct::DIRECT_IDLE_LIMIT`];
    /// returns how many.
    pub fn release_idle_direct(&self) -> usize {
        let released = self.live.direct.release_idle(direct::DIRECT_IDLE_LIMIT);
        if released > 0 {
            self.release_unserved();
        }
        released
    }

    /// Runs [`EndpointManager::release_idle_spares`] and
    /// [`EndpointManager::release_idle_direct`] every [`spare::SPARE_SWEEP_INTERVAL`] for as
    /// long as the manager lives.
    pub fn sweep_idle(self: &Arc<Self>) {
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(spare::SPARE_SWEEP_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                let released = manager.release_idle_spares();
                if released > 0 {
                    tracing::debug!(released, "released idle spare sandboxes");
                }
                let released = manager.release_idle_direct();
                if released > 0 {
                    tracing::debug!(released, "released idle directly queried model versions");
                }
                manager.release_unowned_idle();
            }
        });
    }

    /// Whether some endpoint (active or pending config) serves this image version.
    pub fn serves_image(
        &self,
        tenant: &str,
        model: &str,
        version: u64,
    ) -> Result<Option<String>, ServingError> {
        Ok(self
            .registry
            .endpoints(Some(tenant))?
            .into_iter()
            .find(|e| e.serves(model, version))
            .map(|e| e.name))
    }

    /// Unloads image versions no live endpoint serves and no direct query holds.
    fn release_unserved(&self) {
        let served = self.live.served_versions();
        self.images.retain_only(&served);
    }
}

#[cfg(test)]
mod tests;
