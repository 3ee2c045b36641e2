//! What a graph's batcher counts: batched runs, the requests they answered, requests that
//! ran alone, failed batches and batches that mixed tenants.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// How much batching happened on a graph.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct BatchStatsSnapshot {
    /// Batched runs of two or more requests.
    pub batches: u64,
    /// Requests answered from such runs.
    pub batched_requests: u64,
    /// Requests that ran alone (nobody joined, or they could not be held).
    pub alone_requests: u64,
    /// Batched runs that failed as a whole (their members ran again alone).
    pub failed_batches: u64,
    /// Batched runs whose requests came from more than one tenant (a shared version).
    pub cross_tenant_batches: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) batches: AtomicU64,
    pub(super) batched_requests: AtomicU64,
    pub(super) alone_requests: AtomicU64,
    pub(super) failed_batches: AtomicU64,
    pub(super) cross_tenant_batches: AtomicU64,
}

impl Counters {
    /// What they hold now.
    pub(super) fn snapshot(&self) -> BatchStatsSnapshot {
        BatchStatsSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            batched_requests: self.batched_requests.load(Ordering::Relaxed),
            alone_requests: self.alone_requests.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            cross_tenant_batches: self.cross_tenant_batches.load(Ordering::Relaxed),
        }
    }
}
