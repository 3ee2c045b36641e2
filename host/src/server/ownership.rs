//! Cluster mode's answer to serving's question "which endpoint configs does this node
//! own?": the cluster's rendezvous placement over the live nodes, keyed as the forwarding
//! layer keys queries (`cluster::endpoint_key`), so a node loads exactly the configs whose
//! queries come to it.

use crate::cluster::{endpoint_key, Cluster};
use crate::serving::Ownership;
use std::sync::Arc;

/// [`Ownership`] by the cluster's placement.
pub struct ClusterOwnership(pub Arc<Cluster>);

impl Ownership for ClusterOwnership {
    fn owns(&self, tenant: &str, endpoint: &str, config_version: u64) -> bool {
        self.0
            .is_owner(&endpoint_key(tenant, endpoint, config_version))
    }

    fn epoch(&self) -> u64 {
        self.0.live_epoch()
    }

    fn settled(&self) -> bool {
        self.0.is_live_member()
    }
}
