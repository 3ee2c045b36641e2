//! The record stores ([`TenantStore`](super::TenantStore), [`TokenStore`](super::TokenStore),
//! [`ImageStore`](super::ImageStore), [`EndpointStore`](super::EndpointStore)) on PostgreSQL,
//! for cluster mode: several nodes share one database. Same semantics as the sled registry:
//! each record is a JSONB value of the same serde record next to its key columns, every
//! write that spans several rows is one transaction, and foreign keys make "the tenant must
//! exist when a record is written" hold against a concurrent deletion of the tenant.
//!
//! Every write also records what it changed in the outbox and bumps the metadata revision
//! in the same transaction ([`outbox`]); [`PostgresRegistry::follow`] streams the changes to
//! this node (LISTEN/NOTIFY as a hint, catch-up by revision every second). The traits are
//! synchronous; the queries run on the store's own runtime ([`bridge`]).
//!
//! Governance shares the database in cluster mode ([`PostgresRegistry::governance`]):
//! gateway settings and quotas, usage, the audit log ([`governance`]) and the rate limits'
//! state ([`rate_limits`]).

mod bridge;
mod endpoints;
mod follow;
mod governance;
mod images;
mod nodes;
mod outbox;
mod rate_limits;
mod secret;
mod tenants;

pub use governance::PgGovernance;
pub use nodes::PgMembership;

use super::RegistryError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Connections each node keeps at most.
const MAX_CONNECTIONS: u32 = 8;
/// How long a query waits for a connection (the database down: the request fails then).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after finding the database unreachable store calls fail at once (503)
/// instead of each waiting [`ACQUIRE_TIMEOUT`] for a connection; the heartbeat and the
/// follower keep trying meanwhile, and the first call after it tries again.
const UNREACHABLE_FOR: Duration = Duration::from_secs(1);

/// Counter of the store calls (each one query or one transaction) made for requests.
pub const CALLS_METRIC: &str = "sandserve_metadata_calls_total";

/// The PostgreSQL-backed registry.
pub struct PostgresRegistry {
    pool: PgPool,
    bridge: Arc<bridge::Bridge>,
    /// Until when calls fail at once (the database was found unreachable).
    unreachable_until: Mutex<Option<Instant>>,
}

fn storage(e: impl Cause) -> RegistryError {
    if e.unreachable() {
        RegistryError::Unavailable(e.to_string())
    } else {
        RegistryError::Storage(e.to_string())
    }
}

/// An error a store call can fail with, and whether it means the database cannot be
/// reached (worth a retry later: 503) rather than a failure of the call itself (500).
trait Cause: std::fmt::Display {
    fn unreachable(&self) -> bool {
        false
    }
}

impl Cause for sqlx::Error {
    fn unreachable(&self) -> bool {
        match self {
            Self::PoolTimedOut
            | Self::PoolClosed
            | Self::Io(_)
            | Self::Tls(_)
            | Self::WorkerCrashed
            | Self::Protocol(_) => true,
            // Class 08: connection exception; 57P01-57P03: shut down, crashed, starting.
            Self::Database(db) => db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            _ => false,
        }
    }
}

impl Cause for String {}
impl Cause for &str {}
impl Cause for std::io::Error {}
impl Cause for serde_json::Error {}

/// A database error of a write into `tenant`, with the violations the schema reports read
/// as what they mean: a foreign key violation is the tenant missing, a unique violation
/// the record (`kind` `name`) existing already.
fn write_error(e: sqlx::Error, kind: &'static str, name: &str, tenant: &str) -> RegistryError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_foreign_key_violation() {
            return RegistryError::NotFound {
                kind: "tenant",
                name: tenant.to_string(),
            };
        }
        if db.is_unique_violation() {
            return RegistryError::AlreadyExists {
                kind,
                name: name.to_string(),
            };
        }
    }
    storage(e)
}

fn encode<T: Serialize>(value: &T) -> Result<String, RegistryError> {
    serde_json::to_string(value).map_err(storage)
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, RegistryError> {
    serde_json::from_str(text).map_err(storage)
}

/// The record a lookup by key found, decoded; `missing()` when it found none.
fn found<T: DeserializeOwned>(
    row: Option<String>,
    missing: impl FnOnce() -> RegistryError,
) -> Result<T, RegistryError> {
    row.map_or_else(|| Err(missing()), |text| decode(&text))
}

fn decode_all<T: DeserializeOwned>(rows: Vec<String>) -> Result<Vec<T>, RegistryError> {
    rows.iter().map(|text| decode(text)).collect()
}

/// A version as the database stores it (`bigint`).
fn to_db(version: u64) -> Result<i64, RegistryError> {
    i64::try_from(version).map_err(|_| RegistryError::NotFound {
        kind: "model version",
        name: version.to_string(),
    })
}

impl PostgresRegistry {
    /// Connects to `url` (`postgres://...`) and brings the schema up to date (migrations
    /// in `host/migrations/`, applied once however many nodes start at the same time).
    pub fn connect(url: &str) -> Result<Self, RegistryError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(storage(
                "the metadata URL is not a PostgreSQL URL (postgres://...)",
            ));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| storage(format!("the metadata URL is not a PostgreSQL URL: {e}")))?
            .application_name("sandserve");
        let bridge = Arc::new(bridge::Bridge::new().map_err(storage)?);
        let pool = bridge.run(async move {
            let pool = PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(storage)?;
            sqlx::migrate!("./migrations")
                .run(&pool)
                .await
                .map_err(|e| storage(format!("migrating the metadata schema: {e}")))?;
            Ok::<_, RegistryError>(pool)
        })?;
        metrics::describe_counter!(
            CALLS_METRIC,
            "Calls into the metadata database (each one query or transaction) made for requests."
        );
        Ok(Self {
            pool,
            bridge,
            unreachable_until: Mutex::new(None),
        })
    }

    /// Runs `query` with the pool on the store's runtime and waits for it.
    fn run<T, F>(&self, query: impl FnOnce(PgPool) -> F) -> Result<T, RegistryError>
    where
        F: std::future::Future<Output = Result<T, RegistryError>> + Send,
        T: Send,
    {
        let now = Instant::now();
        let until = *self
            .unreachable_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if until.is_some_and(|until| now < until) {
            return Err(RegistryError::Unavailable(
                "the database was unreachable a moment ago".into(),
            ));
        }
        metrics::counter!(CALLS_METRIC).increment(1);
        let result = self.bridge.run(query(self.pool.clone()));
        let mut until = self
            .unreachable_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *until = match &result {
            Err(RegistryError::Unavailable(_)) => Some(Instant::now() + UNREACHABLE_FOR),
            _ => None,
        };
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_is_not_postgres_is_refused_without_connecting() {
        let Err(e) = PostgresRegistry::connect("mysql://localhost/x") else {
            panic!("a MySQL URL was accepted");
        };
        assert!(e.to_string().contains("PostgreSQL URL"), "{e}");
    }
}
