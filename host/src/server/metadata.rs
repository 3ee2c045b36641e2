//! Opening the metadata store the config names: the sled database in the data folder (one
//! node), or PostgreSQL (cluster mode: the node also starts following the changes the
//! others make, and joins the membership with a lease).

use crate::cluster::membership::{Membership, SingleNode};
use crate::config::{Metadata, ServeConfig};
use crate::governance::SharedStores;
use crate::registry::postgres::PgMembership;
use crate::registry::{Change, ModelRegistry, PostgresRegistry, RegistryError, SledRegistry};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The opened metadata store.
pub(super) struct OpenedMetadata {
    /// Every record kind.
    pub registry: Arc<dyn ModelRegistry>,
    /// Who is in the cluster (this node alone with sled).
    pub membership: Arc<dyn Membership>,
    /// Cluster mode's parts; `None` with sled.
    pub shared: Option<SharedMetadata>,
    /// Cluster mode: governance's stores in the same database; `None` with sled.
    pub governance: Option<SharedStores>,
}

/// What a node sharing its metadata runs besides the store.
pub(super) struct SharedMetadata {
    /// The changes to apply, taken once by `App::start`.
    pub changes: Mutex<Option<mpsc::Receiver<Vec<Change>>>>,
    /// This node's lease, given up at shutdown.
    pub lease: Arc<PgMembership>,
    /// The cluster's secret (the key of the seal on forwarded requests; never logged).
    pub secret: Vec<u8>,
}

/// Opens the store `config.cluster.metadata` names.
pub(super) fn open(config: &ServeConfig) -> Result<OpenedMetadata, RegistryError> {
    let cluster = &config.cluster;
    let advertised = cluster.advertised(config.listen, config.tls.is_some());
    match &cluster.metadata {
        Metadata::Sled => {
            let registry = SledRegistry::open(&config.data_dir.join("metadata"))?;
            Ok(OpenedMetadata {
                registry: Arc::new(registry),
                membership: Arc::new(SingleNode::new(cluster.node_id.clone(), advertised)),
                shared: None,
                governance: None,
            })
        }
        Metadata::Postgres(url) => {
            let registry = PostgresRegistry::connect(url)?;
            let secret = registry.cluster_secret()?;
            // Before anything reads the records: no change falls between.
            let changes = registry.follow()?;
            let lease = registry.join(&cluster.node_id, &advertised)?;
            tracing::info!(
                node = cluster.node_id,
                url = advertised,
                "joined the cluster"
            );
            Ok(OpenedMetadata {
                governance: Some(registry.governance()),
                registry: Arc::new(registry),
                membership: lease.clone(),
                shared: Some(SharedMetadata {
                    changes: Mutex::new(Some(changes)),
                    lease,
                    secret,
                }),
            })
        }
    }
}
