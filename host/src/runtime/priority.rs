//! Scheduling priority of the threads that run guests: short requests first.
//!
//! A guest that keeps running past [`LONG_RUN`] is a long job (a spinning handler, a big
//! memset, a slow model); on a thread that allows it, its thread drops to the kernel's
//! idle class (`SCHED_IDLE`, falling back to nice 19) for the rest of its life, so any
//! short request of any tenant preempts it at once, while it still gets every cycle nobody
//! else wants. Measured on 2 cores (docs/benchmarks.md, "Hostile neighbour"): a tenant's
//! echo next to two plain CPU hogs has its p99 at ~3.8x quiet when the hogs are
//! `SCHED_IDLE`, ~6x at nice 19, and far worse at normal priority.
//!
//! An unprivileged thread cannot raise its priority back, so the switch is one way: the
//! guest-thread pool retires a demoted thread after its job and starts a fresh one
//! (`serving::executor`). Threads that must never be demoted (the async workers, which
//! sometimes run small guests inline) simply never allow it.

use std::cell::Cell;
use std::time::Duration;

/// How long a guest runs before its thread is demoted (when the thread allows it).
pub const LONG_RUN: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Demotion {
    /// This thread keeps its priority whatever it runs.
    Never,
    /// A long run demotes this thread.
    Allowed,
    /// This thread has been demoted.
    Done,
}

thread_local! {
    static DEMOTION: Cell<Demotion> = const { Cell::new(Demotion::Never) };
}

/// Lets a long guest run demote the calling thread (see the module doc).
pub fn allow_demotion_of_this_thread() {
    DEMOTION.with(|d| {
        if d.get() == Demotion::Never {
            d.set(Demotion::Allowed);
        }
    });
}

/// Whether a long run would demote the calling thread (allowed, not yet done).
pub fn this_thread_may_be_demoted() -> bool {
    DEMOTION.with(|d| d.get() == Demotion::Allowed)
}

/// CPU time the calling thread has used (zero where the platform cannot tell).
pub fn this_threads_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Whether the calling thread has been demoted.
pub fn this_thread_is_demoted() -> bool {
    DEMOTION.with(|d| d.get() == Demotion::Done)
}

/// Demotes the calling thread if it allows it; called when a guest on it has used
/// [`LONG_RUN`] of CPU.
pub(super) fn long_run_on_this_thread() {
    DEMOTION.with(|d| {
        if d.get() == Demotion::Allowed {
            lower_this_thread_to_idle();
            d.set(Demotion::Done);
        }
    });
}

/// Moves the calling thread to the idle scheduling class for good (`SCHED_IDLE` where the
/// platform has it, else nice 19). Any thread may lower its own priority.
pub fn lower_this_thread_to_idle() {
    DEMOTION.with(|d| d.set(Demotion::Done));
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` only reads `param`, a valid local; pid 0 is the
        // calling thread.
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if result == 0 {
            return;
        }
        let me = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(me), 19) {
            tracing::warn!("cannot lower a guest thread's priority: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_threads_that_allow_it_are_demoted_and_the_rest_keep_their_priority() {
        std::thread::spawn(|| {
            long_run_on_this_thread();
            assert!(!this_thread_is_demoted(), "not allowed: kept");
            allow_demotion_of_this_thread();
            assert!(!this_thread_is_demoted());
            long_run_on_this_thread();
            assert!(this_thread_is_demoted());
            #[cfg(target_os = "linux")]
            {
                // SAFETY: reads the calling thread's policy; no pointers involved.
                let policy = unsafe { libc::sched_getscheduler(0) };
                assert_eq!(policy, libc::SCHED_IDLE);
            }
        })
        .join()
        .expect("the demoted thread ran to the end");
    }
}
