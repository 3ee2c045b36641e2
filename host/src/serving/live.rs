//! The live table: what serves traffic right now. Each endpoint's active config (its
//! entities, loaded and ready, and its traffic split) and the model versions queried
//! directly. Reads are lock-free in effect (a read lock held for one map lookup); a swap
//! replaces an endpoint's whole config, so a request finishes on the config it started
//! with. Which image versions stay loaded follows from this table alone.

use super::direct::{DirectModels, VersionKey};
use super::entity::EntityRuntime;
use super::routing::Split;
use crate::registry::EndpointConfig;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The config an endpoint is serving right now.
pub struct ActiveConfig {
    /// Its revision.
    pub config_version: u64,
    /// The config as stored (what a node following another's changes compares).
    pub config: Arc<EndpointConfig>,
    /// Served entities, in config order.
    pub entities: Vec<Arc<EntityRuntime>>,
    /// Traffic split over `entities`.
    pub split: Split,
    /// Retry 5xx failures once on another entity.
    pub fallback: bool,
    /// When a query last used it ([`super::placement::now_millis`]); kept in cluster mode
    /// only, where a config this node does not own is released once idle.
    pub last_used_ms: Arc<AtomicU64>,
}

impl ActiveConfig {
    /// The entity called `name`.
    pub fn entity(&self, name: &str) -> Option<&Arc<EntityRuntime>> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// The same entities and split with fallback on or off.
    pub fn with_fallback(&self, fallback: bool) -> Self {
        Self {
            config_version: self.config_version,
            config: self.config.clone(),
            entities: self.entities.clone(),
            split: self.split.clone(),
            fallback,
            last_used_ms: self.last_used_ms.clone(),
        }
    }
}

/// (tenant, endpoint name).
pub(super) type EndpointKey = (String, String);

fn key(tenant: &str, name: &str) -> EndpointKey {
    (tenant.to_string(), name.to_string())
}

/// Active configs by endpoint, and directly queried model versions.
#[derive(Default)]
pub struct LiveTable {
    endpoints: RwLock<HashMap<EndpointKey, Arc<ActiveConfig>>>,
    /// Model versions queried directly, outside any endpoint.
    pub direct: DirectModels,
}

impl LiveTable {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<EndpointKey, Arc<ActiveConfig>>> {
        self.endpoints.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<EndpointKey, Arc<ActiveConfig>>> {
        self.endpoints.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint's active config, if one serves.
    pub fn get(&self, tenant: &str, name: &str) -> Option<Arc<ActiveConfig>> {
        self.read().get(&key(tenant, name)).cloned()
    }

    /// Makes `active` the endpoint's config; returns the one it replaces.
    pub fn swap_in(
        &self,
        tenant: &str,
        name: &str,
        active: Arc<ActiveConfig>,
    ) -> Option<Arc<ActiveConfig>> {
        self.write().insert(key(tenant, name), active)
    }

    /// Puts back what [`LiveTable::swap_in`] replaced (the swap could not be recorded).
    pub fn undo_swap(&self, tenant: &str, name: &str, previous: Option<Arc<ActiveConfig>>) {
        let mut endpoints = self.write();
        match previous {
            Some(previous) => endpoints.insert(key(tenant, name), previous),
            None => endpoints.remove(&key(tenant, name)),
        };
    }

    /// Replaces the endpoint's active config, if it has one, with `change(config)`.
    pub fn modify(
        &self,
        tenant: &str,
        name: &str,
        change: impl FnOnce(&ActiveConfig) -> ActiveConfig,
    ) {
        let mut endpoints = self.write();
        if let Some(active) = endpoints.get(&key(tenant, name)).cloned() {
            endpoints.insert(key(tenant, name), Arc::new(change(&active)));
        }
    }

    /// Stops serving an endpoint (requests in flight finish on their copy).
    pub fn remove(&self, tenant: &str, name: &str) {
        self.write().remove(&key(tenant, name));
    }

    /// Stops serving an endpoint if `active` is still its config (not replaced meanwhile).
    pub fn remove_if_same(&self, tenant: &str, name: &str, active: &Arc<ActiveConfig>) -> bool {
        let mut endpoints = self.write();
        let same = endpoints
            .get(&key(tenant, name))
            .is_some_and(|now| Arc::ptr_eq(now, active));
        if same {
            endpoints.remove(&key(tenant, name));
        }
        same
    }

    /// Every endpoint's active config: ((tenant, name), config).
    pub fn active_configs(&self) -> Vec<(EndpointKey, Arc<ActiveConfig>)> {
        self.read()
            .iter()
            .map(|(key, active)| (key.clone(), active.clone()))
            .collect()
    }

    /// The endpoints (tenant, name) whose active config serves the image version
    /// `owner/model@version`.
    pub fn serving_image(&self, owner: &str, model: &str, version: u64) -> Vec<EndpointKey> {
        self.read()
            .iter()
            .filter(|(_, active)| {
                active.entities.iter().any(|e| {
                    let record = &e.image.record;
                    record.tenant == owner && record.name == model && record.version == version
                })
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The endpoints with an active config: (tenant, name).
    pub fn endpoint_keys(&self) -> Vec<(String, String)> {
        self.read().keys().cloned().collect()
    }

    /// Every entity serving now: endpoints' and direct ones.
    pub fn entities(&self) -> Vec<Arc<EntityRuntime>> {
        let mut entities: Vec<Arc<EntityRuntime>> = self
            .read()
            .values()
            .flat_map(|active| active.entities.iter().cloned())
            .collect();
        entities.extend(self.direct.entities());
        entities
    }

    /// The image versions something serves: (owner, model, version); a version shared by
    /// another tenant is the owner's.
    pub fn served_versions(&self) -> HashSet<VersionKey> {
        let mut served: HashSet<VersionKey> = self
            .read()
            .values()
            .flat_map(|active| {
                active
                    .entities
                    .iter()
                    .map(|e| {
                        let record = &e.image.record;
                        (record.tenant.clone(), record.name.clone(), record.version)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        served.extend(self.direct.keys());
        served
    }
}
