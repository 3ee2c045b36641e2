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
//! ([`cpu_for_others`], [`take_cpu_for_others`]). The share of the batch's CPU spent on a
//! follower's rows is that follower's: the batcher hands it over with the follower's
//! answer ([`charge_cpu_from_others`]), and the runtime and the pool add it to the
//! follower's own run ([`cpu_from_others`], [`take_cpu_from_others`]), so that a tenant
//! is charged for its rows whichever tenant's thread ran them.
//!
//! The tenant of the call ([`TenantScope`], [`current_tenant`]) is what a batch counts to
//! tell a batch of one tenant's requests from one that mixes tenants (a shared model
//! version) and whose statistics a graph's run goes to; it is set by the guest-thread pool
//! for each job it runs, and around a request run inline on an async worker.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static CPU_FOR_OTHERS: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static CPU_FROM_OTHERS: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static TENANT: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Publishes the tenant of the job running on this thread until dropped (then restores
/// the one before).
pub struct TenantScope {
    before: Option<Arc<str>>,
}

impl TenantScope {
    /// Sets `tenant` as this thread's.
    pub fn enter(tenant: Arc<str>) -> Self {
        Self {
            before: TENANT.with(|t| t.replace(Some(tenant))),
        }
    }
}

impl Drop for TenantScope {
    fn drop(&mut self) {
        let before = self.before.take();
        TENANT.with(|t| *t.borrow_mut() = before);
    }
}

/// The tenant of the job running on this thread, if the pool set one.
pub fn current_tenant() -> Option<Arc<str>> {
    TENANT.with(|t| t.borrow().clone())
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
        CPU_FROM_OTHERS.with(|c| c.set(Duration::ZERO));
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

/// Records that another thread (a batch leader) spent `cpu` on this call's rows.
pub fn charge_cpu_from_others(cpu: Duration) {
    CPU_FROM_OTHERS.with(|c| c.set(c.get().saturating_add(cpu)));
}

/// CPU other threads spent on this thread's rows since the current (or last) call began.
pub fn cpu_from_others() -> Duration {
    CPU_FROM_OTHERS.with(Cell::get)
}

/// Like [`cpu_from_others`], and starts counting again from zero.
pub fn take_cpu_from_others() -> Duration {
    CPU_FROM_OTHERS.with(|c| c.replace(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_restore_what_was_there_before() {
        assert_eq!(current_tenant(), None);
        {
            let _a = TenantScope::enter("a".into());
            {
                let _b = TenantScope::enter("b".into());
                assert_eq!(current_tenant().as_deref(), Some("b"));
            }
            assert_eq!(current_tenant().as_deref(), Some("a"));
        }
        assert_eq!(current_tenant(), None);
    }

    #[test]
    fn cpu_charged_by_others_is_counted_and_taken() {
        let _scope = DeadlineScope::enter(Instant::now() + Duration::from_secs(1));
        charge_cpu_from_others(Duration::from_millis(3));
        charge_cpu_from_others(Duration::from_millis(4));
        assert_eq!(cpu_from_others(), Duration::from_millis(7));
        assert_eq!(take_cpu_from_others(), Duration::from_millis(7));
        assert_eq!(cpu_from_others(), Duration::ZERO);
    }
}
