//! Governance: what the AI gateway and the admin set on queries, and what is recorded
//! about them. [`Governance`] owns
//!
//! - the gateway settings per endpoint (rate limits, usage tracking, inference table;
//!   `gateway.rs`) and the quotas per tenant, stored behind [`PolicyStore`] and kept
//!   live in memory as [`Gate`]s for the query path;
//! - admission on the query path (`limits.rs`: token buckets, concurrent-query quota);
//! - the usage ledger (`usage.rs`), the inference tables (`tables.rs`) and the audit log
//!   (`audit.rs`);
//! - in cluster mode, the same in PostgreSQL, shared by every node (`shared.rs`: the
//!   stores, cluster-wide rate limits, following the other nodes' changes).
//!
//! The query pipeline calls it from `serving/query/events.rs` only; the API's control
//! plane reads and sets it. Nothing on the query path touches the disk: usage is summed
//! in memory and flushed by a background thread, inference-table rows go through a
//! bounded queue to a writer thread.

pub mod audit;
pub mod gateway;
pub mod limits;
pub mod shared;
mod store;
pub mod tables;
pub mod usage;

pub use gateway::{GatewayConfig, InferenceTable, RateLimit, TenantQuotas};
pub use limits::Refusal;
pub use shared::SharedStores;
pub use store::PolicyStore;

use limits::{InFlight, RateLimits, Slot};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock, Weak};
use std::time::Instant;
use store::GovernanceDb;
use thiserror::Error;

/// A governance store failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GovernanceError {
    /// The database or the table files failed.
    #[error("governance store: {0}")]
    Store(String),
}

/// An endpoint's live gateway: its config and its rate-limit buckets.
pub struct Gate {
    /// The stored settings.
    pub config: GatewayConfig,
    limits: RateLimits,
    sampling: f64,
    usage: bool,
}

impl Gate {
    fn new(config: GatewayConfig) -> Self {
        Self {
            limits: RateLimits::new(&config),
            sampling: config.sampling(),
            usage: config.tracks_usage(),
            config,
        }
    }
}

/// A tenant's quotas and its running queries.
struct TenantGate {
    quotas: TenantQuotas,
    in_flight: Arc<InFlight>,
}

/// A query let through: what it is counted under until it ends.
pub struct Admission {
    gate: Option<Arc<Gate>>,
    _slot: Option<Slot>,
    /// When it arrived.
    pub arrived: Instant,
    /// When it arrived, Unix milliseconds.
    pub arrived_ms: u64,
}

impl Admission {
    /// Whether the endpoint records usage.
    pub fn tracks_usage(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.usage)
    }

    /// Whether this query goes to the inference table (a draw at the sampling fraction).
    pub fn sampled(&self) -> bool {
        let Some(gate) = &self.gate else {
            return false;
        };
        if gate.sampling >= 1.0 {
            return true;
        }
        if gate.sampling <= 0.0 {
            return false;
        }
        fastrand::f64() < gate.sampling
    }
}

/// How governance keeps its files.
#[derive(Debug, Clone, Default)]
pub struct GovernanceSettings {
    /// The inference tables.
    pub tables: tables::TableSettings,
}

type Gates = HashMap<String, HashMap<String, Arc<Gate>>>;

/// The governance service (see the module doc).
pub struct Governance {
    /// The node's own database (`None` in cluster mode).
    db: Option<Arc<GovernanceDb>>,
    policies: Arc<dyn PolicyStore>,
    /// Cluster mode: the rate limits' shared state.
    shared_limits: Option<Arc<dyn shared::SharedLimits>>,
    gates: RwLock<Gates>,
    tenants: RwLock<HashMap<String, Arc<TenantGate>>>,
    /// The usage ledger.
    pub usage: usage::Usage,
    /// The inference tables.
    pub tables: tables::Tables,
    /// The audit log.
    pub audit: audit::AuditLog,
}

/// The current time, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Governance {
    /// Opens the governance database (`governance/`) and the inference tables
    /// (`inference-tables/`) in `data_dir`, loads the stored gateways and quotas, and
    /// starts the usage flusher.
    pub fn open(
        data_dir: &Path,
        settings: GovernanceSettings,
    ) -> Result<Arc<Self>, GovernanceError> {
        Self::open_with(data_dir, settings, None)
    }

    /// [`Governance::open`], or in cluster mode (`shared`) with the cluster's stores in
    /// place of the node's database (the inference tables stay in `data_dir`).
    pub fn open_with(
        data_dir: &Path,
        settings: GovernanceSettings,
        shared: Option<SharedStores>,
    ) -> Result<Arc<Self>, GovernanceError> {
        let (db, stores) = match shared {
            Some(stores) => (None, stores),
            None => {
                let db = Arc::new(GovernanceDb::open(&data_dir.join("governance"))?);
                let stores = SharedStores {
                    policies: db.clone(),
                    usage: Arc::new(usage::SledUsage(db.usage.clone())),
                    audit: audit::AuditLog::sled_store(db.audit.clone()),
                    limits: Arc::new(shared::NoSharedLimits),
                };
                (Some(db), stores)
            }
        };
        let shared_limits = db.is_none().then(|| stores.limits.clone());
        let tables = tables::Tables::open(&data_dir.join("inference-tables"), settings.tables)?;
        let mut gates = Gates::new();
        for (tenant, endpoint, config) in stores.policies.gateways()? {
            gates
                .entry(tenant)
                .or_default()
                .insert(endpoint, Arc::new(Gate::new(config)));
        }
        let tenants = stores
            .policies
            .quotas()?
            .into_iter()
            .map(|(tenant, quotas)| {
                let gate = TenantGate {
                    quotas,
                    in_flight: Arc::default(),
                };
                (tenant, Arc::new(gate))
            })
            .collect();
        let governance = Arc::new(Self {
            usage: usage::Usage::with_store(stores.usage),
            audit: audit::AuditLog::with_store(stores.audit),
            policies: stores.policies,
            shared_limits,
            db,
            gates: RwLock::new(gates),
            tenants: RwLock::new(tenants),
            tables,
        });
        spawn_flusher(Arc::downgrade(&governance));
        Ok(governance)
    }

    fn gate(&self, tenant: &str, endpoint: &str) -> Option<Arc<Gate>> {
        let gates = self.gates.read().unwrap_or_else(|p| p.into_inner());
        gates.get(tenant)?.get(endpoint).cloned()
    }

    /// The query path's admission: the tenant's concurrency quota, then every rate limit
    /// of the endpoint (`user` is the caller's token id). In cluster mode the limits are
    /// checked against the shared state (a database round trip, only for an endpoint that
    /// has limits).
    pub async fn admit(
        &self,
        tenant: &str,
        endpoint: &str,
        user: &str,
    ) -> Result<Admission, Refusal> {
        let Some(shared) = &self.shared_limits else {
            return self.admit_here(tenant, endpoint, user, true);
        };
        let admission = self.admit_here(tenant, endpoint, user, false)?;
        if let Some(gate) = &admission.gate {
            if !gate.config.rate_limits.is_empty() {
                Self::admit_shared(shared.as_ref(), gate, tenant, endpoint, user).await?;
            }
        }
        Ok(admission)
    }

    /// Admission with what this node holds: the concurrency quota and, when `limits`, the
    /// node's own rate-limit buckets.
    fn admit_here(
        &self,
        tenant: &str,
        endpoint: &str,
        user: &str,
        limits: bool,
    ) -> Result<Admission, Refusal> {
        let arrived = Instant::now();
        let slot = {
            let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
            match tenants.get(tenant) {
                Some(t) => match t.quotas.max_concurrent_requests {
                    Some(max) => Some(t.in_flight.enter(max)?),
                    None => None,
                },
                None => None,
            }
        };
        let gate = self.gate(tenant, endpoint);
        if let (Some(gate), true) = (&gate, limits) {
            gate.limits.check(user)?;
        }
        Ok(Admission {
            gate,
            _slot: slot,
            arrived,
            arrived_ms: now_ms(),
        })
    }

    /// An endpoint's gateway settings (empty when none were set).
    pub fn gateway(&self, tenant: &str, endpoint: &str) -> GatewayConfig {
        self.gate(tenant, endpoint)
            .map(|g| g.config.clone())
            .unwrap_or_default()
    }

    /// Replaces an endpoint's gateway settings (its rate-limit buckets start full).
    pub fn set_gateway(
        &self,
        tenant: &str,
        endpoint: &str,
        config: GatewayConfig,
    ) -> Result<GatewayConfig, GovernanceError> {
        self.policies.put_gateway(tenant, endpoint, &config)?;
        let mut gates = self.gates.write().unwrap_or_else(|p| p.into_inner());
        let of_tenant = gates.entry(tenant.to_string()).or_default();
        if config == GatewayConfig::default() {
            of_tenant.remove(endpoint);
        } else {
            of_tenant.insert(endpoint.to_string(), Arc::new(Gate::new(config.clone())));
        }
        Ok(config)
    }

    /// Forgets a deleted endpoint's settings and deletes its inference table (an endpoint
    /// created again under the name starts with neither). Its usage stays.
    pub fn forget_endpoint(&self, tenant: &str, endpoint: &str) -> Result<(), GovernanceError> {
        self.set_gateway(tenant, endpoint, GatewayConfig::default())?;
        self.tables.remove(tenant, endpoint);
        Ok(())
    }

    /// Forgets a deleted tenant's quotas (a tenant created again under the name starts
    /// with none). Its usage stays, readable by the admin.
    pub fn forget_tenant(&self, tenant: &str) -> Result<(), GovernanceError> {
        self.policies.put_quotas(tenant, &TenantQuotas::default())?;
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        tenants.remove(tenant);
        Ok(())
    }

    /// A tenant's quotas (none set: no limits).
    pub fn quotas(&self, tenant: &str) -> TenantQuotas {
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        tenants
            .get(tenant)
            .map(|t| t.quotas.clone())
            .unwrap_or_default()
    }

    /// Replaces a tenant's quotas (queries running now keep counting).
    pub fn set_quotas(&self, tenant: &str, quotas: TenantQuotas) -> Result<(), GovernanceError> {
        self.policies.put_quotas(tenant, &quotas)?;
        self.replace_quotas(tenant, quotas);
        Ok(())
    }

    /// Writes pending usage and the database to disk (at shutdown).
    pub fn flush(&self) -> Result<(), GovernanceError> {
        self.usage.flush()?;
        self.tables.sync();
        match &self.db {
            Some(db) => db.flush(),
            None => Ok(()),
        }
    }
}

/// Flushes usage every [`usage::FLUSH_EVERY`] while the service lives; also sheds idle
/// per-user rate-limit buckets.
fn spawn_flusher(governance: Weak<Governance>) {
    let spawned = std::thread::Builder::new()
        .name("usage-flush".into())
        .spawn(move || {
            for round in 1u64.. {
                std::thread::sleep(usage::FLUSH_EVERY);
                let Some(g) = governance.upgrade() else {
                    return;
                };
                if let Err(e) = g.usage.flush() {
                    tracing::warn!("usage not flushed: {e}");
                }
                if let Some(limits) = g.shared_limits.as_ref().filter(|_| round % 30 == 0) {
                    if let Err(e) = limits.prune() {
                        tracing::debug!("rate limit state not pruned: {e}");
                    }
                }
                let gates = g.gates.read().unwrap_or_else(|p| p.into_inner());
                for gate in gates.values().flat_map(HashMap::values) {
                    gate.limits.shrink();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the usage flusher (usage is flushed on reads): {e}");
    }
}
