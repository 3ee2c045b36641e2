//! The deadline of the guest call running on this thread, for host calls that may wait.
//!
//! A wasi-nn `compute` runs synchronously on the thread that runs the guest, and the
//! request's deadline lives in the runtime's per-request state, which wasi-nn's context
//! does not reach. The runtime therefore publishes the deadline of the call it is making in
//! a thread-local for the call's duration ([`DeadlineScope`]), and the batcher reads it
//! ([`current`]) to decide whether a request may be held for a batch.

use std::cell::Cell;
use std::time::Instant;

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Publishes a call's deadline on this thread until dropped (then restores the one
/// before, so scopes nest).
pub struct DeadlineScope {
    before: Option<Instant>,
}

impl DeadlineScope {
    /// Sets `deadline` as this thread's call deadline.
    pub fn enter(deadline: Instant) -> Self {
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
