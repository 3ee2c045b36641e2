//! Node leases in the `nodes` table: a node joins by taking its lease, renews it every
//! [`HEARTBEAT`] for [`LEASE`], and leaves by deleting it at shutdown; a node that dies
//! stops renewing and drops out of [`Membership::live_nodes`] once its lease runs out. Lease
//! times are the database's clock (`now()`), so the nodes' clocks need not agree; each node
//! keeps the list in memory with the local instant each lease ends, so the list also ages
//! out while the database is unreachable (this node itself always stays in it).

use super::{storage, PostgresRegistry};
use crate::cluster::membership::{Membership, NodeInfo};
use crate::registry::RegistryError;
use sqlx::PgPool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How often a node renews its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a lease lasts after its last renewal.
pub const LEASE: Duration = Duration::from_secs(5);
/// How long the row of a node that is gone stays (for `GET /api/2.0/cluster/nodes`'s
/// history; nothing reads it after its lease).
const FORGET_AFTER_SECS: f64 = 3600.0;

/// A live node and the local instant its lease ends.
type Lease = (NodeInfo, Instant);

/// This node's membership, kept by its heartbeat.
pub struct PgMembership {
    me: NodeInfo,
    leases: Arc<RwLock<Vec<Lease>>>,
    pool: PgPool,
    heartbeat: tokio::task::AbortHandle,
    bridge: Arc<super::bridge::Bridge>,
}

async fn renew(pool: &PgPool, me: &NodeInfo) -> Result<Vec<Lease>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO nodes (id, url, lease_expires) VALUES ($1, $2, now() + make_interval(secs => $3)) \
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, lease_expires = EXCLUDED.lease_expires",
    )
    .bind(&me.id)
    .bind(&me.url)
    .bind(LEASE.as_secs_f64())
    .execute(pool)
    .await?;
    let rows: Vec<(String, String, f64)> = sqlx::query_as(
        "SELECT id, url, EXTRACT(EPOCH FROM lease_expires - now())::float8 FROM nodes \
         WHERE lease_expires > now() ORDER BY id COLLATE \"C\"",
    )
    .fetch_all(pool)
    .await?;
    let now = Instant::now();
    Ok(rows
        .into_iter()
        .map(|(id, url, left)| {
            let left = Duration::try_from_secs_f64(left)
                .unwrap_or_default()
                .min(LEASE);
            (NodeInfo { id, url }, now + left)
        })
        .collect())
}

impl PostgresRegistry {
    /// Joins the cluster as `id`, reachable at `url`: takes the lease now (fails when the
    /// database is unreachable), then renews it every [`HEARTBEAT`] in the background. A
    /// node started again with the id of one that died takes its lease over.
    pub fn join(&self, id: &str, url: &str) -> Result<Arc<PgMembership>, RegistryError> {
        let me = NodeInfo {
            id: id.to_string(),
            url: url.to_string(),
        };
        let first = self.bridge.run(renew(&self.pool, &me)).map_err(storage)?;
        let leases = Arc::new(RwLock::new(first));
        let (pool, node, shared) = (self.pool.clone(), me.clone(), leases.clone());
        let task = self.bridge.handle().spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            for round in 0u64.. {
                ticks.tick().await;
                match tokio::time::timeout(HEARTBEAT * 2, renew(&pool, &node)).await {
                    Ok(Ok(live)) => {
                        *shared.write().unwrap_or_else(|p| p.into_inner()) = live;
                        if failing {
                            tracing::info!(node = node.id, "node lease renewed again");
                            failing = false;
                        }
                    }
                    Ok(Err(e)) if !failing => {
                        tracing::warn!(node = node.id, "cannot renew the node lease: {e}");
                        failing = true;
                    }
                    Err(_) if !failing => {
                        tracing::warn!(node = node.id, "renewing the node lease timed out");
                        failing = true;
                    }
                    _ => {}
                }
                if round % 600 == 0 {
                    let _ = sqlx::query(
                        "DELETE FROM nodes WHERE lease_expires < now() - make_interval(secs => $1)",
                    )
                    .bind(FORGET_AFTER_SECS)
                    .execute(&pool)
                    .await;
                }
            }
        });
        Ok(Arc::new(PgMembership {
            me,
            leases,
            pool: self.pool.clone(),
            heartbeat: task.abort_handle(),
            bridge: self.bridge.clone(),
        }))
    }
}

impl PgMembership {
    /// The ids of the nodes whose lease is current now, as the database says (not this
    /// node's copy): what decides that a node is gone for good (`server/sweep.rs`).
    pub fn live_ids(&self) -> Result<Vec<String>, RegistryError> {
        let pool = self.pool.clone();
        self.bridge
            .run(async move {
                sqlx::query_scalar("SELECT id FROM nodes WHERE lease_expires > now()")
                    .fetch_all(&pool)
                    .await
            })
            .map_err(storage)
    }

    /// Stops the heartbeat and gives the lease up, so that the others stop counting on this
    /// node at once (graceful shutdown; a node that dies loses its lease when it ends).
    pub fn leave(&self) {
        self.heartbeat.abort();
        let (pool, id) = (self.pool.clone(), self.me.id.clone());
        let left = self.bridge.run(async move {
            sqlx::query("DELETE FROM nodes WHERE id = $1")
                .bind(id)
                .execute(&pool)
                .await
        });
        if let Err(e) = left {
            tracing::warn!(node = self.me.id, "cannot give the node lease up: {e}");
        }
    }
}

impl Drop for PgMembership {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Membership for PgMembership {
    fn self_id(&self) -> &str {
        &self.me.id
    }

    fn lease_current(&self) -> bool {
        let now = Instant::now();
        self.leases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(node, until)| node.id == self.me.id && *until > now)
    }

    fn live_nodes(&self) -> Vec<NodeInfo> {
        let now = Instant::now();
        let leases = self.leases.read().unwrap_or_else(|p| p.into_inner());
        let current: Vec<NodeInfo> = leases
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(node, _)| node.clone())
            .collect();
        if current.iter().any(|node| node.id == self.me.id) {
            return current;
        }
        // This node's own lease ran out: it could not renew it (the database is down, or
        // the node was frozen). It knows nothing newer than its last view, and the other
        // nodes are cut off (or were) just as it is, so it keeps that view, itself
        // included, rather than forgetting every node. `lease_current` tells the callers
        // that must not act on a stale view (loading or releasing by ownership).
        let mut last: Vec<NodeInfo> = leases.iter().map(|(node, _)| node.clone()).collect();
        if !last.iter().any(|node| node.id == self.me.id) {
            last.push(self.me.clone());
            last.sort_by(|a, b| a.id.cmp(&b.id));
        }
        last
    }
}
