//! Who is in the cluster: the live nodes and this node's own id. Cluster mode fills it
//! from the PostgreSQL nodes table (heartbeat leases); placement and forwarding only read
//! it through [`Membership`].

/// One live node: its stable id and the base URL other nodes reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Stable id (unique in the cluster).
    pub id: String,
    /// Base URL, e.g. `http://10.0.0.7:8080`.
    pub url: String,
}

/// The cluster's live nodes as this node sees them.
pub trait Membership: Send + Sync {
    /// This node's id.
    fn self_id(&self) -> &str;
    /// The nodes whose lease is live, this one included.
    fn live_nodes(&self) -> Vec<NodeInfo>;
}
