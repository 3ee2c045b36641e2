//! Applying the metadata changes of the cluster on this node: the PostgreSQL store's
//! follower streams every [`Change`] (other nodes' and this one's), and each is applied to
//! what this node keeps in memory: a token or tenant change drops the cached token records
//! (the next request reads them again, so a revoked token is refused), an endpoint change
//! brings the live table in step with the record, a deleted model version stops being
//! served directly, and an unshared one stops being served by other tenants' endpoints;
//! a gateway or quota change is read again into governance's live gates; an admin change
//! drops the cached admin credential. Applying a change twice is harmless, so this node's
//! own writes need no special case.

use crate::governance::Governance;
use crate::registry::Change;
use crate::serving::EndpointManager;
use crate::tenancy::Directory;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Applies each batch of `changes` as it arrives, until the stream ends. Call within a
/// Tokio runtime.
pub fn apply_changes(
    mut changes: mpsc::Receiver<Vec<Change>>,
    directory: Arc<Directory>,
    endpoints: Arc<EndpointManager>,
    governance: Arc<Governance>,
) {
    tokio::spawn(async move {
        while let Some(batch) = changes.recv().await {
            let (directory, endpoints) = (directory.clone(), endpoints.clone());
            let governance = governance.clone();
            // Applying reads records (blocking calls into the store).
            let applied = tokio::task::spawn_blocking(move || {
                for change in &batch {
                    apply(change, &directory, &endpoints);
                    apply_governance(change, &governance);
                }
            })
            .await;
            if let Err(e) = applied {
                tracing::error!("applying metadata changes failed: {e}");
            }
        }
    });
}

fn apply(change: &Change, directory: &Directory, endpoints: &Arc<EndpointManager>) {
    tracing::debug!(?change, "metadata change");
    match change {
        Change::Token { token_id } => directory.forget_cached_token(token_id),
        Change::Tenant { name } => directory.forget_cached_tenant(name),
        Change::Image {
            tenant,
            name,
            version,
        } => {
            endpoints.release_direct(tenant, name, *version);
            // Its sharing may have changed: other tenants' endpoints stop if unshared.
            endpoints.recheck_shared(tenant, name, *version);
        }
        Change::Endpoint { tenant, name } => {
            if let Err(e) = endpoints.apply_remote_change(tenant, name) {
                tracing::warn!(
                    tenant,
                    endpoint = name,
                    "cannot follow an endpoint change: {e}"
                );
            }
        }
        Change::Admin => directory.forget_cached_admin(),
        // Governance's changes are applied by `apply_governance`.
        Change::Gateway { .. } | Change::Quotas { .. } => {}
        Change::Everything => {
            directory.forget_all_cached();
            if let Err(e) = endpoints.refresh_all() {
                tracing::warn!("cannot reload the endpoints: {e}");
            }
        }
    }
}

/// What a change means for governance: the gateway or quotas read again (a tenant deleted
/// takes its quotas with it; everything reloads after falling behind).
fn apply_governance(change: &Change, governance: &Governance) {
    let reloaded = match change {
        Change::Gateway { tenant, name } => governance.reload_gateway(tenant, name),
        Change::Quotas { tenant } | Change::Tenant { name: tenant } => {
            governance.reload_quotas(tenant)
        }
        Change::Everything => governance.reload_all(),
        _ => Ok(()),
    };
    if let Err(e) = reloaded {
        tracing::warn!(?change, "cannot follow a governance change: {e}");
    }
}
