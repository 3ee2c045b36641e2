//! Following endpoint changes other nodes make (cluster mode, shared metadata): each node
//! serves every endpoint from its own live table, and keeps that table in step with the
//! shared records. A node applies a change by reading the record again: a deleted endpoint
//! stops serving, a new active config is loaded here and swapped in, a fallback switch
//! follows. A follower never writes the record: the node that accepted the change owns its
//! state (pending, ready, failed).

use super::live::ActiveConfig;
use super::{load, EndpointManager, EntityRuntime, PrepareError, ServingError, Split};
use crate::registry::{EndpointConfig, EndpointRecord, RegistryError};
use std::sync::Arc;

/// The config `config` served by `entities` (loaded for it, in config order).
pub(super) fn active_config(
    config: &EndpointConfig,
    entities: Vec<Arc<EntityRuntime>>,
    fallback: bool,
) -> ActiveConfig {
    let routes = config
        .traffic_config
        .as_ref()
        .map(|t| t.routes.clone())
        .unwrap_or_default();
    let shares: Vec<(u32, usize)> = routes
        .iter()
        .filter_map(|r| {
            entities
                .iter()
                .position(|e| e.name == r.served_entity_name)
                .map(|i| (r.traffic_percentage, i))
        })
        .collect();
    ActiveConfig {
        config_version: config.config_version,
        config: Arc::new(config.clone()),
        entities,
        split: Split::new(&shares),
        fallback,
        last_used_ms: Arc::new(super::placement::now_millis().into()),
    }
}

impl EndpointManager {
    /// Loads every entity of `config` for endpoint `tenant`/`name` (compile, graphs), on a
    /// blocking thread.
    pub(super) async fn load_config(
        &self,
        tenant: &str,
        name: &str,
        config: &EndpointConfig,
    ) -> Result<Vec<Arc<EntityRuntime>>, PrepareError> {
        let images = self.images.clone();
        let (t, n, c) = (tenant.to_string(), name.to_string(), config.clone());
        let (inline, spares, threads) = (self.inline, self.spares.clone(), self.threads.clone());
        let logs = self.logs.clone();
        tokio::task::spawn_blocking(move || {
            let at = load::Endpoint {
                tenant: &t,
                name: &n,
                logs: &logs,
            };
            load::load_entities(&images, &at, &c, inline, spares, threads)
        })
        .await
        .unwrap_or_else(|e| Err(PrepareError::Crashed(e.to_string())))
    }

    /// At start-up with shared metadata: loads every stored endpoint's active config (in
    /// the background), without writing any record (the other nodes serve them meanwhile,
    /// and an update one of them runs stays theirs).
    pub fn restore_shared(self: &Arc<Self>) -> Result<(), ServingError> {
        for record in self.registry.endpoints(None)? {
            self.follow_record(record);
        }
        Ok(())
    }

    /// Applies a change another node (or this one) made to endpoint `tenant`/`name`.
    pub fn apply_remote_change(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
    ) -> Result<(), ServingError> {
        self.routing_versions.forget(tenant, name);
        match self.registry.endpoint(tenant, name) {
            Ok(record) => {
                self.follow_record(record);
                Ok(())
            }
            Err(RegistryError::NotFound { .. }) => {
                self.stop_serving(tenant, name);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies every endpoint's stored state (the node could not tell what changed).
    pub fn refresh_all(self: &Arc<Self>) -> Result<(), ServingError> {
        self.routing_versions.forget_all();
        let records = self.registry.endpoints(None)?;
        for (tenant, name) in self.live.endpoint_keys() {
            if !records.iter().any(|r| r.tenant == tenant && r.name == name) {
                self.stop_serving(&tenant, &name);
            }
        }
        for record in records {
            self.follow_record(record);
        }
        Ok(())
    }

    fn stop_serving(&self, tenant: &str, name: &str) {
        if self.live.get(tenant, name).is_none() {
            return;
        }
        {
            let _records = self.lock_records();
            self.live.remove(tenant, name);
        }
        self.logs.requests.forget_endpoint(tenant, name);
        self.logs.builds.forget_endpoint(tenant, name);
        self.release_unserved();
    }

    /// Brings the live table in step with `record`: nothing to do while its active config
    /// serves here already (the fallback switch aside); else, when this node owns the
    /// config, it loads in the background and is swapped in if it is still the active one
    /// then. A config this node does not own is not loaded (its owners serve it; a query
    /// that reaches this node loads it on demand), and an older one it served stops.
    fn follow_record(self: &Arc<Self>, record: EndpointRecord) {
        let Some(config) = record.config else {
            return;
        };
        let (tenant, name) = (record.tenant, record.name);
        if let Some(active) = self.live.get(&tenant, &name) {
            // The whole config, not only its version: an endpoint deleted and created again
            // meanwhile counts its versions from 1 again.
            if *active.config == config {
                if active.fallback != record.fallback_enabled {
                    let enabled = record.fallback_enabled;
                    self.live
                        .modify(&tenant, &name, |active| active.with_fallback(enabled));
                }
                return;
            }
        }
        if !self.owns(&tenant, &name, config.config_version) {
            self.stop_serving(&tenant, &name);
            return;
        }
        let manager = self.clone();
        tokio::spawn(async move {
            if let Err(reason) = manager.load_and_swap(&tenant, &name, config).await {
                tracing::warn!(
                    tenant,
                    endpoint = name,
                    "cannot load the endpoint config another node activated: {reason}"
                );
            }
        });
    }

    pub(super) fn swap_in_followed(
        &self,
        tenant: &str,
        name: &str,
        config: &EndpointConfig,
        entities: Vec<Arc<EntityRuntime>>,
    ) {
        let _records = self.lock_records();
        let record = match self.registry.endpoint(tenant, name) {
            Ok(record) => record,
            Err(RegistryError::NotFound { .. }) => return,
            Err(e) => {
                tracing::warn!(
                    tenant,
                    endpoint = name,
                    "cannot read the endpoint again: {e}"
                );
                return;
            }
        };
        // A newer config (or a deletion and re-creation) overtook this one while it loaded.
        if record.config.as_ref() != Some(config) {
            return;
        }
        // Another tenant's model version it serves may have been unshared meanwhile.
        if let Err(reason) = super::shared::still_servable(&self.images, tenant, &entities) {
            tracing::warn!(
                tenant,
                endpoint = name,
                config_version = config.config_version,
                "not serving the endpoint config another node activated: {reason}"
            );
            return;
        }
        let active = active_config(config, entities, record.fallback_enabled);
        self.live.swap_in(tenant, name, Arc::new(active));
        tracing::info!(
            tenant,
            endpoint = name,
            config_version = config.config_version,
            "endpoint config active (followed)"
        );
    }
}
