//! Serving-endpoint records on PostgreSQL. A change of an existing record is a
//! compare-and-swap ([`EndpointStore::swap_endpoint`]): the row is locked, compared with
//! what the writer read, and replaced only if it is still that; of two nodes that read the
//! same record and both write, exactly one wins and the other gets `Conflict` (409).

use super::{decode, decode_all, encode, found, outbox, storage, write_error, PostgresRegistry};
use crate::registry::{Change, EndpointRecord, EndpointStore, RegistryError};

fn missing(name: &str) -> RegistryError {
    RegistryError::NotFound {
        kind: "serving endpoint",
        name: name.to_string(),
    }
}

fn changed(endpoint: &EndpointRecord) -> Change {
    Change::Endpoint {
        tenant: endpoint.tenant.clone(),
        name: endpoint.name.clone(),
    }
}

impl PostgresRegistry {
    /// Replaces the stored record with `next` when `expected` says so: `None` replaces
    /// whatever is stored, `Some(current)` only an unchanged `current`.
    fn replace_endpoint(
        &self,
        expected: Option<&EndpointRecord>,
        next: &EndpointRecord,
    ) -> Result<(), RegistryError> {
        let value = encode(next)?;
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT record::text FROM endpoints WHERE tenant = $1 AND name = $2 FOR UPDATE",
            )
            .bind(&next.tenant)
            .bind(&next.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
            // Only over an existing record: a write that lost a race with the endpoint's
            // deletion must not bring it back.
            let Some(stored) = stored else {
                return Err(missing(&next.name));
            };
            if let Some(expected) = expected {
                let stored: EndpointRecord = decode(&stored)?;
                if &stored != expected {
                    return Err(RegistryError::Conflict(format!(
                        "serving endpoint `{}` was changed by another request meanwhile; \
                         read it again and retry",
                        next.name
                    )));
                }
            }
            sqlx::query("UPDATE endpoints SET record = $3::jsonb WHERE tenant = $1 AND name = $2")
                .bind(&next.tenant)
                .bind(&next.name)
                .bind(&value)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            outbox::commit(tx, &[changed(next)]).await
        })
    }
}

impl EndpointStore for PostgresRegistry {
    fn create_endpoint(&self, endpoint: &EndpointRecord) -> Result<(), RegistryError> {
        let value = encode(endpoint)?;
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            sqlx::query("INSERT INTO endpoints (tenant, name, record) VALUES ($1, $2, $3::jsonb)")
                .bind(&endpoint.tenant)
                .bind(&endpoint.name)
                .bind(&value)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    write_error(e, "serving endpoint", &endpoint.name, &endpoint.tenant)
                })?;
            outbox::commit(tx, &[changed(endpoint)]).await
        })
    }

    fn put_endpoint(&self, endpoint: &EndpointRecord) -> Result<(), RegistryError> {
        self.replace_endpoint(None, endpoint)
    }

    fn swap_endpoint(
        &self,
        current: &EndpointRecord,
        next: &EndpointRecord,
    ) -> Result<(), RegistryError> {
        self.replace_endpoint(Some(current), next)
    }

    fn endpoint(&self, tenant: &str, name: &str) -> Result<EndpointRecord, RegistryError> {
        let row: Option<String> = self.run(|pool| async move {
            sqlx::query_scalar("SELECT record::text FROM endpoints WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })?;
        found(row, || missing(name))
    }

    fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<EndpointRecord>, RegistryError> {
        let rows = self.run(|pool| async move {
            sqlx::query_scalar(
                "SELECT record::text FROM endpoints WHERE $1::text IS NULL OR tenant = $1 \
                 ORDER BY tenant COLLATE \"C\", name COLLATE \"C\"",
            )
            .bind(tenant)
            .fetch_all(&pool)
            .await
            .map_err(storage)
        })?;
        decode_all(rows)
    }

    fn delete_endpoint(&self, tenant: &str, name: &str) -> Result<(), RegistryError> {
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            let deleted = sqlx::query("DELETE FROM endpoints WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            if deleted.rows_affected() == 0 {
                return Err(missing(name));
            }
            let change = Change::Endpoint {
                tenant: tenant.into(),
                name: name.into(),
            };
            outbox::commit(tx, &[change]).await
        })
    }
}
