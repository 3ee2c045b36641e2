//! Cluster mode: an endpoint update whose node died. The node that accepts an update records
//! its id on the record (`update_node`) and prepares the config itself; if it dies first,
//! nothing else would ever finish or fail the update, and the endpoint would refuse every
//! further update as "in progress". So any node that finds an update running on a node
//! whose lease is gone fails it (compare-and-swap: one node wins, the others find it done):
//! `config_update` `UPDATE_FAILED`, the pending config dropped, the active config serving on,
//! and `update_error` naming the node. A node that starts again fails the updates recorded
//! as its own (it cannot be running them any more). `server/sweep.rs` decides when to look.

use super::{lifecycle, EndpointManager, ServingError};
use crate::registry::ConfigUpdate;

impl EndpointManager {
    /// Cluster mode: records `node` (this node's id) on every update it accepts from now on.
    pub fn run_updates_as(&self, node: &str) {
        let _ = self.node.set(node.to_string());
    }

    /// Fails every running update whose node is not in `live` (node ids with a current
    /// lease, read from the database). With `restarted`, this node's own updates count as
    /// orphaned too (call once at start-up). Returns how many this node failed.
    pub fn fail_orphaned_updates(
        &self,
        live: &[String],
        restarted: bool,
    ) -> Result<usize, ServingError> {
        let me = self.node.get().map(String::as_str);
        let mut failed = 0;
        for record in self.registry.endpoints(None)? {
            if record.state.config_update != ConfigUpdate::InProgress {
                continue;
            }
            let Some(node) = record.update_node.clone() else {
                continue; // written by a release that did not record it: not ours to judge
            };
            let gone = !live.contains(&node) || (restarted && Some(node.as_str()) == me);
            if !gone {
                continue;
            }
            let _records = self.lock_records();
            let changed = self.change_record_if(&record.tenant, &record.name, |current| {
                Ok(lifecycle::orphaned(current, &node).then_some(()))
            });
            match changed {
                Ok(Some(_)) => {
                    failed += 1;
                    tracing::warn!(
                        tenant = record.tenant,
                        endpoint = record.name,
                        node,
                        "failed an endpoint update whose node stopped before it finished"
                    );
                }
                Ok(None) => {}
                Err(ServingError::Registry(crate::registry::RegistryError::NotFound {
                    ..
                })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(failed)
    }
}
