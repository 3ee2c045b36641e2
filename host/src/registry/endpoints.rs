//! Serving-endpoint records, in the shape of Databricks' serving-endpoints API: the active
//! config, the pending one while an update runs, and the state.

use serde::{Deserialize, Serialize};

/// One model image version served by an endpoint, with its own limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServedEntity {
    /// Name of the served entity within the endpoint (default `<model>-<version>`).
    #[serde(default)]
    pub name: String,
    /// The model (image) name (`model_name` in Databricks' older `served_models`).
    #[serde(alias = "model_name")]
    pub entity_name: String,
    /// The image version, as a string (Databricks' type; `model_version` in `served_models`).
    #[serde(alias = "model_version")]
    pub entity_version: String,
    /// Most requests running at once on this entity (default: the manifest's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Requests that may wait for a free slot beyond those running (default 2x concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<usize>,
    /// Per-request timeout in milliseconds (default: the manifest's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Memory limit per request in MiB (default: the manifest's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Accepted for Databricks compatibility; sandserve sizes by `max_concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_size: Option<String>,
    /// Accepted for Databricks compatibility; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_enabled: Option<bool>,
    /// Accepted for Databricks compatibility (`CPU`, `GPU_SMALL`, ...); ignored: where a
    /// graph runs is its `target` in the model manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_type: Option<String>,
}

impl ServedEntity {
    /// The image version: the one reading of `entity_version` (a positive integer; "01"
    /// and " 1" from older releases are version 1). `None` for anything else; a config is
    /// refused with such a version before it is stored.
    pub fn version(&self) -> Option<u64> {
        self.entity_version
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| *v > 0)
    }

    /// `model` version `version` under `name`, with every limit left to the manifest.
    pub fn with_manifest_limits(name: String, model: &str, version: &str) -> Self {
        Self {
            name,
            entity_name: model.to_string(),
            entity_version: version.to_string(),
            max_concurrency: None,
            max_queue: None,
            timeout_ms: None,
            memory_mib: None,
            workload_size: None,
            scale_to_zero_enabled: None,
            workload_type: None,
        }
    }
}

/// One traffic route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The served entity.
    #[serde(alias = "served_model_name")]
    pub served_entity_name: String,
    /// Share of traffic, 0..=100; all routes sum to 100.
    pub traffic_percentage: u32,
}

/// How traffic is split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// Routes.
    pub routes: Vec<Route>,
}

/// An endpoint configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Served entities.
    #[serde(alias = "served_models")]
    pub served_entities: Vec<ServedEntity>,
    /// Traffic split (default: 100% to a single entity).
    #[serde(default)]
    pub traffic_config: Option<TrafficConfig>,
    /// Config revision, counting up with each accepted update.
    #[serde(default)]
    pub config_version: u64,
}

/// Databricks' endpoint state. Stored and answered as Databricks spells it
/// (`{"ready": "READY", "config_update": "NOT_UPDATING"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Whether a config serves traffic.
    pub ready: Readiness,
    /// Whether a config update runs, or how the last one ended.
    pub config_update: ConfigUpdate,
}

/// `state.ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Readiness {
    /// A config serves traffic.
    Ready,
    /// No config serves traffic (being prepared, failed, or the server is restoring it).
    NotReady,
}

/// `state.config_update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfigUpdate {
    /// No update runs; the last one (if any) took effect.
    NotUpdating,
    /// A pending config is being prepared.
    InProgress,
    /// The last update failed (`update_error` says why); the active config, if any, serves.
    UpdateFailed,
}

/// A tag on an endpoint (Databricks' `EndpointTag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTag {
    /// Key, unique per endpoint.
    pub key: String,
    /// Value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A serving endpoint of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Endpoint name, unique per tenant.
    pub name: String,
    /// Opaque id (32 hex digits), fixed at creation; empty in records written before ids
    /// existed (see [`EndpointRecord::id`]).
    #[serde(default)]
    pub id: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<EndpointTag>,
    /// Free-text description.
    #[serde(default)]
    pub description: Option<String>,
    /// Owning tenant.
    pub tenant: String,
    /// Who created it (token id).
    pub creator: String,
    /// Creation time (Unix milliseconds, as Databricks).
    pub creation_timestamp: u64,
    /// Last change (Unix milliseconds).
    pub last_updated_timestamp: u64,
    /// The config serving traffic (absent until the first one is ready).
    pub config: Option<EndpointConfig>,
    /// The config being prepared.
    pub pending_config: Option<EndpointConfig>,
    /// State.
    pub state: EndpointState,
    /// Why the last update failed, if it did.
    pub update_error: Option<String>,
    /// Cluster mode: the node preparing the pending config (its lease gone, any node fails
    /// the update: `serving/orphans.rs`). Absent on a single node and when nothing is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_node: Option<String>,
    /// Retry a request that fails with a 5xx once on another served entity.
    pub fallback_enabled: bool,
}

impl EndpointRecord {
    /// The opaque id: the stored one, or for a record written before ids existed, one
    /// derived from its tenant and name (stable, and as opaque).
    pub fn id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}\0{}", self.tenant, self.name).as_bytes());
        hex::encode(&digest[..16])
    }

    /// Whether any config (active or pending) serves `model` version `version`.
    pub fn serves(&self, model: &str, version: u64) -> bool {
        // The endpoint's tenant may also name its own model `tenant/model`.
        let own = |name: &str| {
            name.strip_prefix(self.tenant.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                == Some(model)
        };
        self.config
            .iter()
            .chain(self.pending_config.iter())
            .flat_map(|c| c.served_entities.iter())
            .any(|e| {
                (e.entity_name == model || own(&e.entity_name)) && e.version() == Some(version)
            })
    }
}

/// Milliseconds since the Unix epoch (the wall clock: for timestamps that are stored or shown;
/// `serving::placement::now_millis`, a monotonic clock, measures intervals).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> EndpointConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn databricks_older_served_models_form_is_read() {
        let legacy = config(
            r#"{"served_models": [{"name": "a", "model_name": "digits", "model_version": "2",
                "workload_size": "Small", "scale_to_zero_enabled": false}]}"#,
        );
        assert_eq!(legacy.served_entities[0].entity_name, "digits");
        assert_eq!(legacy.served_entities[0].entity_version, "2");
        assert!(serde_json::from_str::<EndpointConfig>(
            r#"{"served_entities": [{"entity_name": "d", "entity_version": "1", "typo": 1}]}"#
        )
        .is_err());
    }

    #[test]
    fn any_spelling_of_a_stored_version_counts_as_served() {
        let record = EndpointRecord {
            name: "ep".into(),
            id: String::new(),
            tags: Vec::new(),
            description: None,
            tenant: "acme".into(),
            creator: "admin".into(),
            creation_timestamp: 0,
            last_updated_timestamp: 0,
            config: Some(config(
                r#"{"served_entities": [{"entity_name": "digits", "entity_version": "01"}]}"#,
            )),
            pending_config: Some(config(
                r#"{"served_entities": [{"entity_name": "digits", "entity_version": "3"},
                    {"entity_name": "acme/echo", "entity_version": "5"},
                    {"entity_name": "other/echo", "entity_version": "6"}]}"#,
            )),
            state: EndpointState {
                ready: Readiness::Ready,
                config_update: ConfigUpdate::InProgress,
            },
            update_error: None,
            update_node: None,
            fallback_enabled: false,
        };
        assert!(record.serves("digits", 1));
        assert!(record.serves("digits", 3));
        assert!(!record.serves("digits", 2));
        assert!(!record.serves("echo", 1));
        // Its own model under the `tenant/model` spelling, and not another tenant's.
        assert!(record.serves("echo", 5));
        assert!(!record.serves("echo", 6));
        assert!(record.serves("other/echo", 6));
    }

    #[test]
    fn states_are_stored_and_answered_as_databricks_spells_them() {
        // Records written when states were strings read back typed, and write the same text.
        let stored = r#"{"ready":"NOT_READY","config_update":"UPDATE_FAILED"}"#;
        let state: EndpointState = serde_json::from_str(stored).unwrap();
        assert_eq!(state.ready, Readiness::NotReady);
        assert_eq!(state.config_update, ConfigUpdate::UpdateFailed);
        assert_eq!(serde_json::to_string(&state).unwrap(), stored);
        let ready = EndpointState {
            ready: Readiness::Ready,
            config_update: ConfigUpdate::NotUpdating,
        };
        assert_eq!(
            serde_json::to_value(ready).unwrap(),
            serde_json::json!({"ready": "READY", "config_update": "NOT_UPDATING"})
        );
        assert!(serde_json::from_str::<EndpointState>(
            r#"{"ready":"ready","config_update":"NOT_UPDATING"}"#
        )
        .is_err());
    }
}
