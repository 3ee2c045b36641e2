//! Model images on PostgreSQL. A model's next version is a counter row that the publishing
//! transaction increments (`INSERT ... ON CONFLICT DO UPDATE`, which locks the row): two
//! publishes of one model on two nodes get two distinct versions, in the order their
//! transactions take the row, and a version is never handed out twice nor reused.

use super::{
    decode, decode_all, encode, found, outbox, storage, to_db, write_error, PostgresRegistry,
};
use crate::blobs::Digest;
use crate::registry::records::{now_secs, ImageDraft, ImageRecord, Sharing};
use crate::registry::{Change, ImageStore, RegistryError};
use std::collections::HashSet;

fn missing_version(name: &str, version: u64) -> RegistryError {
    RegistryError::NotFound {
        kind: "model version",
        name: format!("{name}/{version}"),
    }
}

impl ImageStore for PostgresRegistry {
    fn publish_image(&self, draft: ImageDraft) -> Result<ImageRecord, RegistryError> {
        let draft = &draft;
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            // An upload authorised before its tenant was deleted must not publish into the
            // deleted (or a re-created) tenant: the image's foreign key checks it, under the
            // tenant row's share lock.
            let exists: Option<String> =
                sqlx::query_scalar("SELECT name FROM tenants WHERE name = $1 FOR KEY SHARE")
                    .bind(&draft.tenant)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(storage)?;
            if exists.is_none() {
                return Err(RegistryError::NotFound {
                    kind: "tenant",
                    name: draft.tenant.clone(),
                });
            }
            let next: i64 = sqlx::query_scalar(
                "INSERT INTO model_versions (tenant, name, next_version) VALUES ($1, $2, 2) \
                 ON CONFLICT (tenant, name) \
                 DO UPDATE SET next_version = model_versions.next_version + 1 \
                 RETURNING next_version",
            )
            .bind(&draft.tenant)
            .bind(&draft.name)
            .fetch_one(&mut *tx)
            .await
            .map_err(storage)?;
            let version = u64::try_from(next - 1)
                .map_err(|_| storage(format!("model version counter at {next}")))?;
            let record = ImageRecord {
                tenant: draft.tenant.clone(),
                name: draft.name.clone(),
                version,
                digest: draft.digest.clone(),
                size_bytes: draft.size_bytes,
                manifest: draft.manifest.clone(),
                files: draft.files.clone(),
                created_at: now_secs(),
                created_by: draft.created_by.clone(),
                sharing: None,
            };
            sqlx::query(
                "INSERT INTO images (tenant, name, version, record) VALUES ($1, $2, $3, $4::jsonb)",
            )
            .bind(&draft.tenant)
            .bind(&draft.name)
            .bind(next - 1)
            .bind(encode(&record)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                write_error(
                    e,
                    "model version",
                    &format!("{}/{version}", draft.name),
                    &draft.tenant,
                )
            })?;
            let change = Change::Image {
                tenant: draft.tenant.clone(),
                name: draft.name.clone(),
                version,
            };
            outbox::commit(tx, &[change]).await?;
            Ok(record)
        })
    }

    fn image(&self, tenant: &str, name: &str, version: u64) -> Result<ImageRecord, RegistryError> {
        let Ok(db_version) = to_db(version) else {
            return Err(missing_version(name, version));
        };
        let row: Option<String> = self.run(|pool| async move {
            sqlx::query_scalar(
                "SELECT record::text FROM images WHERE tenant = $1 AND name = $2 AND version = $3",
            )
            .bind(tenant)
            .bind(name)
            .bind(db_version)
            .fetch_optional(&pool)
            .await
            .map_err(storage)
        })?;
        found(row, || missing_version(name, version))
    }

    fn images(&self, tenant: &str, name: &str) -> Result<Vec<ImageRecord>, RegistryError> {
        let rows = self.run(|pool| async move {
            sqlx::query_scalar(
                "SELECT record::text FROM images WHERE tenant = $1 AND name = $2 ORDER BY version",
            )
            .bind(tenant)
            .bind(name)
            .fetch_all(&pool)
            .await
            .map_err(storage)
        })?;
        decode_all(rows)
    }

    fn models(&self, tenant: &str) -> Result<Vec<String>, RegistryError> {
        self.run(|pool| async move {
            sqlx::query_scalar("SELECT name FROM images WHERE tenant = $1 GROUP BY name ORDER BY name COLLATE \"C\"")
                .bind(tenant)
                .fetch_all(&pool)
                .await
                .map_err(storage)
        })
    }

    fn delete_image(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<ImageRecord, RegistryError> {
        let Ok(db_version) = to_db(version) else {
            return Err(missing_version(name, version));
        };
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            let row: Option<String> = sqlx::query_scalar(
                "DELETE FROM images WHERE tenant = $1 AND name = $2 AND version = $3 \
                 RETURNING record::text",
            )
            .bind(tenant)
            .bind(name)
            .bind(db_version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
            let Some(text) = row else {
                return Err(missing_version(name, version));
            };
            let record: ImageRecord = decode(&text)?;
            let change = Change::Image {
                tenant: tenant.into(),
                name: name.into(),
                version,
            };
            outbox::commit(tx, &[change]).await?;
            Ok(record)
        })
    }

    fn set_sharing(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
        sharing: Sharing,
    ) -> Result<ImageRecord, RegistryError> {
        let Ok(db_version) = to_db(version) else {
            return Err(missing_version(name, version));
        };
        let sharing = &sharing;
        self.run(|pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            let row: Option<String> = sqlx::query_scalar(
                "SELECT record::text FROM images WHERE tenant = $1 AND name = $2 AND version = $3 \
                 FOR UPDATE",
            )
            .bind(tenant)
            .bind(name)
            .bind(db_version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
            let Some(text) = row else {
                return Err(missing_version(name, version));
            };
            let mut record: ImageRecord = decode(&text)?;
            record.sharing = Some(sharing.clone());
            sqlx::query(
                "UPDATE images SET record = $4::jsonb \
                 WHERE tenant = $1 AND name = $2 AND version = $3",
            )
            .bind(tenant)
            .bind(name)
            .bind(db_version)
            .bind(encode(&record)?)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
            let change = Change::Image {
                tenant: tenant.into(),
                name: name.into(),
                version,
            };
            outbox::commit(tx, &[change]).await?;
            Ok(record)
        })
    }

    fn referenced_blobs(&self) -> Result<HashSet<Digest>, RegistryError> {
        let rows = self.run(|pool| async move {
            sqlx::query_scalar("SELECT record::text FROM images")
                .fetch_all(&pool)
                .await
                .map_err(storage)
        })?;
        let images: Vec<ImageRecord> = decode_all(rows)?;
        Ok(images.iter().flat_map(|i| i.blobs().cloned()).collect())
    }
}
