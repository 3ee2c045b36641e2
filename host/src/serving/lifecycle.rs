//! The endpoint lifecycle as transitions of its stored record: created with its first
//! config pending, an update accepted, a prepared config activated, a failure recorded, an
//! update cut short by a restart. Each transition is a plain function of the record (no
//! storage, no live state), so the state machine reads in one place; `EndpointManager`
//! applies them under its record lock and writes the result.
//!
//! | transition | `ready` | `config_update` | configs |
//! |---|---|---|---|
//! | created | `NOT_READY` | `IN_PROGRESS` | pending = first |
//! | update accepted (not while `IN_PROGRESS`) | unchanged | `IN_PROGRESS` | pending = new |
//! | activated | `READY` | `NOT_UPDATING` | active = pending, pending cleared |
//! | failed | unchanged | `UPDATE_FAILED` | pending cleared, active serves on |
//! | server restarted | `NOT_READY` until restored | running update -> `UPDATE_FAILED` | pending cleared |
//! | its node gone (cluster mode) | unchanged | `UPDATE_FAILED` | pending cleared, active serves on |
//! | restored | `READY` | unchanged | active as stored |

use super::records::{self, EndpointMeta};
use super::{config, PrepareError, ServingError};
use crate::registry::{
    unix_millis, ConfigUpdate, EndpointConfig, EndpointRecord, EndpointState, EndpointTag,
    Readiness,
};

/// What a new endpoint needs besides its config.
pub(super) struct NewEndpoint<'a> {
    pub tenant: &'a str,
    pub creator: &'a str,
    pub name: &'a str,
}

/// A new endpoint's record, its (checked) first config pending as revision 1; returns the
/// record and that config.
pub(super) fn created(
    new: NewEndpoint<'_>,
    config: EndpointConfig,
    meta: EndpointMeta,
) -> Result<(EndpointRecord, EndpointConfig), ServingError> {
    let mut config = config::normalise(config)?;
    config.config_version = 1;
    let tags: Vec<EndpointTag> = records::checked_tags(meta.tags)?;
    let now = unix_millis();
    let record = EndpointRecord {
        name: new.name.to_string(),
        id: records::new_id(),
        tags,
        description: meta.description,
        tenant: new.tenant.to_string(),
        creator: new.creator.to_string(),
        creation_timestamp: now,
        last_updated_timestamp: now,
        config: None,
        pending_config: Some(config.clone()),
        state: EndpointState {
            ready: Readiness::NotReady,
            config_update: ConfigUpdate::InProgress,
        },
        update_error: None,
        update_node: None,
        fallback_enabled: meta.fallback_enabled,
    };
    Ok((record, config))
}

/// Checks a config for an update (before the record is read: no lock needed).
pub(super) fn checked(config: EndpointConfig) -> Result<EndpointConfig, ServingError> {
    config::normalise(config)
}

/// Accepts an update: `config` becomes the pending config with the next revision.
/// Refused while another update runs. Returns the pending config.
pub(super) fn begin_update(
    record: &mut EndpointRecord,
    mut config: EndpointConfig,
) -> Result<EndpointConfig, ServingError> {
    if record.state.config_update == ConfigUpdate::InProgress {
        return Err(ServingError::UpdateInProgress(record.name.clone()));
    }
    let latest = [&record.config, &record.pending_config]
        .into_iter()
        .flatten()
        .map(|c| c.config_version)
        .max()
        .unwrap_or(0);
    config.config_version = latest + 1;
    record.pending_config = Some(config.clone());
    record.state.config_update = ConfigUpdate::InProgress;
    record.update_error = None;
    record.last_updated_timestamp = unix_millis();
    Ok(config)
}

/// At start-up, before the stored config is restored: nothing serves yet, and an update
/// that was running when the server stopped has failed.
pub(super) fn restarted(record: &mut EndpointRecord) {
    if record.pending_config.take().is_some() {
        record.state.config_update = ConfigUpdate::UpdateFailed;
        record.update_error =
            Some("the server restarted while this update was running; send it again".into());
    }
    record.update_node = None;
    record.state.ready = Readiness::NotReady;
}

/// Whether a config prepared for `record` may still take effect: an update's config while
/// it is the pending one (not replaced, and the endpoint not deleted and created again with
/// another config), a restored config while it is the stored active one.
pub(super) fn still_wanted(
    record: &EndpointRecord,
    config: &EndpointConfig,
    restoring: bool,
) -> bool {
    let expected = if restoring {
        &record.config
    } else {
        &record.pending_config
    };
    expected.as_ref() == Some(config)
}

/// `config` (still wanted, see [`still_wanted`]) serves now.
pub(super) fn activated(record: &mut EndpointRecord, config: &EndpointConfig, restoring: bool) {
    record.config = Some(config.clone());
    if !restoring {
        record.pending_config = None;
        record.update_node = None;
        record.state.config_update = ConfigUpdate::NotUpdating;
        record.update_error = None;
    }
    record.state.ready = Readiness::Ready;
    record.last_updated_timestamp = unix_millis();
}

/// `config` (still wanted) could not be prepared. A failed restore leaves an update
/// accepted meanwhile running.
pub(super) fn failed(record: &mut EndpointRecord, restoring: bool, reason: &PrepareError) {
    if restoring {
        record.update_error = Some(format!("the served config could not be loaded: {reason}"));
        if record.state.config_update != ConfigUpdate::InProgress {
            record.state.config_update = ConfigUpdate::UpdateFailed;
        }
    } else {
        record.pending_config = None;
        record.update_node = None;
        record.state.config_update = ConfigUpdate::UpdateFailed;
        record.update_error = Some(reason.to_string());
    }
    record.last_updated_timestamp = unix_millis();
}

/// Cluster mode: the update `node` was running is orphaned (the node's lease ran out, or it
/// started again): it failed; the active config serves on. `false` when the record no
/// longer shows that update running (it finished, or another node failed it first).
pub(super) fn orphaned(record: &mut EndpointRecord, node: &str) -> bool {
    if record.state.config_update != ConfigUpdate::InProgress
        || record.update_node.as_deref() != Some(node)
    {
        return false;
    }
    record.pending_config = None;
    record.update_node = None;
    record.state.config_update = ConfigUpdate::UpdateFailed;
    record.update_error = Some(format!(
        "the node running this update (`{node}`) stopped before it finished; the previous \
         config serves on; send the update again"
    ));
    record.last_updated_timestamp = unix_millis();
    true
}

/// The active config serves a model version its owner has just unshared: it stops
/// serving (the config stays recorded, so the tenant sees what it was and why).
pub(super) fn revoked(record: &mut EndpointRecord, reason: &str) {
    record.state.ready = Readiness::NotReady;
    record.update_error = Some(reason.to_string());
    record.last_updated_timestamp = unix_millis();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(model_version: &str) -> EndpointConfig {
        serde_json::from_value(serde_json::json!({
            "served_entities": [{"entity_name": "digits", "entity_version": model_version}]
        }))
        .unwrap()
    }

    #[test]
    fn an_orphaned_update_fails_only_while_its_node_still_runs_it() {
        let (mut record, first) = new_record();
        record.update_node = Some("node-a".into());
        assert!(
            !orphaned(&mut record.clone(), "node-b"),
            "another node's update"
        );
        let mut done = record.clone();
        activated(&mut done, &first, false);
        assert_eq!(done.update_node, None);
        assert!(!orphaned(&mut done, "node-a"), "finished already");
        assert!(orphaned(&mut record, "node-a"));
        assert_eq!(record.state.config_update, ConfigUpdate::UpdateFailed);
        assert!(record.pending_config.is_none() && record.update_node.is_none());
        assert!(record.update_error.as_deref().unwrap().contains("`node-a`"));
        assert!(!orphaned(&mut record, "node-a"), "failed once only");
    }

    fn new_record() -> (EndpointRecord, EndpointConfig) {
        let new = NewEndpoint {
            tenant: "acme",
            creator: "tok",
            name: "ep",
        };
        created(new, config("1"), EndpointMeta::default()).unwrap()
    }

    #[test]
    fn an_endpoint_is_created_with_its_first_config_pending_as_revision_one() {
        let (record, first) = new_record();
        assert_eq!(first.config_version, 1);
        assert_eq!(record.pending_config.as_ref(), Some(&first));
        assert_eq!(record.state.ready, Readiness::NotReady);
        assert_eq!(record.state.config_update, ConfigUpdate::InProgress);
        assert!(record.config.is_none());
    }

    #[test]
    fn an_update_is_refused_while_one_runs_and_counts_revisions_past_both_configs() {
        let (mut record, first) = new_record();
        let refused = begin_update(&mut record, config("2"));
        assert!(matches!(refused, Err(ServingError::UpdateInProgress(_))));
        activated(&mut record, &first, false);
        assert_eq!(record.state.ready, Readiness::Ready);
        assert_eq!(record.state.config_update, ConfigUpdate::NotUpdating);
        assert!(record.pending_config.is_none());
        let second = begin_update(&mut record, config("2")).unwrap();
        assert_eq!(second.config_version, 2);
        failed(&mut record, false, &PrepareError::BadVersion("x".into()));
        assert_eq!(record.state.config_update, ConfigUpdate::UpdateFailed);
        assert_eq!(
            record.config.as_ref(),
            Some(&first),
            "the old config serves on"
        );
        assert!(record.update_error.is_some());
        // Revisions count configs that may serve: the failed one's number is taken again.
        let third = begin_update(&mut record, config("3")).unwrap();
        assert_eq!(third.config_version, 2);
        assert!(record.update_error.is_none());
    }

    #[test]
    fn a_restart_fails_the_running_update_and_a_failed_restore_leaves_a_new_update_running() {
        let (mut record, first) = new_record();
        activated(&mut record, &first, false);
        begin_update(&mut record, config("2")).unwrap();
        restarted(&mut record);
        assert_eq!(record.state.ready, Readiness::NotReady);
        assert_eq!(record.state.config_update, ConfigUpdate::UpdateFailed);
        assert!(record.pending_config.is_none());
        // An update accepted while the restore runs, then the restore fails.
        begin_update(&mut record, config("3")).unwrap();
        failed(&mut record, true, &PrepareError::BadVersion("x".into()));
        assert_eq!(record.state.config_update, ConfigUpdate::InProgress);
        assert!(record.pending_config.is_some());
    }
}
