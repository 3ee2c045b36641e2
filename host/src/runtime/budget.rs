//! The server-wide memory budget: one count of the bytes that tenants' work holds at once,
//! so that many requests, each within its own limits, cannot together exhaust the host.
//!
//! Guest linear memories are charged as they grow (the store's limiter asks the budget
//! before every `memory.grow`, the initial size included) and given back when the sandbox
//! is dropped; request parsing and answer encoding reserve what they will use before they
//! start. Whatever cannot be charged fails at once and is answered 503 with Retry-After
//! (the server is busy, not the request wrong), instead of the host running out of memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A byte budget shared by everything that holds tenant-driven memory.
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// A budget nothing exhausts (local tools and tests that do not exercise it).
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX)
    }

    /// Its size, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Charges `bytes` if they fit; false (and nothing charged) when they do not.
    pub fn try_charge(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` charged earlier.
    pub fn release(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Reserves `bytes` until the returned reservation is dropped; `None` when they do not
    /// fit now.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.try_charge(bytes).then(|| Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes held from a [`MemoryBudget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `more` bytes as well; false (nothing changed) when they do not fit.
    pub fn grow(&mut self, more: usize) -> bool {
        let fits = self.budget.try_charge(more);
        if fits {
            self.bytes += more;
        }
        fits
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// The default budget: three quarters of the machine's memory (`MemTotal`), or 4 GiB when
/// that cannot be read.
pub fn default_budget_bytes() -> usize {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok())
        });
    total_kib.map_or(4 << 30, |kib| kib.saturating_mul(1024) / 4 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_or_fail_whole_and_reservations_give_back() {
        let budget = MemoryBudget::new(100);
        assert!(budget.try_charge(60));
        assert!(!budget.try_charge(41), "over the limit: nothing charged");
        assert_eq!(budget.used(), 60);
        {
            let mut held = budget.reserve(40).expect("fits exactly");
            assert!(!held.grow(1));
            assert_eq!(held.bytes(), 40);
            assert!(budget.reserve(1).is_none());
        }
        assert_eq!(budget.used(), 60);
        budget.release(60);
        assert_eq!(budget.used(), 0);
        assert!(MemoryBudget::unlimited().try_charge(usize::MAX));
    }
}
