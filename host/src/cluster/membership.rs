//! Who is in the cluster: each node holds a lease in the metadata database, renewed by its
//! heartbeat; the live nodes are those whose lease has not run out. Placement and
//! forwarding read them through [`Membership`]. A single node (sled metadata) is a cluster
//! of one: [`SingleNode`].

/// A live node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    /// Its id (`--node-id`), unique in the cluster.
    pub id: String,
    /// The URL other nodes reach it at (`--advertise-url`).
    pub url: String,
}

/// What a node knows of the cluster's members.
pub trait Membership: Send + Sync {
    /// This node's id.
    fn self_id(&self) -> &str;
    /// The nodes whose lease is current (this one included while its heartbeat runs),
    /// ordered by id. Answered from memory: cheap enough for the request path.
    fn live_nodes(&self) -> Vec<NodeInfo>;
    /// Whether this node's own lease is current, so [`Membership::live_nodes`] is fresh.
    /// While it is not (the node could not renew it: the database is down, or the node
    /// was frozen), `live_nodes` is the last view the node had.
    fn lease_current(&self) -> bool {
        true
    }
}

/// The membership of a node that runs alone.
pub struct SingleNode {
    node: NodeInfo,
}

impl SingleNode {
    /// This node, alone.
    pub fn new(id: String, url: String) -> Self {
        Self {
            node: NodeInfo { id, url },
        }
    }
}

impl Membership for SingleNode {
    fn self_id(&self) -> &str {
        &self.node.id
    }

    fn live_nodes(&self) -> Vec<NodeInfo> {
        vec![self.node.clone()]
    }
}
