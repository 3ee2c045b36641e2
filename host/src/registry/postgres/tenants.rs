//! Tenants, tokens and the admin credential on PostgreSQL.

use super::{decode, decode_all, encode, found, outbox, storage, write_error, PostgresRegistry};
use crate::registry::contents::TenantContents;
use crate::registry::records::{now_secs, TenantRecord, TokenRecord};
use crate::registry::{Change, RegistryError, TenantStore, TokenStore};

const ADMIN_KEY: &str = "admin_credential";

impl TenantStore for PostgresRegistry {
    fn create_tenant(&self, name: &str) -> Result<TenantRecord, RegistryError> {
        let record = TenantRecord {
            name: name.to_string(),
            created_at: now_secs(),
        };
        let value = encode(&record)?;
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            sqlx::query("INSERT INTO tenants (name, record) VALUES ($1, $2::jsonb)")
                .bind(name)
                .bind(&value)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error(e, "tenant", name, name))?;
            let change = Change::Tenant { name: name.into() };
            outbox::commit(tx, &[change]).await
        })?;
        Ok(record)
    }

    fn tenant(&self, name: &str) -> Result<TenantRecord, RegistryError> {
        let row: Option<String> = self.run(|pool| async move {
            sqlx::query_scalar("SELECT record::text FROM tenants WHERE name = $1")
                .bind(name)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })?;
        found(row, || RegistryError::NotFound {
            kind: "tenant",
            name: name.to_string(),
        })
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        let rows = self.run(|pool| async move {
            sqlx::query_scalar("SELECT record::text FROM tenants ORDER BY name COLLATE \"C\"")
                .fetch_all(&pool)
                .await
                .map_err(storage)
        })?;
        decode_all(rows)
    }

    fn delete_tenant(&self, name: &str) -> Result<(), RegistryError> {
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            // The row lock waits for, and then keeps out, every write that names the tenant
            // (their foreign key checks lock the row in share mode).
            let found: Option<String> =
                sqlx::query_scalar("SELECT name FROM tenants WHERE name = $1 FOR UPDATE")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(storage)?;
            if found.is_none() {
                return Err(RegistryError::NotFound {
                    kind: "tenant",
                    name: name.to_string(),
                });
            }
            let mut owned = TenantContents::default();
            let versions: Vec<(String, i64)> = sqlx::query_as(
                "SELECT name, version FROM images WHERE tenant = $1 ORDER BY name COLLATE \"C\", version",
            )
            .bind(name)
            .fetch_all(&mut *tx)
            .await
            .map_err(storage)?;
            for (model, version) in versions {
                owned.add_version(&model, u64::try_from(version).unwrap_or_default());
            }
            let endpoints: Vec<String> =
                sqlx::query_scalar("SELECT name FROM endpoints WHERE tenant = $1 ORDER BY name COLLATE \"C\"")
                    .bind(name)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(storage)?;
            owned.endpoints.extend(endpoints);
            if let Some(refused) = owned.deletion_refused(name) {
                return Err(refused);
            }
            sqlx::query("DELETE FROM tokens WHERE tenant = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            sqlx::query("DELETE FROM tenants WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            let change = Change::Tenant { name: name.into() };
            outbox::commit(tx, &[change]).await
        })
    }
}

impl TokenStore for PostgresRegistry {
    fn put_token(&self, token: &TokenRecord) -> Result<(), RegistryError> {
        let value = encode(token)?;
        let (id, tenant) = (token.token_id.as_str(), token.tenant.as_str());
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            sqlx::query("INSERT INTO tokens (token_id, tenant, record) VALUES ($1, $2, $3::jsonb)")
                .bind(id)
                .bind(tenant)
                .bind(&value)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error(e, "token", id, tenant))?;
            let change = Change::Token {
                token_id: id.into(),
            };
            outbox::commit(tx, &[change]).await
        })
    }

    fn token(&self, token_id: &str) -> Result<TokenRecord, RegistryError> {
        let row: Option<String> = self.run(|pool| async move {
            sqlx::query_scalar("SELECT record::text FROM tokens WHERE token_id = $1")
                .bind(token_id)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })?;
        found(row, || RegistryError::NotFound {
            kind: "token",
            name: token_id.to_string(),
        })
    }

    fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>, RegistryError> {
        let rows = self.run(|pool| async move {
            sqlx::query_scalar(
                "SELECT record::text FROM tokens WHERE $1::text IS NULL OR tenant = $1 \
                 ORDER BY token_id COLLATE \"C\"",
            )
            .bind(tenant)
            .fetch_all(&pool)
            .await
            .map_err(storage)
        })?;
        decode_all(rows)
    }

    fn delete_token(&self, token_id: &str) -> Result<(), RegistryError> {
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            let deleted = sqlx::query("DELETE FROM tokens WHERE token_id = $1")
                .bind(token_id)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            if deleted.rows_affected() == 0 {
                return Err(RegistryError::NotFound {
                    kind: "token",
                    name: token_id.to_string(),
                });
            }
            let change = Change::Token {
                token_id: token_id.into(),
            };
            outbox::commit(tx, &[change]).await
        })
    }

    fn set_admin_credential(&self, salt: &str, hash: &str) -> Result<(), RegistryError> {
        let value = encode(&(salt, hash))?;
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2::jsonb) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(ADMIN_KEY)
            .bind(&value)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
            outbox::commit(tx, &[Change::Admin]).await
        })
    }

    fn admin_credential(&self) -> Result<Option<(String, String)>, RegistryError> {
        let row: Option<String> = self.run(|pool| async move {
            sqlx::query_scalar("SELECT value::text FROM meta WHERE key = $1")
                .bind(ADMIN_KEY)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })?;
        row.map(|text| decode(&text)).transpose()
    }
}
