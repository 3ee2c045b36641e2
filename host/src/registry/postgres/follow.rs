//! The follower: streams every change other nodes (and this one) make to the metadata, in
//! revision order. `LISTEN` on the outbox's channel is only a hint to look now; every
//! [`CATCH_UP`] the follower reads the outbox after the last revision it has seen anyway, so
//! a lost notification or a lost connection (the database restarted) only delays a change,
//! never loses it. A node that fell further behind than the outbox keeps, or that finds the
//! revision lower than it saw (the database was restored from an older backup), is told
//! [`Change::Everything`].
//!
//! Bound: a change is applied within [`CATCH_UP`] plus one query after it commits, while
//! the database is reachable (usually at once, on the notification).

use super::outbox::{CHANNEL, RETENTION_SECS};
use super::{storage, PostgresRegistry};
use crate::registry::{Change, RegistryError};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the follower reads the outbox without a notification.
pub const CATCH_UP: Duration = Duration::from_secs(1);
/// Most changes read per query.
const PAGE: i64 = 1000;
/// Most changes one catch-up reads; a node further behind reloads everything.
const MOST_CHANGES: i64 = 20 * PAGE;
/// Batches of changes waiting for the node to apply them (the follower waits beyond).
const QUEUE: usize = 64;
/// How often (in catch-up rounds) a follower prunes the outbox.
const PRUNE_EVERY: u64 = 300;

impl PostgresRegistry {
    /// Starts following the outbox from the current revision (call before reading the
    /// state the changes apply to, so that nothing falls between). The batches arrive in
    /// revision order; the follower stops when the receiver is dropped.
    pub fn follow(&self) -> Result<mpsc::Receiver<Vec<Change>>, RegistryError> {
        let seen: i64 = self.run(|pool| async move {
            sqlx::query_scalar("SELECT revision FROM revision WHERE id = 1")
                .fetch_one(&pool)
                .await
                .map_err(storage)
        })?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        self.bridge
            .handle()
            .spawn(run(self.pool.clone(), seen, sender));
        Ok(receiver)
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let connect = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(listener)) => Some(listener),
        Ok(Err(e)) => {
            tracing::debug!("metadata follower: cannot listen yet: {e}");
            None
        }
        Err(_) => None,
    }
}

async fn run(pool: PgPool, mut seen: i64, sender: mpsc::Sender<Vec<Change>>) {
    let mut listener: Option<PgListener> = None;
    let mut failing = false;
    for round in 1u64.. {
        if listener.is_none() {
            listener = listen(&pool).await;
        }
        match listener.as_mut() {
            Some(l) => match tokio::time::timeout(CATCH_UP, l.recv()).await {
                Ok(Ok(_)) => while l.next_buffered().is_some() {},
                Ok(Err(e)) => {
                    tracing::debug!("metadata follower: notifications lost: {e}");
                    listener = None;
                    tokio::time::sleep(CATCH_UP).await;
                }
                Err(_) => {}
            },
            None => tokio::time::sleep(CATCH_UP).await,
        }
        match catch_up(&pool, seen).await {
            Ok((batch, now)) => {
                if failing {
                    tracing::info!(revision = now, "metadata follower caught up again");
                    failing = false;
                }
                seen = now;
                if !batch.is_empty() && sender.send(batch).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        revision = seen,
                        "metadata follower cannot read the outbox (retrying every second): {e}"
                    );
                    failing = true;
                }
            }
        }
        if sender.is_closed() {
            return;
        }
        if round % PRUNE_EVERY == 0 {
            let pruned =
                sqlx::query("DELETE FROM changes WHERE at < now() - make_interval(secs => $1)")
                    .bind(RETENTION_SECS as f64)
                    .execute(&pool)
                    .await;
            if let Err(e) = pruned {
                tracing::debug!("metadata follower: cannot prune the outbox: {e}");
            }
        }
    }
}

/// The changes after revision `seen`, and the revision they reach.
async fn catch_up(pool: &PgPool, seen: i64) -> Result<(Vec<Change>, i64), sqlx::Error> {
    let current: i64 = sqlx::query_scalar("SELECT revision FROM revision WHERE id = 1")
        .fetch_one(pool)
        .await?;
    if current == seen {
        return Ok((Vec::new(), seen));
    }
    let oldest: Option<i64> = sqlx::query_scalar("SELECT min(revision) FROM changes")
        .fetch_one(pool)
        .await?;
    if current < seen
        || current - seen > MOST_CHANGES
        || oldest.is_none_or(|oldest| oldest > seen + 1)
    {
        tracing::warn!(
            seen,
            current,
            "metadata follower fell behind the outbox's history; reloading everything"
        );
        return Ok((vec![Change::Everything], current));
    }
    let mut changes = Vec::new();
    let mut reached = seen;
    while reached < current {
        let rows: Vec<(i64, String, String, String, Option<i64>)> = sqlx::query_as(
            "SELECT revision, kind, tenant, name, version FROM changes \
             WHERE revision > $1 AND revision <= $2 ORDER BY revision LIMIT $3",
        )
        .bind(reached)
        .bind(current)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last().map(|row| row.0) else {
            break;
        };
        reached = last;
        changes.extend(rows.into_iter().map(|(_, kind, tenant, name, version)| {
            Change::from_row(
                &kind,
                tenant,
                name,
                version.and_then(|v| u64::try_from(v).ok()),
            )
        }));
    }
    Ok((changes, current))
}
