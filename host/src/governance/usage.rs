//! Usage per minute, per tenant, endpoint, served entity and token: requests, errors,
//! input and output bytes, wall time and guest instructions (wasmtime fuel, when the
//! server meters it). The query path adds to an in-memory map (one short mutex, no I/O);
//! a background thread merges it into the store every [`FLUSH_EVERY`]: the `usage` sled
//! tree ([`SledUsage`]) or, in cluster mode, PostgreSQL, where every node adds to the same
//! rows (see `super::shared`). A read flushes this node's first, so it sees every query this
//! node finished (and the other nodes' up to their last flush).

use super::shared::UsageStore;
use super::GovernanceError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often pending usage is written to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// What one row of usage counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    /// Unix minute (seconds / 60).
    pub minute: u64,
    /// Tenant.
    pub tenant: String,
    /// Serving endpoint.
    pub endpoint: String,
    /// Served entity.
    pub entity: String,
    /// Token id of the caller.
    pub token: String,
}

/// The counters of one minute of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Tries on the entity.
    pub requests: u64,
    /// Tries that failed.
    pub errors: u64,
    /// Request body bytes.
    pub input_bytes: u64,
    /// Answer bytes.
    pub output_bytes: u64,
    /// Wall time of the tries, microseconds.
    pub wall_time_us: u64,
    /// Guest instructions executed (wasmtime fuel), over the tries that measured it.
    pub fuel: u64,
    /// Tries whose fuel was measured (0 when the server does not meter fuel).
    pub fuel_measured: u64,
}

impl Counters {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.input_bytes += other.input_bytes;
        self.output_bytes += other.output_bytes;
        self.wall_time_us += other.wall_time_us;
        self.fuel += other.fuel;
        self.fuel_measured += other.fuel_measured;
    }
}

/// One row of a usage answer.
#[derive(Debug, Clone, Serialize)]
pub struct UsageRow {
    /// Start of the minute, Unix milliseconds.
    pub minute_start_ms: u64,
    /// Tenant.
    pub tenant: String,
    /// Serving endpoint.
    pub endpoint: String,
    /// Served entity.
    pub served_entity: String,
    /// Token id.
    pub token_id: String,
    /// The counters.
    #[serde(flatten)]
    pub counters: Counters,
}

/// Which usage to read.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    /// From this time (Unix ms, inclusive).
    pub from_ms: u64,
    /// To this time (Unix ms, exclusive).
    pub to_ms: u64,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this endpoint.
    pub endpoint: Option<String>,
}

/// The usage ledger.
pub struct Usage {
    pending: Mutex<HashMap<UsageKey, Counters>>,
    store: Arc<dyn UsageStore>,
    /// Serialises flushes (the query path never takes it).
    flushing: Mutex<()>,
}

/// Usage in a sled tree (one node).
pub struct SledUsage(pub sled::Tree);

fn encode_key(k: &UsageKey) -> Vec<u8> {
    let mut out = k.minute.to_be_bytes().to_vec();
    for (i, part) in [&k.tenant, &k.endpoint, &k.entity, &k.token]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn decode_key(bytes: &[u8]) -> Option<UsageKey> {
    let minute = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let text = std::str::from_utf8(bytes.get(8..)?).ok()?;
    let mut parts = text.split('\0').map(str::to_string);
    Some(UsageKey {
        minute,
        tenant: parts.next()?,
        endpoint: parts.next()?,
        entity: parts.next()?,
        token: parts.next()?,
    })
}

fn db_error(e: impl std::fmt::Display) -> GovernanceError {
    GovernanceError::Store(e.to_string())
}

impl Usage {
    /// A ledger over the sled `tree`.
    pub fn new(tree: sled::Tree) -> Self {
        Self::with_store(Arc::new(SledUsage(tree)))
    }

    /// A ledger over `store`.
    pub fn with_store(store: Arc<dyn UsageStore>) -> Self {
        Self {
            pending: Mutex::default(),
            store,
            flushing: Mutex::default(),
        }
    }

    /// Adds one try (the query path: memory only).
    pub fn record(&self, key: UsageKey, one: &Counters) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.entry(key).or_default().add(one);
    }

    /// Merges the pending counts into the store; when it fails they stay pending.
    pub fn flush(&self) -> Result<(), GovernanceError> {
        let _one = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if pending.is_empty() {
            return Ok(());
        }
        let rows: Vec<(UsageKey, Counters)> = pending.into_iter().collect();
        if let Err(e) = self.store.add(&rows) {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (key, counters) in rows {
                pending.entry(key).or_default().add(&counters);
            }
            return Err(e);
        }
        Ok(())
    }

    /// The rows of `filter` (flushing first), oldest first.
    pub fn read(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, GovernanceError> {
        self.flush()?;
        self.store.read(filter)
    }
}

impl UsageStore for SledUsage {
    fn add(&self, rows: &[(UsageKey, Counters)]) -> Result<(), GovernanceError> {
        for (key, counters) in rows {
            let k = encode_key(key);
            let mut total: Counters = match self.0.get(&k).map_err(db_error)? {
                Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
                None => Counters::default(),
            };
            total.add(counters);
            let v = serde_json::to_vec(&total).map_err(db_error)?;
            self.0.insert(k, v).map_err(db_error)?;
        }
        self.0.flush().map_err(db_error)?;
        Ok(())
    }

    fn read(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, GovernanceError> {
        let from = (filter.from_ms / 60_000).to_be_bytes();
        let to = filter.to_ms.div_ceil(60_000).to_be_bytes();
        let mut rows = Vec::new();
        for item in self.0.range(from..to) {
            let (k, v) = item.map_err(db_error)?;
            let Some(key) = decode_key(&k) else { continue };
            if filter.tenant.as_ref().is_some_and(|t| *t != key.tenant)
                || filter.endpoint.as_ref().is_some_and(|e| *e != key.endpoint)
            {
                continue;
            }
            let counters: Counters = serde_json::from_slice(&v).map_err(db_error)?;
            rows.push(UsageRow {
                minute_start_ms: key.minute * 60_000,
                tenant: key.tenant,
                endpoint: key.endpoint,
                served_entity: key.entity,
                token_id: key.token,
                counters,
            });
        }
        Ok(rows)
    }
}

/// `rows` as CSV text with a header line.
pub fn to_csv(rows: &[UsageRow]) -> Result<Vec<u8>, GovernanceError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "minute_start_ms",
        "tenant",
        "endpoint",
        "served_entity",
        "token_id",
        "requests",
        "errors",
        "input_bytes",
        "output_bytes",
        "wall_time_us",
        "fuel",
        "fuel_measured",
    ])
    .map_err(db_error)?;
    for r in rows {
        let c = &r.counters;
        out.write_record([
            r.minute_start_ms.to_string(),
            r.tenant.clone(),
            r.endpoint.clone(),
            r.served_entity.clone(),
            r.token_id.clone(),
            c.requests.to_string(),
            c.errors.to_string(),
            c.input_bytes.to_string(),
            c.output_bytes.to_string(),
            c.wall_time_us.to_string(),
            c.fuel.to_string(),
            c.fuel_measured.to_string(),
        ])
        .map_err(db_error)?;
    }
    out.into_inner().map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_sums_across_flushes_and_filters_by_endpoint_and_time() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let usage = Usage::new(db.open_tree("u").unwrap());
        let key = |minute, endpoint: &str| UsageKey {
            minute,
            tenant: "t".into(),
            endpoint: endpoint.into(),
            entity: "e".into(),
            token: "k".into(),
        };
        let one = Counters {
            requests: 1,
            input_bytes: 10,
            ..Counters::default()
        };
        usage.record(key(100, "a"), &one);
        usage.flush().unwrap();
        usage.record(key(100, "a"), &one);
        usage.record(key(101, "b"), &one);
        let all = usage
            .read(&UsageFilter {
                from_ms: 0,
                to_ms: u64::MAX / 2,
                ..UsageFilter::default()
            })
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].counters.requests, 2);
        assert_eq!(all[0].counters.input_bytes, 20);
        let only_b = usage
            .read(&UsageFilter {
                from_ms: 101 * 60_000,
                to_ms: 102 * 60_000,
                endpoint: Some("b".into()),
                ..UsageFilter::default()
            })
            .unwrap();
        assert_eq!(only_b.len(), 1);
        let csv = String::from_utf8(to_csv(&only_b).unwrap()).unwrap();
        assert!(csv.starts_with("minute_start_ms,"), "{csv}");
        assert!(csv.contains(",b,e,k,1,0,10,"), "{csv}");
    }
}
