//! Where a request's sandbox runs: inline on the async worker that parsed the request, or
//! on one of the guest threads.
//!
//! Handing a call to a guest thread and its result back costs two thread wake-ups. When
//! the server is otherwise idle those wake-ups are most of a small model's latency (a
//! sleeping thread, often on a sleeping CPU, has to be woken twice), and blocking the async
//! worker for a few microseconds costs nobody anything. Under load it is the other way
//! round: the guest threads keep the sandboxes' working set apart from the network's and
//! win on throughput, and a blocked worker would delay other connections. So a request
//! runs inline only when all of these hold:
//!
//! - no other request's guest is running at normal priority in this server right now
//!   ([`Occupancy`]; guests of heavy tenants run in the idle scheduling class and yield the CPU to an
//!   inline run at once, and requests waiting for a guest thread use no CPU);
//! - its entity has proven fast: its last run took less than [`InlinePolicy::max_run`]
//!   (1 ms unless configured; zero turns inline runs off), and it has not
//!   been demoted (a run of it passed the inline budget or its timeout) in the last
//!   [`DEMOTION`];
//! - its input tensors (and raw body, for handlers that take it) hold at most
//!   [`MAX_INLINE_INPUT_BYTES`] (a large batch can make even a fast model slow inside its
//!   engine call, where no deadline can stop it).
//!
//! An inline run gets a short deadline, [`INLINE_BUDGET`]. A guest that runs into it is
//! stopped and the request runs again, from the start, on a guest thread with what is left
//! of its timeout; its entity is demoted. Running a request twice is safe because a sandbox
//! has no side effects: it is created fresh, reaches no files, network or shared state, and
//! is thrown away. So a slow or hostile guest holds an async worker for at most the budget
//! (plus one engine call) once per demotion period.
//!
//! A guest that makes a blocking WASI call (writing to stdout or stderr, sleeping, polling)
//! cannot run on an async worker at all: wasmtime-wasi drives such calls with the
//! runtime's `block_on`, which panics there. The inline run catches that, the request runs
//! again on a guest thread, and its entity never runs inline again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When requests may run inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlinePolicy {
    /// A run (instantiate + predict) shorter than this proves its entity fast; zero means
    /// never inline.
    pub max_run: Duration,
}

impl Default for InlinePolicy {
    fn default() -> Self {
        Self {
            max_run: Duration::from_millis(1),
        }
    }
}
/// Deadline of an inline run; past it the request moves to a guest thread.
pub const INLINE_BUDGET: Duration = Duration::from_millis(10);
/// Largest total input tensor size that may run inline.
pub const MAX_INLINE_INPUT_BYTES: usize = 64 * 1024;
/// How long an entity that ran slow stays on the guest threads.
pub const DEMOTION: Duration = Duration::from_secs(30);

/// Where one request ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the async worker that parsed it.
    Inline,
    /// On a guest thread.
    GuestThread,
    /// Inline first, then, past the inline budget, again on a guest thread.
    InlineThenGuestThread,
}

impl Placement {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inline => "inline",
            Self::GuestThread => "guest-thread",
            Self::InlineThenGuestThread => "inline-then-guest-thread",
        }
    }
}

/// Requests whose guest runs at normal priority right now: inline, or on a guest thread
/// that is not in the idle scheduling class. Guests waiting for a thread, and guests of
/// heavy tenants (in the idle class, `runtime::priority`), do not compete for the CPU with
/// a short request run inline, so they do not count.
#[derive(Debug, Default)]
pub struct Occupancy(AtomicUsize);

impl Occupancy {
    /// Counts the caller in until the returned guard drops.
    pub fn enter(&self) -> InSandbox<'_> {
        let before = self.0.fetch_add(1, Ordering::AcqRel);
        InSandbox {
            occupancy: self,
            alone: before == 0,
        }
    }
}

/// One request's presence in a sandbox; leaves on drop.
pub struct InSandbox<'a> {
    occupancy: &'a Occupancy,
    alone: bool,
}

impl InSandbox<'_> {
    /// True when no other request's guest was running at normal priority as this one
    /// entered.
    pub fn alone(&self) -> bool {
        self.alone
    }
}

impl Drop for InSandbox<'_> {
    fn drop(&mut self) {
        self.occupancy.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Milliseconds since the first call in this process (a monotonic clock in one word, for
/// intervals; `registry::unix_millis` is the wall clock for stored timestamps).
pub fn now_millis() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What an entity's runs have shown about its speed.
#[derive(Debug)]
pub struct RunHistory {
    policy: InlinePolicy,
    proven_fast: AtomicBool,
    demoted_until_ms: AtomicU64,
    /// Set for good once a run showed the handler making a blocking WASI call, which
    /// cannot run on an async worker.
    never_inline: AtomicBool,
}

impl RunHistory {
    /// No runs yet: not proven fast.
    pub fn new(policy: InlinePolicy) -> Self {
        Self {
            policy,
            proven_fast: AtomicBool::new(false),
            demoted_until_ms: AtomicU64::new(0),
            never_inline: AtomicBool::new(false),
        }
    }

    /// True when a request of this entity may run inline at `now_ms`.
    pub fn inline_allowed(&self, now_ms: u64) -> bool {
        self.proven_fast.load(Ordering::Relaxed)
            && now_ms >= self.demoted_until_ms.load(Ordering::Relaxed)
            && !self.never_inline.load(Ordering::Relaxed)
    }

    /// Keeps the entity on the guest threads for good.
    pub fn never_inline(&self) {
        self.never_inline.store(true, Ordering::Relaxed);
    }

    /// Records a completed run that took `run` (instantiate + predict): the entity may run
    /// inline while its last run was fast.
    pub fn record(&self, run: Duration) {
        self.proven_fast
            .store(run < self.policy.max_run, Ordering::Relaxed);
    }

    /// Keeps the entity on the guest threads for [`DEMOTION`] from `now_ms`.
    pub fn demote(&self, now_ms: u64) {
        let until = now_ms.saturating_add(u64::try_from(DEMOTION.as_millis()).unwrap_or(u64::MAX));
        self.demoted_until_ms.fetch_max(until, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unproven_entity_runs_on_guest_threads() {
        let history = RunHistory::new(InlinePolicy::default());
        assert!(!history.inline_allowed(0));
        assert!(!history.inline_allowed(1_000_000));
    }

    #[test]
    fn the_last_run_decides() {
        let history = RunHistory::new(InlinePolicy::default());
        history.record(Duration::from_micros(40));
        assert!(history.inline_allowed(5));
        history.record(Duration::from_millis(3));
        assert!(!history.inline_allowed(5));
        history.record(Duration::from_micros(40));
        assert!(history.inline_allowed(5));
    }

    #[test]
    fn a_demotion_lasts_the_demotion_period() {
        let history = RunHistory::new(InlinePolicy::default());
        history.record(Duration::from_micros(40));
        history.demote(1_000);
        let period = DEMOTION.as_millis() as u64;
        assert!(!history.inline_allowed(1_000));
        assert!(!history.inline_allowed(1_000 + period - 1));
        assert!(history.inline_allowed(1_000 + period));
    }

    #[test]
    fn fast_runs_during_a_demotion_do_not_end_it() {
        let history = RunHistory::new(InlinePolicy::default());
        history.record(Duration::from_micros(40));
        history.demote(100);
        history.record(Duration::from_micros(40));
        assert!(!history.inline_allowed(200));
    }

    #[test]
    fn a_zero_limit_never_allows_inline() {
        let history = RunHistory::new(InlinePolicy {
            max_run: Duration::ZERO,
        });
        history.record(Duration::ZERO);
        assert!(!history.inline_allowed(0));
    }

    #[test]
    fn a_slow_first_run_does_not_prove_the_entity() {
        let history = RunHistory::new(InlinePolicy::default());
        history.record(Duration::from_millis(20));
        assert!(!history.inline_allowed(0));
    }

    #[test]
    fn only_the_first_of_overlapping_requests_is_alone() {
        let occupancy = Occupancy::default();
        let first = occupancy.enter();
        let second = occupancy.enter();
        assert!(first.alone());
        assert!(!second.alone());
        drop(first);
        drop(second);
        assert!(occupancy.enter().alone(), "both left");
    }

    #[test]
    fn placements_have_log_names() {
        assert_eq!(Placement::Inline.as_str(), "inline");
        assert_eq!(Placement::GuestThread.as_str(), "guest-thread");
        assert_eq!(
            Placement::InlineThenGuestThread.as_str(),
            "inline-then-guest-thread"
        );
    }
}
