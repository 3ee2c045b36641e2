//! The cluster secret (`cluster_secret` table): 32 random bytes made by the first node that
//! finds none, then read by every node at start, the key of the seal on forwarded requests
//! (`cluster::seal`). Kept only in the database and in each node's memory: never logged,
//! never answered.

use super::{storage, PostgresRegistry};
use crate::registry::RegistryError;

/// Bytes of a newly made secret.
const SECRET_BYTES: usize = 32;

impl PostgresRegistry {
    /// The cluster's secret, made now when no node has made it yet (concurrent starts
    /// agree: the first insert wins, the others read it).
    pub fn cluster_secret(&self) -> Result<Vec<u8>, RegistryError> {
        let mut fresh = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut fresh).map_err(|e| storage(format!("random source: {e}")))?;
        self.run(|pool| async move {
            sqlx::query(
                "INSERT INTO cluster_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            )
            .bind(fresh)
            .execute(&pool)
            .await
            .map_err(storage)?;
            sqlx::query_scalar("SELECT secret FROM cluster_secret WHERE id = 1")
                .fetch_one(&pool)
                .await
                .map_err(storage)
        })
    }
}
