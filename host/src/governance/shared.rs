//! Governance shared by the nodes of a cluster: the stores that replace the node's own sled
//! database when the metadata is in PostgreSQL ([`SharedStores`]: gateway settings and
//! quotas, usage, the audit log, the rate limits' state), and what a node does with them:
//!
//! - **admission**: an endpoint's rate limits are checked against the shared state, one
//!   database statement per limit of an endpoint that has limits ([`SharedLimits`]), so N
//!   calls a minute means N across the cluster; the database unreachable refuses the call
//!   with [`Refusal::Unavailable`] (503), it never admits everything. Endpoints without
//!   limits never reach the database;
//! - **following**: another node's change to a gateway or to quotas reaches this node as a
//!   metadata change, and [`Governance::reload_gateway`] / [`Governance::reload_quotas`]
//!   read the stored settings again into the live [`Gate`]s.
//!
//! A tenant's concurrent-request quota stays counted per node (the running queries of a
//! node are in its memory).

use super::gateway::{GatewayConfig, RateKey, TenantQuotas};
use super::limits::Refusal;
use super::usage::{Counters, UsageFilter, UsageKey, UsageRow};
use super::{audit::AuditEntry, Gate, Governance, GovernanceError, PolicyStore, TenantGate};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for the shared rate-limit state; past it the call is refused (503).
pub const LIMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where usage minutes are summed.
pub trait UsageStore: Send + Sync {
    /// Adds each row's counters to what is stored under its key.
    fn add(&self, rows: &[(UsageKey, Counters)]) -> Result<(), GovernanceError>;
    /// The stored rows `filter` selects, oldest first.
    fn read(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, GovernanceError>;
}

/// Where audit entries are appended.
pub trait AuditStore: Send + Sync {
    /// Appends `entry`.
    fn append(&self, entry: &AuditEntry) -> Result<(), GovernanceError>;
    /// Entries from `from_ms` (inclusive) to `to_ms` (exclusive), oldest first, at most
    /// `limit`, and whether more were left out.
    fn read(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), GovernanceError>;
}

/// One rate limit's bucket for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// The endpoint's tenant.
    pub tenant: String,
    /// The endpoint.
    pub endpoint: String,
    /// Which limit of the endpoint (its position, key and calls).
    pub limit: String,
    /// The caller's token id for a per-user limit, empty for the endpoint's.
    pub caller: String,
    /// Calls per minute (at least 1).
    pub calls: u32,
}

/// The rate limits' state shared by every node (GCRA: a limit of N calls a minute admits
/// a burst of N, then one more every 60/N seconds).
#[async_trait]
pub trait SharedLimits: Send + Sync {
    /// Takes one call from `bucket`: `None` when admitted, else how long until a call
    /// would be.
    async fn take(&self, bucket: Bucket) -> Result<Option<Duration>, GovernanceError>;
    /// Drops state that means the same as none (full buckets).
    fn prune(&self) -> Result<(), GovernanceError>;
}

/// One node: no shared state (its rate limits are its own buckets).
pub(super) struct NoSharedLimits;

#[async_trait]
impl SharedLimits for NoSharedLimits {
    async fn take(&self, _: Bucket) -> Result<Option<Duration>, GovernanceError> {
        Ok(None)
    }

    fn prune(&self) -> Result<(), GovernanceError> {
        Ok(())
    }
}

/// The stores of governance in cluster mode. Storing an endpoint's gateway settings also
/// forgets its rate limits' state (the buckets start full, as on one node).
#[derive(Clone)]
pub struct SharedStores {
    /// Gateway settings and quotas (writes also tell the other nodes).
    pub policies: Arc<dyn PolicyStore>,
    /// Usage minutes.
    pub usage: Arc<dyn UsageStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
    /// The rate limits' state.
    pub limits: Arc<dyn SharedLimits>,
}

impl Governance {
    /// Checks `gate`'s rate limits against the shared state, the caller's own limits first
    /// (as the node-local buckets do).
    pub(super) async fn admit_shared(
        limits: &dyn SharedLimits,
        gate: &Gate,
        tenant: &str,
        endpoint: &str,
        user: &str,
    ) -> Result<(), Refusal> {
        let mut ordered: Vec<(usize, &super::RateLimit)> =
            gate.config.rate_limits.iter().enumerate().collect();
        ordered.sort_by_key(|(_, l)| l.key != RateKey::User);
        for (index, limit) in ordered {
            let refused = |retry_after| Refusal::RateLimited {
                calls: limit.calls,
                key: limit.key.as_str(),
                retry_after,
            };
            if limit.calls == 0 {
                return Err(refused(Duration::from_secs(60)));
            }
            let bucket = Bucket {
                tenant: tenant.to_string(),
                endpoint: endpoint.to_string(),
                limit: format!("{index}:{}:{}", limit.key.as_str(), limit.calls),
                caller: match limit.key {
                    RateKey::User => user.to_string(),
                    RateKey::Endpoint => String::new(),
                },
                calls: limit.calls,
            };
            match tokio::time::timeout(LIMIT_TIMEOUT, limits.take(bucket)).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(wait))) => return Err(refused(wait)),
                Ok(Err(e)) => {
                    tracing::warn!(tenant, endpoint, "rate limit state unreachable: {e}");
                    return Err(Refusal::Unavailable);
                }
                Err(_) => {
                    tracing::warn!(tenant, endpoint, "rate limit state did not answer in time");
                    return Err(Refusal::Unavailable);
                }
            }
        }
        Ok(())
    }

    /// Reads an endpoint's stored gateway settings again (another node changed them); the
    /// live gate is replaced only when they differ.
    pub fn reload_gateway(&self, tenant: &str, endpoint: &str) -> Result<(), GovernanceError> {
        let stored = self.policies.gateway(tenant, endpoint)?.unwrap_or_default();
        let mut gates = self.gates.write().unwrap_or_else(|p| p.into_inner());
        let of_tenant = gates.entry(tenant.to_string()).or_default();
        if stored == GatewayConfig::default() {
            of_tenant.remove(endpoint);
        } else if of_tenant.get(endpoint).is_none_or(|g| g.config != stored) {
            of_tenant.insert(endpoint.to_string(), Arc::new(Gate::new(stored)));
        }
        Ok(())
    }

    /// Reads a tenant's stored quotas again (another node changed them); its running
    /// queries keep counting.
    pub fn reload_quotas(&self, tenant: &str) -> Result<(), GovernanceError> {
        let stored = self.policies.tenant_quotas(tenant)?.unwrap_or_default();
        self.replace_quotas(tenant, stored);
        Ok(())
    }

    /// Reads every gateway and quota again (this node fell behind the change history).
    pub fn reload_all(&self) -> Result<(), GovernanceError> {
        let stored = self.policies.gateways()?;
        let quotas = self.policies.quotas()?;
        {
            let mut gates = self.gates.write().unwrap_or_else(|p| p.into_inner());
            let mut fresh = super::Gates::new();
            for (tenant, endpoint, config) in stored {
                let kept = gates
                    .get(&tenant)
                    .and_then(|of| of.get(&endpoint))
                    .filter(|g| g.config == config)
                    .cloned();
                let gate = kept.unwrap_or_else(|| Arc::new(Gate::new(config)));
                fresh.entry(tenant).or_default().insert(endpoint, gate);
            }
            *gates = fresh;
        }
        let names: Vec<String> = {
            let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
            tenants.keys().cloned().collect()
        };
        for name in names {
            if !quotas.iter().any(|(t, _)| *t == name) {
                self.replace_quotas(&name, TenantQuotas::default());
            }
        }
        for (tenant, q) in quotas {
            self.replace_quotas(&tenant, q);
        }
        Ok(())
    }

    /// Sets a tenant's live quotas, keeping its running-query count.
    pub(super) fn replace_quotas(&self, tenant: &str, quotas: TenantQuotas) {
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let in_flight = tenants
            .get(tenant)
            .map(|t| t.in_flight.clone())
            .unwrap_or_default();
        tenants.insert(
            tenant.to_string(),
            Arc::new(TenantGate { quotas, in_flight }),
        );
    }
}
