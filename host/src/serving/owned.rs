//! Cluster mode: which endpoint configs this node keeps loaded. Each endpoint config
//! version has a few owner nodes ([`Ownership`], placed by the cluster layer); the other
//! nodes forward its queries to them. So a node loads eagerly only the configs it owns:
//! at start-up (readiness waits for them: [`EndpointManager::keep_owned_warm`]), when a
//! change makes a new config active, and when the live nodes change and it gains keys.
//!
//! A node may still have to serve a config it does not own: it accepted the update (and
//! loaded the config to check it), no owner could be reached (the forwarding fallback),
//! or two nodes' views of the live set differ for a moment. Such a query loads the config
//! on demand ([`EndpointManager::active_or_load`]); one load serves every query waiting
//! for it (single flight, shared with the eager loads). A config this node does not own
//! is released once no query has used it for [`UNOWNED_IDLE_LIMIT`].
//!
//! A single node (sled metadata) has no [`Ownership`] and owns everything.

use super::live::ActiveConfig;
use super::placement::now_millis;
use super::{EndpointManager, ServingError};
use crate::registry::{EndpointConfig, RegistryError};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Which endpoint configs this node owns (cluster mode).
pub trait Ownership: Send + Sync {
    /// Whether this node owns `tenant`'s endpoint `endpoint` at `config_version`.
    fn owns(&self, tenant: &str, endpoint: &str, config_version: u64) -> bool;
    /// A number that changes whenever the answers of [`Ownership::owns`] may have (the
    /// live nodes changed).
    fn epoch(&self) -> u64;
    /// Whether this node's view of the live nodes can be trusted now (its own lease is
    /// current). While it cannot (a node woken from a stop, or cut off from the metadata
    /// database), nothing is loaded or released for ownership's sake.
    fn settled(&self) -> bool;
}

/// How long a config this node does not own stays loaded after its last query.
pub const UNOWNED_IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How often the node checks whether the live nodes (and so what it owns) changed.
pub const OWNERSHIP_CHECK: Duration = Duration::from_secs(1);

/// How many configs load at once when a node warms up (graph loads are CPU-bound).
const WARM_PARALLELISM: usize = 2;

/// One endpoint config being loaded: (tenant, endpoint, config version).
type LoadKey = (String, String, u64);

/// One load's outcome, awaited by everyone who needs it.
type LoadCell = Arc<OnceCell<Result<(), String>>>;

/// How long a config that failed to load is not tried again (its queries answer 503 at
/// once meanwhile, instead of each paying for a load that fails).
pub const FAILED_LOAD_BACKOFF: Duration = Duration::from_secs(10);

/// The loads in flight, each awaited by everyone who needs it, and the recent failures.
#[derive(Default)]
pub(super) struct Loads {
    running: Mutex<HashMap<LoadKey, LoadCell>>,
    failed: Mutex<HashMap<LoadKey, (std::time::Instant, String)>>,
}

impl Loads {
    fn cell(&self, key: &LoadKey) -> LoadCell {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Why `key` failed to load, if it did less than [`FAILED_LOAD_BACKOFF`] ago.
    fn recently_failed(&self, key: &LoadKey) -> Option<String> {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.retain(|_, (at, _)| at.elapsed() < FAILED_LOAD_BACKOFF);
        failed.get(key).map(|(_, why)| why.clone())
    }

    fn remember_failure(&self, key: &LoadKey, why: &str) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), (std::time::Instant::now(), why.to_string()));
    }

    fn finished(&self, key: &LoadKey, cell: &LoadCell) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            running.remove(key);
        }
    }
}

/// What a warm-up did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    /// Owned configs loaded now.
    pub loaded: usize,
    /// Owned configs that could not be loaded (logged; their queries answer 503).
    pub failed: usize,
}

/// The config version each endpoint's queries are placed by, as last read (cluster mode):
/// the forwarding layer asks on every query, and the metadata database is not to be read
/// that often. Forgotten on every change of the endpoint.
#[derive(Default)]
pub(super) struct RoutingVersions(std::sync::RwLock<HashMap<(String, String), u64>>);

impl RoutingVersions {
    pub(super) fn forget(&self, tenant: &str, name: &str) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(tenant.to_string(), name.to_string()));
    }

    pub(super) fn forget_all(&self) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl EndpointManager {
    /// The config version queries of endpoint `tenant`/`name` are placed by, when this node
    /// knows it without reading the database: the config serving here, else the version
    /// read last (see [`EndpointManager::routing_version`]).
    pub fn known_routing_version(&self, tenant: &str, name: &str) -> Option<u64> {
        if let Some(active) = self.live.get(tenant, name) {
            return Some(active.config_version);
        }
        self.routing_versions
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(tenant.to_string(), name.to_string()))
            .copied()
    }

    /// The config version queries of endpoint `tenant`/`name` are placed by (0 while it has
    /// no active config), or `None` when the tenant has no such endpoint. Reads the record
    /// when this node does not know it (a blocking call).
    pub fn routing_version(&self, tenant: &str, name: &str) -> Result<Option<u64>, ServingError> {
        if let Some(version) = self.known_routing_version(tenant, name) {
            return Ok(Some(version));
        }
        let record = match self.registry.endpoint(tenant, name) {
            Ok(record) => record,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let version = record.config.map_or(0, |c| c.config_version);
        self.routing_versions
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((tenant.to_string(), name.to_string()), version);
        Ok(Some(version))
    }

    /// Cluster mode: from now on this node loads only the configs `ownership` gives it
    /// (and those its queries need). Set once, before [`EndpointManager::keep_owned_warm`].
    pub fn set_ownership(&self, ownership: Arc<dyn Ownership>) {
        if self.ownership.set(ownership).is_err() {
            tracing::warn!("endpoint ownership set twice; keeping the first");
        }
    }

    /// Whether this node owns the config: always, outside cluster mode.
    pub(super) fn owns(&self, tenant: &str, name: &str, config_version: u64) -> bool {
        self.ownership
            .get()
            .is_none_or(|o| o.owns(tenant, name, config_version))
    }

    /// Whether a ready endpoint may be served here without being loaded yet (cluster mode:
    /// its owners serve it, and a query that reaches this node loads it).
    pub fn loads_on_demand(&self) -> bool {
        self.ownership.get().is_some()
    }

    /// The config serving `tenant`/`name` here; in cluster mode, a ready endpoint's active
    /// config is loaded on demand when it is not loaded yet.
    pub async fn active_or_load(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
    ) -> Result<Arc<ActiveConfig>, ServingError> {
        if let Some(active) = self.live.get(tenant, name) {
            if self.loads_on_demand() {
                active.last_used_ms.store(now_millis(), Ordering::Relaxed);
            }
            return Ok(active);
        }
        if !self.loads_on_demand() {
            return self.active(tenant, name);
        }
        let registry = self.registry.clone();
        let (t, n) = (tenant.to_string(), name.to_string());
        let record = tokio::task::spawn_blocking(move || registry.endpoint(&t, &n))
            .await
            .map_err(|e| ServingError::Internal(format!("reading the endpoint failed: {e}")))??;
        let Some(config) = record.config else {
            return Err(ServingError::NotReady(name.to_string()));
        };
        if let Err(reason) = self.load_and_swap(tenant, name, config).await {
            tracing::warn!(
                tenant,
                endpoint = name,
                "cannot load the endpoint on demand: {reason}"
            );
        }
        self.live
            .get(tenant, name)
            .ok_or_else(|| ServingError::NotReady(name.to_string()))
    }

    /// Loads `config` for `tenant`/`name` and swaps it in if it is still the stored active
    /// config then; concurrent calls for one config share one load.
    pub(super) async fn load_and_swap(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        config: EndpointConfig,
    ) -> Result<(), String> {
        let key = (tenant.to_string(), name.to_string(), config.config_version);
        if let Some(why) = self.loads.recently_failed(&key) {
            return Err(why);
        }
        let cell = self.loads.cell(&key);
        let outcome = cell
            .get_or_init(|| async {
                let loaded = self.load_config(tenant, name, &config).await;
                let outcome = match loaded {
                    Ok(entities) => {
                        self.swap_in_followed(tenant, name, &config, entities);
                        Ok(())
                    }
                    Err(reason) => {
                        let why = reason.to_string();
                        self.loads.remember_failure(&key, &why);
                        Err(why)
                    }
                };
                self.release_unserved();
                outcome
            })
            .await
            .clone();
        self.loads.finished(&key, &cell);
        outcome
    }

    /// Releases the configs this node does not own that no query used for
    /// [`UNOWNED_IDLE_LIMIT`]; returns how many.
    pub fn release_unowned_idle(&self) -> usize {
        match self.ownership.get() {
            Some(ownership) if ownership.settled() => {}
            _ => return 0,
        }
        let limit = u64::try_from(UNOWNED_IDLE_LIMIT.as_millis()).unwrap_or(u64::MAX);
        let now = now_millis();
        let mut released = 0;
        for ((tenant, name), active) in self.live.active_configs() {
            let idle = now.saturating_sub(active.last_used_ms.load(Ordering::Relaxed)) > limit;
            if idle
                && !self.owns(&tenant, &name, active.config_version)
                && self.live.remove_if_same(&tenant, &name, &active)
            {
                tracing::info!(
                    tenant,
                    endpoint = name,
                    "released an idle endpoint config this node does not own"
                );
                released += 1;
            }
        }
        if released > 0 {
            self.release_unserved();
        }
        released
    }

    /// Loads every stored active config this node owns and does not serve yet; returns
    /// once each load has finished (loaded or failed).
    pub async fn warm_owned(self: &Arc<Self>) -> Result<Warmed, ServingError> {
        let registry = self.registry.clone();
        let records = tokio::task::spawn_blocking(move || registry.endpoints(None))
            .await
            .map_err(|e| ServingError::Internal(format!("reading the endpoints failed: {e}")))??;
        let wanted: Vec<(String, String, EndpointConfig)> = records
            .into_iter()
            .filter_map(|r| {
                let config = r.config?;
                let serving = self
                    .live
                    .get(&r.tenant, &r.name)
                    .is_some_and(|a| *a.config == config);
                let owned = self.owns(&r.tenant, &r.name, config.config_version);
                (owned && !serving).then_some((r.tenant, r.name, config))
            })
            .collect();
        let outcomes: Vec<Result<(), String>> = futures_util::stream::iter(wanted)
            .map(|(tenant, name, config)| async move {
                self.load_and_swap(&tenant, &name, config).await
            })
            .buffer_unordered(WARM_PARALLELISM)
            .collect()
            .await;
        let failed = outcomes.iter().filter(|o| o.is_err()).count();
        Ok(Warmed {
            loaded: outcomes.len() - failed,
            failed,
        })
    }

    /// Cluster mode: warms the owned configs now, calls `warm` once that is done (the
    /// node's readiness), and warms again whenever the live nodes change, for as long as
    /// the manager lives.
    pub fn keep_owned_warm(self: &Arc<Self>, warm: Box<dyn FnOnce() + Send>) {
        let Some(ownership) = self.ownership.get().cloned() else {
            warm();
            return;
        };
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut warm = Some(warm);
            let mut seen = None;
            let mut ticks = tokio::time::interval(OWNERSHIP_CHECK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                let epoch = ownership.epoch();
                if seen == Some(epoch) || !ownership.settled() {
                    continue;
                }
                match manager.warm_owned().await {
                    Ok(warmed) => {
                        seen = Some(epoch);
                        tracing::info!(
                            loaded = warmed.loaded,
                            failed = warmed.failed,
                            "owned endpoint configs warm"
                        );
                        if let Some(warm) = warm.take() {
                            warm();
                        }
                    }
                    // The metadata store is unreachable: try again at the next tick.
                    Err(e) => tracing::warn!("cannot warm the owned endpoints: {e}"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: u64) -> LoadKey {
        ("acme".to_string(), "ep".to_string(), version)
    }

    #[test]
    fn one_load_per_config_at_a_time_and_a_new_one_after_it_finished() {
        let loads = Loads::default();
        let first = loads.cell(&key(1));
        assert!(
            Arc::ptr_eq(&first, &loads.cell(&key(1))),
            "waiters share a load"
        );
        assert!(
            !Arc::ptr_eq(&first, &loads.cell(&key(2))),
            "configs load apart"
        );
        loads.finished(&key(1), &first);
        assert!(
            !Arc::ptr_eq(&first, &loads.cell(&key(1))),
            "a finished load is not handed out again"
        );
    }

    #[test]
    fn a_failed_load_is_remembered_for_its_config_only() {
        let loads = Loads::default();
        assert_eq!(loads.recently_failed(&key(1)), None);
        loads.remember_failure(&key(1), "the blob store is unavailable");
        assert_eq!(
            loads.recently_failed(&key(1)).as_deref(),
            Some("the blob store is unavailable")
        );
        assert_eq!(loads.recently_failed(&key(2)), None, "another config loads");
    }

    #[test]
    fn a_routing_version_is_forgotten_on_a_change() {
        let versions = RoutingVersions::default();
        let insert = |tenant: &str, name: &str, v: u64| {
            versions
                .0
                .write()
                .unwrap()
                .insert((tenant.to_string(), name.to_string()), v)
        };
        insert("acme", "a", 3);
        insert("acme", "b", 4);
        versions.forget("acme", "a");
        let held = versions.0.read().unwrap().clone();
        assert_eq!(held.len(), 1);
        assert_eq!(held.get(&("acme".to_string(), "b".to_string())), Some(&4));
        versions.forget_all();
        assert!(versions.0.read().unwrap().is_empty());
    }
}
