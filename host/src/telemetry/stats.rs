//! Inference counters per model version: requests that succeeded and failed, and where
//! their time went (waiting for a slot, decoding the request, running the handler,
//! encoding the answer). Counters are atomics updated on the request path without a
//! lock; the table of versions is locked only to find or add a version's counters.
//!
//! The counters live as long as the server, not as long as a loaded image (a version
//! released after idling and loaded again keeps counting on); deleting a version drops
//! them. They start at zero when the server starts.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and the nanoseconds spent, for one stage of a request.
#[derive(Debug, Default)]
struct Stage {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Stage {
    fn record(&self, spent: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StageSnapshot {
        StageSnapshot {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

/// The counters of one model version.
#[derive(Debug, Default)]
pub struct ModelStats {
    success: Stage,
    fail: Stage,
    queue: Stage,
    compute_input: Stage,
    compute_infer: Stage,
    compute_output: Stage,
    last_inference_ms: AtomicU64,
}

/// A stage's count and total nanoseconds, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StageSnapshot {
    /// How many times it happened.
    pub count: u64,
    /// Nanoseconds spent in it, all together.
    pub ns: u64,
}

/// A model version's counters, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Requests answered, from arrival at the served entity to the encoded answer.
    pub success: StageSnapshot,
    /// Requests that failed at any stage (malformed, refused, timed out, handler error).
    pub fail: StageSnapshot,
    /// Waits for a free slot of the entity's concurrency limit.
    pub queue: StageSnapshot,
    /// Decoding request bodies into tensors.
    pub compute_input: StageSnapshot,
    /// Running the handler in its sandbox (instantiation and `predict`).
    pub compute_infer: StageSnapshot,
    /// Encoding answers.
    pub compute_output: StageSnapshot,
    /// When the last request finished, Unix epoch milliseconds (0: never).
    pub last_inference_ms: u64,
}

impl ModelStats {
    /// A request finished, successfully or not, after `spent` in all.
    pub fn request(&self, ok: bool, spent: Duration) {
        if ok { &self.success } else { &self.fail }.record(spent);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// A request waited `spent` for a slot.
    pub fn queued(&self, spent: Duration) {
        self.queue.record(spent);
    }

    /// A request body took `spent` to decode.
    pub fn decoded(&self, spent: Duration) {
        self.compute_input.record(spent);
    }

    /// The handler ran for `spent`.
    pub fn ran(&self, spent: Duration) {
        self.compute_infer.record(spent);
    }

    /// An answer took `spent` to encode.
    pub fn encoded(&self, spent: Duration) {
        self.compute_output.record(spent);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            success: self.success.snapshot(),
            fail: self.fail.snapshot(),
            queue: self.queue.snapshot(),
            compute_input: self.compute_input.snapshot(),
            compute_infer: self.compute_infer.snapshot(),
            compute_output: self.compute_output.snapshot(),
            last_inference_ms: self.last_inference_ms.load(Ordering::Relaxed),
        }
    }
}

type Key = (String, String, u64);

/// Every model version's counters, by tenant, model and version.
#[derive(Debug, Default)]
pub struct StatsTable {
    models: Mutex<HashMap<Key, Arc<ModelStats>>>,
}

impl StatsTable {
    /// The counters of `tenant/model@version`, made on first use.
    pub fn model(&self, tenant: &str, model: &str, version: u64) -> Arc<ModelStats> {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((tenant.to_string(), model.to_string(), version))
            .or_default()
            .clone()
    }

    /// The counters of `tenant/model@version` as read now (zero when it never ran).
    pub fn snapshot(&self, tenant: &str, model: &str, version: u64) -> StatsSnapshot {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.to_string(), model.to_string(), version))
            .map(|s| s.snapshot())
            .unwrap_or_default()
    }

    /// Drops a deleted version's counters.
    pub fn remove(&self, tenant: &str, model: &str, version: u64) {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(tenant.to_string(), model.to_string(), version));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_version() {
        let table = StatsTable::default();
        let stats = table.model("acme", "digits", 1);
        stats.request(true, Duration::from_nanos(50));
        stats.request(true, Duration::from_nanos(70));
        stats.request(false, Duration::from_nanos(5));
        stats.queued(Duration::from_nanos(3));
        stats.ran(Duration::from_nanos(40));
        let read = table.snapshot("acme", "digits", 1);
        assert_eq!(read.success, StageSnapshot { count: 2, ns: 120 });
        assert_eq!(read.fail, StageSnapshot { count: 1, ns: 5 });
        assert_eq!(read.queue, StageSnapshot { count: 1, ns: 3 });
        assert_eq!(read.compute_infer.count, 1);
        assert!(read.last_inference_ms > 0);
        assert_eq!(
            table.snapshot("acme", "digits", 2),
            StatsSnapshot::default()
        );
        assert_eq!(
            table.snapshot("other", "digits", 1),
            StatsSnapshot::default()
        );
        // The same counters come back for the same version.
        table
            .model("acme", "digits", 1)
            .ran(Duration::from_nanos(1));
        assert_eq!(table.snapshot("acme", "digits", 1).compute_infer.count, 2);
        table.remove("acme", "digits", 1);
        assert_eq!(
            table.snapshot("acme", "digits", 1),
            StatsSnapshot::default()
        );
    }
}
