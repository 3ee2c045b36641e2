//! The deadline of the guest call running on this thread, for host calls that may wait,
//! and the CPU this thread spent on other requests' rows during the call.
//!
//! A wasi-nn `compute` runs synchronously on the thread that runs the guest, and the
//! request's deadline lives in the runtime's per-request state, which wasi-nn's context
//! does not reach. The runtime therefore publishes the deadline of the call it is making in
//! a thread-local for the call's duration ([`DeadlineScope`]), and the batcher reads it
//! ([`current`]) to decide whether a request may be held for a batch.
//!
//! A batch runs on its leader's thread, which then spends CPU on its followers' rows. The
//! runtime tells a long run by the CPU its thread used (`runtime/priority.rs`); so that a
//! leader is not demoted for work done for others, the batcher credits that share
//! ([`credit_cpu_for_others`]) and the runtime and the guest-thread pool subtract it
//! ([`cpu_for_others`], [`take_cpu_for_others`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static CPU_FOR_OTHERS: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Publishes a call's deadline on this thread until dropped (then restores the one
/// before, so scopes nest).
pub struct DeadlineScope {
    before: Option<Instant>,
}

impl DeadlineScope {
    /// Sets `deadline` as this thread's call deadline.
    pub fn enter(deadline: Instant) -> Self {
        CPU_FOR_OTHERS.with(|c| c.set(Duration::ZERO));
        Self {
            before: DEADLINE.with(|d| d.replace(Some(deadline))),
        }
    }
}

impl Drop for DeadlineScope {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.before));
    }
}

/// The deadline of the guest call running on this thread, if the runtime set one.
pub fn current() -> Option<Instant> {
    DEADLINE.with(Cell::get)
}

/// Records that this thread spent `cpu` on other requests' rows in the current call.
pub fn credit_cpu_for_others(cpu: Duration) {
    CPU_FOR_OTHERS.with(|c| c.set(c.get().saturating_add(cpu)));
}

/// CPU this thread spent on other requests' rows since the current (or last) call began.
pub fn cpu_for_others() -> Duration {
    CPU_FOR_OTHERS.with(Cell::get)
}

/// Like [`cpu_for_others`], and starts counting again from zero (for a thread that
/// measures each job it runs).
pub fn take_cpu_for_others() -> Duration {
    CPU_FOR_OTHERS.with(|c| c.replace(Duration::ZERO))
}
