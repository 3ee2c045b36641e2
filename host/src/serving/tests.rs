//! The endpoint manager's record races: a prepared config takes effect only while it is still wanted.

use super::lifecycle::still_wanted;
use super::*;
use crate::registry::{ConfigUpdate, EndpointState, Readiness};

fn config(version: u64, model_version: &str) -> EndpointConfig {
    let mut config: EndpointConfig = serde_json::from_value(serde_json::json!({
        "served_entities": [{"entity_name": "digits", "entity_version": model_version}]
    }))
    .unwrap();
    config.config_version = version;
    config
}

fn record(active: Option<EndpointConfig>, pending: Option<EndpointConfig>) -> EndpointRecord {
    EndpointRecord {
        name: "ep".into(),
        id: String::new(),
        tags: Vec::new(),
        description: None,
        tenant: "acme".into(),
        creator: "admin".into(),
        creation_timestamp: 0,
        last_updated_timestamp: 0,
        state: EndpointState {
            ready: Readiness::NotReady,
            config_update: if pending.is_some() {
                ConfigUpdate::InProgress
            } else {
                ConfigUpdate::NotUpdating
            },
        },
        config: active,
        pending_config: pending,
        update_error: None,
        update_node: None,
        fallback_enabled: false,
    }
}

#[test]
fn an_update_takes_effect_only_while_it_is_the_pending_config() {
    let (old, new) = (config(1, "1"), config(2, "2"));
    assert!(still_wanted(
        &record(Some(old.clone()), Some(new.clone())),
        &new,
        false
    ));
    // Replaced by a later update, or already activated, or the endpoint was deleted and
    // created again with another config.
    assert!(!still_wanted(
        &record(Some(old.clone()), Some(config(3, "3"))),
        &new,
        false
    ));
    assert!(!still_wanted(&record(Some(new.clone()), None), &new, false));
    assert!(!still_wanted(
        &record(None, Some(config(1, "5"))),
        &old,
        false
    ));
}

#[test]
fn a_restore_takes_effect_only_while_its_config_is_the_active_one() {
    let (old, new) = (config(1, "1"), config(2, "2"));
    // Restoring at start-up while an update accepted meanwhile is still being prepared:
    // the old config serves until then.
    assert!(still_wanted(
        &record(Some(old.clone()), Some(new.clone())),
        &old,
        true
    ));
    // The update finished first: the restore must not bring the old config back.
    assert!(!still_wanted(&record(Some(new.clone()), None), &old, true));
}
