//! The outbox: each write transaction ends by bumping the metadata revision and recording
//! what it changed, one row per [`Change`], then `NOTIFY`s the followers (PostgreSQL
//! delivers the notification only when, and if, the transaction commits).
//!
//! The bump is an `UPDATE` of the single `revision` row, whose lock the transaction holds
//! until it commits: write transactions take their revisions in commit order, so a follower
//! that has read every change up to revision `r` can never later miss one numbered below
//! `r`. Metadata writes are rare (uploads, token and endpoint changes); serialising their
//! last step costs nothing the request path sees.

use super::storage;
use crate::registry::{Change, RegistryError};
use sqlx::{PgConnection, Postgres, Transaction};

/// The channel the followers listen on; the payload is the new revision.
pub(super) const CHANNEL: &str = "sandserve_metadata";

/// How long the outbox keeps a change; a node further behind reloads everything.
pub(super) const RETENTION_SECS: i64 = 3600;

/// Records `changes` in the outbox and commits `tx`: how every write ends.
pub(super) async fn commit(
    mut tx: Transaction<'_, Postgres>,
    changes: &[Change],
) -> Result<(), RegistryError> {
    record(&mut tx, changes).await.map_err(storage)?;
    tx.commit().await.map_err(storage)
}

/// Records `changes` as the transaction's last step (see the module comment).
pub(super) async fn record(tx: &mut PgConnection, changes: &[Change]) -> Result<(), sqlx::Error> {
    let count = i64::try_from(changes.len()).unwrap_or(i64::MAX);
    let last: i64 = sqlx::query_scalar(
        "UPDATE revision SET revision = revision + $1 WHERE id = 1 RETURNING revision",
    )
    .bind(count)
    .fetch_one(&mut *tx)
    .await?;
    let first = last - count + 1;
    for (revision, change) in (first..).zip(changes) {
        let (tenant, name, version) = change.columns();
        sqlx::query(
            "INSERT INTO changes (revision, kind, tenant, name, version) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(revision)
        .bind(change.kind())
        .bind(tenant)
        .bind(name)
        .bind(version.and_then(|v| i64::try_from(v).ok()))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(last.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}
