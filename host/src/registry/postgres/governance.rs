//! Governance's stores on PostgreSQL, for cluster mode (see `governance::shared`): an
//! endpoint's gateway settings and a tenant's quotas (each write also goes in the outbox,
//! so every node's follower reloads them), usage minutes summed by every node with additive
//! upserts, and the audit log. The rate limits' shared state is in [`super::rate_limits`].
//! Schema: `host/migrations/0002_governance.sql`.

use super::bridge::Bridge;
use super::{outbox, PostgresRegistry};
use crate::governance::audit::AuditEntry;
use crate::governance::shared::{AuditStore, UsageStore};
use crate::governance::usage::{Counters, UsageFilter, UsageKey, UsageRow};
use crate::governance::{GatewayConfig, GovernanceError, PolicyStore, SharedStores, TenantQuotas};
use crate::registry::Change;
use sqlx::PgPool;
use std::sync::Arc;

/// Governance's tables in the metadata database; shares the registry's pool and runtime.
#[derive(Clone)]
pub struct PgGovernance {
    pub(super) pool: PgPool,
    pub(super) bridge: Arc<Bridge>,
}

pub(super) fn gov_error(e: impl std::fmt::Display) -> GovernanceError {
    GovernanceError::Store(e.to_string())
}

/// A counter as the database stores it (`bigint`; saturates, a count never gets there).
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

impl PostgresRegistry {
    /// Governance's stores in this database (cluster mode).
    pub fn governance(&self) -> SharedStores {
        let store = Arc::new(PgGovernance {
            pool: self.pool.clone(),
            bridge: self.bridge.clone(),
        });
        SharedStores {
            policies: store.clone(),
            usage: store.clone(),
            audit: store.clone(),
            limits: store,
        }
    }
}

impl PgGovernance {
    /// Runs `query` on the store's runtime and waits for it.
    pub(super) fn run<T, F>(&self, query: impl FnOnce(PgPool) -> F) -> Result<T, GovernanceError>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>> + Send,
        T: Send,
    {
        self.bridge.run(query(self.pool.clone())).map_err(gov_error)
    }
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, GovernanceError> {
    serde_json::from_str(text).map_err(gov_error)
}

impl PolicyStore for PgGovernance {
    fn gateways(&self) -> Result<Vec<(String, String, GatewayConfig)>, GovernanceError> {
        let rows: Vec<(String, String, String)> = self.run(|pool| async move {
            sqlx::query_as("SELECT tenant, endpoint, config::text FROM gateways")
                .fetch_all(&pool)
                .await
        })?;
        rows.into_iter()
            .map(|(t, e, c)| Ok((t, e, decode(&c)?)))
            .collect()
    }

    fn gateway(
        &self,
        tenant: &str,
        endpoint: &str,
    ) -> Result<Option<GatewayConfig>, GovernanceError> {
        let row: Option<String> = self.run(|pool| async move {
            sqlx::query_scalar(
                "SELECT config::text FROM gateways WHERE tenant = $1 AND endpoint = $2",
            )
            .bind(tenant)
            .bind(endpoint)
            .fetch_optional(&pool)
            .await
        })?;
        row.map(|c| decode(&c)).transpose()
    }

    /// Stores the config, forgets the endpoint's rate-limit state (its buckets start full)
    /// and tells the other nodes, in one transaction.
    fn put_gateway(
        &self,
        tenant: &str,
        endpoint: &str,
        config: &GatewayConfig,
    ) -> Result<(), GovernanceError> {
        let value = (*config != GatewayConfig::default())
            .then(|| serde_json::to_string(config))
            .transpose()
            .map_err(gov_error)?;
        self.run(|pool| async move {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM gateways WHERE tenant = $1 AND endpoint = $2")
                .bind(tenant)
                .bind(endpoint)
                .execute(&mut *tx)
                .await?;
            if let Some(value) = &value {
                sqlx::query(
                    "INSERT INTO gateways (tenant, endpoint, config) VALUES ($1, $2, $3::jsonb)",
                )
                .bind(tenant)
                .bind(endpoint)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM rate_limits WHERE tenant = $1 AND endpoint = $2")
                .bind(tenant)
                .bind(endpoint)
                .execute(&mut *tx)
                .await?;
            let change = Change::Gateway {
                tenant: tenant.into(),
                name: endpoint.into(),
            };
            outbox::record(&mut tx, &[change]).await?;
            tx.commit().await
        })
    }

    fn quotas(&self) -> Result<Vec<(String, TenantQuotas)>, GovernanceError> {
        let rows: Vec<(String, String)> = self.run(|pool| async move {
            sqlx::query_as("SELECT tenant, quotas::text FROM quotas")
                .fetch_all(&pool)
                .await
        })?;
        rows.into_iter()
            .map(|(t, q)| Ok((t, decode(&q)?)))
            .collect()
    }

    fn tenant_quotas(&self, tenant: &str) -> Result<Option<TenantQuotas>, GovernanceError> {
        let row: Option<String> = self.run(|pool| async move {
            sqlx::query_scalar("SELECT quotas::text FROM quotas WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&pool)
                .await
        })?;
        row.map(|q| decode(&q)).transpose()
    }

    fn put_quotas(&self, tenant: &str, quotas: &TenantQuotas) -> Result<(), GovernanceError> {
        let value = (*quotas != TenantQuotas::default())
            .then(|| serde_json::to_string(quotas))
            .transpose()
            .map_err(gov_error)?;
        self.run(|pool| async move {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM quotas WHERE tenant = $1")
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
            if let Some(value) = &value {
                sqlx::query("INSERT INTO quotas (tenant, quotas) VALUES ($1, $2::jsonb)")
                    .bind(tenant)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
            }
            let change = Change::Quotas {
                tenant: tenant.into(),
            };
            outbox::record(&mut tx, &[change]).await?;
            tx.commit().await
        })
    }
}

/// The columns of a batch of usage rows, for one `UNNEST` upsert.
#[derive(Default)]
struct Columns {
    minute: Vec<i64>,
    tenant: Vec<String>,
    endpoint: Vec<String>,
    entity: Vec<String>,
    token: Vec<String>,
    counts: [Vec<i64>; 7],
}

impl Columns {
    fn push(&mut self, key: &UsageKey, c: &Counters) {
        self.minute.push(to_i64(key.minute));
        self.tenant.push(key.tenant.clone());
        self.endpoint.push(key.endpoint.clone());
        self.entity.push(key.entity.clone());
        self.token.push(key.token.clone());
        let values = [
            c.requests,
            c.errors,
            c.input_bytes,
            c.output_bytes,
            c.wall_time_us,
            c.fuel,
            c.fuel_measured,
        ];
        for (column, value) in self.counts.iter_mut().zip(values) {
            column.push(to_i64(value));
        }
    }
}

/// Each node adds its counts to the same rows; rows are sorted so that two nodes flushing
/// at once lock them in the same order (no deadlock).
const ADD_USAGE: &str = "INSERT INTO usage_minutes AS u (minute, tenant, endpoint, entity, \
    token, requests, errors, input_bytes, output_bytes, wall_time_us, fuel, fuel_measured) \
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
    $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
    $12::bigint[]) \
    ON CONFLICT (minute, tenant, endpoint, entity, token) DO UPDATE SET \
    requests = u.requests + excluded.requests, errors = u.errors + excluded.errors, \
    input_bytes = u.input_bytes + excluded.input_bytes, \
    output_bytes = u.output_bytes + excluded.output_bytes, \
    wall_time_us = u.wall_time_us + excluded.wall_time_us, fuel = u.fuel + excluded.fuel, \
    fuel_measured = u.fuel_measured + excluded.fuel_measured";

type UsageDbRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

impl UsageStore for PgGovernance {
    fn add(&self, rows: &[(UsageKey, Counters)]) -> Result<(), GovernanceError> {
        let mut sorted: Vec<&(UsageKey, Counters)> = rows.iter().collect();
        sorted.sort_by(|(a, _), (b, _)| {
            (a.minute, &a.tenant, &a.endpoint, &a.entity, &a.token).cmp(&(
                b.minute,
                &b.tenant,
                &b.endpoint,
                &b.entity,
                &b.token,
            ))
        });
        let mut columns = Columns::default();
        for (key, counters) in sorted {
            columns.push(key, counters);
        }
        self.run(|pool| async move {
            let [requests, errors, input, output, wall, fuel, measured] = columns.counts;
            sqlx::query(ADD_USAGE)
                .bind(columns.minute)
                .bind(columns.tenant)
                .bind(columns.endpoint)
                .bind(columns.entity)
                .bind(columns.token)
                .bind(requests)
                .bind(errors)
                .bind(input)
                .bind(output)
                .bind(wall)
                .bind(fuel)
                .bind(measured)
                .execute(&pool)
                .await
                .map(|_| ())
        })
    }

    fn read(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, GovernanceError> {
        let from = to_i64(filter.from_ms / 60_000);
        let to = to_i64(filter.to_ms.div_ceil(60_000));
        let (tenant, endpoint) = (filter.tenant.clone(), filter.endpoint.clone());
        let rows: Vec<UsageDbRow> = self.run(|pool| async move {
            sqlx::query_as(
                "SELECT minute, tenant, endpoint, entity, token, requests, errors, \
                 input_bytes, output_bytes, wall_time_us, fuel, fuel_measured \
                 FROM usage_minutes WHERE minute >= $1 AND minute < $2 \
                 AND ($3::text IS NULL OR tenant = $3) AND ($4::text IS NULL OR endpoint = $4) \
                 ORDER BY minute, tenant COLLATE \"C\", endpoint COLLATE \"C\", \
                 entity COLLATE \"C\", token COLLATE \"C\"",
            )
            .bind(from)
            .bind(to)
            .bind(tenant)
            .bind(endpoint)
            .fetch_all(&pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(|r| UsageRow {
                minute_start_ms: to_u64(r.0).saturating_mul(60_000),
                tenant: r.1,
                endpoint: r.2,
                served_entity: r.3,
                token_id: r.4,
                counters: Counters {
                    requests: to_u64(r.5),
                    errors: to_u64(r.6),
                    input_bytes: to_u64(r.7),
                    output_bytes: to_u64(r.8),
                    wall_time_us: to_u64(r.9),
                    fuel: to_u64(r.10),
                    fuel_measured: to_u64(r.11),
                },
            })
            .collect())
    }
}

impl AuditStore for PgGovernance {
    fn append(&self, entry: &AuditEntry) -> Result<(), GovernanceError> {
        let value = serde_json::to_string(entry).map_err(gov_error)?;
        let at = to_i64(entry.timestamp_ms);
        self.run(|pool| async move {
            sqlx::query("INSERT INTO audit (timestamp_ms, entry) VALUES ($1, $2::jsonb)")
                .bind(at)
                .bind(value)
                .execute(&pool)
                .await
                .map(|_| ())
        })
    }

    fn read(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), GovernanceError> {
        // One more than asked: whether more were left out.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows: Vec<String> = self.run(|pool| async move {
            sqlx::query_scalar(
                "SELECT entry::text FROM audit WHERE timestamp_ms >= $1 AND timestamp_ms < $2 \
                 ORDER BY timestamp_ms, id LIMIT $3",
            )
            .bind(to_i64(from_ms))
            .bind(to_i64(to_ms))
            .bind(fetch)
            .fetch_all(&pool)
            .await
        })?;
        let truncated = rows.len() > limit;
        let entries = rows
            .iter()
            .take(limit)
            .map(|text| decode(text))
            .collect::<Result<_, _>>()?;
        Ok((entries, truncated))
    }
}
