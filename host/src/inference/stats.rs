//! Per-graph counters: runs, time spent, and how many runs were in flight at once (the
//! proof that runs on one graph are not serialised).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Counters of one loaded graph, shared by every instance that uses it.
#[derive(Debug, Default)]
pub struct GraphStats {
    runs: AtomicU64,
    failures: AtomicU64,
    run_nanos: AtomicU64,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

/// A point-in-time copy of [`GraphStats`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GraphStatsSnapshot {
    /// Completed runs.
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Total time inside the engine, in microseconds.
    pub run_micros: u64,
    /// Runs in flight right now.
    pub active: usize,
    /// Most runs ever in flight at once.
    pub max_active: usize,
}

impl GraphStats {
    /// Marks a run as started; the returned guard marks it finished when dropped.
    pub fn start_run(&self) -> RunGuard<'_> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        RunGuard {
            stats: self,
            started: Instant::now(),
            failed: true,
        }
    }

    /// Current values.
    pub fn snapshot(&self) -> GraphStatsSnapshot {
        GraphStatsSnapshot {
            runs: self.runs.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            run_micros: self.run_nanos.load(Ordering::Relaxed) / 1_000,
            active: self.active.load(Ordering::SeqCst),
            max_active: self.max_active.load(Ordering::SeqCst),
        }
    }
}

/// Ends a run when dropped; counts it as failed unless [`RunGuard::succeeded`] was called.
pub struct RunGuard<'a> {
    stats: &'a GraphStats,
    started: Instant,
    failed: bool,
}

impl RunGuard<'_> {
    /// Marks the run as successful.
    pub fn succeeded(mut self) {
        self.failed = false;
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.run_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        if self.failed {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.active.fetch_sub(1, Ordering::SeqCst);
    }
}
