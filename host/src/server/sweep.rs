//! Cluster mode: when to look for endpoint updates orphaned by a node that stopped
//! (`serving/orphans.rs` does the looking). Once at start-up (this node's own updates from
//! before a restart count as orphaned), then whenever a node drops out of this node's view of
//! the membership (checked every [`CHECK_EVERY`] from memory: no query) and for the next
//! two checks (the database's view of the lease may lag this node's by a heartbeat), and
//! every [`FULL_EVERY`] anyway. The decision that a node is gone is the database's: only the
//! nodes whose lease has run out there count. Bound: an update is failed within the lease
//! (5 s) plus about [`CHECK_EVERY`] of its node's death.

use crate::cluster::Membership;
use crate::registry::postgres::PgMembership;
use crate::serving::EndpointManager;
use std::sync::Arc;
use std::time::Duration;

/// How often the membership is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the records are swept with no node seen leaving.
pub const FULL_EVERY: Duration = Duration::from_secs(30);

/// Fails the updates this node ran before it started again; call once at start-up, before
/// the node accepts requests.
pub fn at_start(lease: &PgMembership, endpoints: &EndpointManager) {
    endpoints.run_updates_as(lease.self_id());
    sweep(lease, endpoints, true);
}

fn sweep(lease: &PgMembership, endpoints: &EndpointManager, restarted: bool) {
    let failed = lease
        .live_ids()
        .map_err(crate::serving::ServingError::from)
        .and_then(|live| endpoints.fail_orphaned_updates(&live, restarted));
    match failed {
        Ok(0) => {}
        Ok(n) => tracing::info!(failed = n, "failed endpoint updates of nodes that stopped"),
        Err(e) => tracing::warn!("cannot look for updates of nodes that stopped: {e}"),
    }
}

/// Watches the membership in the background. Call within a Tokio runtime.
pub fn watch(lease: Arc<PgMembership>, endpoints: Arc<EndpointManager>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let full_every = FULL_EVERY.as_secs() / CHECK_EVERY.as_secs().max(1);
        let mut known: Vec<String> = Vec::new();
        let (mut again, mut since_full) = (0u32, 0u64);
        loop {
            ticks.tick().await;
            let now: Vec<String> = lease.live_nodes().into_iter().map(|n| n.id).collect();
            if known.iter().any(|id| !now.contains(id)) {
                again = 3;
            }
            known = now;
            since_full += 1;
            if again == 0 && since_full < full_every {
                continue;
            }
            again = again.saturating_sub(1);
            since_full = 0;
            let (lease, endpoints) = (lease.clone(), endpoints.clone());
            let swept = tokio::task::spawn_blocking(move || sweep(&lease, &endpoints, false));
            if let Err(e) = swept.await {
                tracing::error!("the sweep for orphaned updates failed: {e}");
            }
        }
    });
}
