//! Spare sandboxes: after answering a request, an entity instantiates the sandbox its next
//! request will use, so creating the store and instantiating the component (10-20 us of a
//! small model's request in the server) happen while the client reads the answer instead of
//! while it waits for it.
//!
//! A spare is fresh: no request has run in it. Each entity keeps at most one, and the
//! server at most [`SpareBudget`]'s share of its sandbox slots; a spare holds a slot and its
//! memory until it is used, its entity goes away, or it has sat unused for
//! [`SPARE_IDLE_LIMIT`] (the server sweeps every [`SPARE_SWEEP_INTERVAL`]), so entities
//! that stopped getting requests give their share to the ones that still do.

use crate::runtime::{ReadySandbox, RuntimeError};
use std::time::Duration;

/// How long a spare may sit unused before the sweep releases it.
pub const SPARE_IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How often the server looks for idle spares.
pub const SPARE_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How many spares the whole server may hold.
#[derive(Debug)]
pub struct SpareBudget {
    max: usize,
    held: AtomicUsize,
}

impl SpareBudget {
    /// At most one spare per eight sandbox slots, so spares never crowd out requests.
    pub fn for_slots(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            max: slots / 8,
            held: AtomicUsize::new(0),
        })
    }

    /// Spares held right now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Reserves room for one spare, if the budget allows.
    fn reserve(self: &Arc<Self>) -> Option<Reservation> {
        let before = self.held.fetch_add(1, Ordering::AcqRel);
        let reservation = Reservation {
            budget: self.clone(),
        };
        (before < self.max).then_some(reservation)
    }
}

/// One unit of the budget, given back on drop.
#[derive(Debug)]
struct Reservation {
    budget: Arc<SpareBudget>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A spare, when it was made, and the budget unit it holds.
struct Held<S> {
    sandbox: S,
    made_at_ms: u64,
    _reservation: Reservation,
}

/// An entity's spare sandbox slot (generic so that its rules can be tested without a guest).
pub struct Spare<S = ReadySandbox> {
    budget: Arc<SpareBudget>,
    slot: Mutex<Option<Held<S>>>,
}

impl<S> Spare<S> {
    /// An empty slot drawing on `budget`.
    pub fn new(budget: Arc<SpareBudget>) -> Self {
        Self {
            budget,
            slot: Mutex::new(None),
        }
    }

    /// Takes the spare, if there is one.
    pub fn take(&self) -> Option<S> {
        let held = self.lock().take()?;
        Some(held.sandbox)
    }

    /// Makes a spare with `make` at `now_ms` unless there is one already or the budget is
    /// spent. A failure only means the next request instantiates its own sandbox.
    pub fn refill(&self, now_ms: u64, make: impl FnOnce() -> Result<S, RuntimeError>) {
        if self.lock().is_some() {
            return;
        }
        let Some(reservation) = self.budget.reserve() else {
            return;
        };
        match make() {
            Ok(sandbox) => {
                let mut slot = self.lock();
                if slot.is_none() {
                    *slot = Some(Held {
                        sandbox,
                        made_at_ms: now_ms,
                        _reservation: reservation,
                    });
                }
            }
            Err(e) => tracing::debug!("no spare sandbox: {e}"),
        }
    }

    /// Releases the spare if it was made more than `idle_limit` before `now_ms`; true when
    /// one was released.
    pub fn release_if_idle(&self, now_ms: u64, idle_limit: Duration) -> bool {
        let limit = u64::try_from(idle_limit.as_millis()).unwrap_or(u64::MAX);
        let mut slot = self.lock();
        let idle = slot
            .as_ref()
            .is_some_and(|held| now_ms.saturating_sub(held.made_at_ms) > limit);
        if idle {
            *slot = None;
        }
        idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held<S>>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_an_eighth_of_the_slots_and_given_back_on_drop() {
        let budget = SpareBudget::for_slots(16);
        let first = budget.reserve().expect("room for one");
        let second = budget.reserve().expect("room for two");
        assert!(budget.reserve().is_none(), "a third is over budget");
        assert_eq!(budget.held(), 2);
        drop(first);
        assert_eq!(budget.held(), 1);
        let third = budget.reserve().expect("room again");
        drop((second, third));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn few_slots_mean_no_spares() {
        let budget = SpareBudget::for_slots(7);
        assert!(budget.reserve().is_none());
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_failed_refill_holds_nothing() {
        let budget = SpareBudget::for_slots(64);
        let spare: Spare<u32> = Spare::new(budget.clone());
        spare.refill(0, || Err(RuntimeError::Exhausted("test".into())));
        assert!(spare.take().is_none());
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn one_spare_per_entity_within_the_budget() {
        let budget = SpareBudget::for_slots(16);
        let spares: Vec<Spare<u32>> = (0..3).map(|_| Spare::new(budget.clone())).collect();
        for (i, spare) in spares.iter().enumerate() {
            spare.refill(0, || Ok(i as u32));
            spare.refill(0, || Ok(99));
        }
        assert_eq!(budget.held(), 2, "the third entity is over budget");
        assert_eq!(
            spares[0].take(),
            Some(0),
            "the second refill kept the first spare"
        );
        assert_eq!(spares[2].take(), None);
        assert_eq!(budget.held(), 1, "a taken spare gives its unit back");
        spares[2].refill(5, || Ok(7));
        assert_eq!(spares[2].take(), Some(7));
    }

    #[test]
    fn an_idle_spare_is_released_and_its_budget_given_back() {
        let budget = SpareBudget::for_slots(8);
        let spare: Spare<u32> = Spare::new(budget.clone());
        spare.refill(1_000, || Ok(1));
        let limit = Duration::from_secs(60);
        assert!(
            !spare.release_if_idle(61_000, limit),
            "exactly at the limit: kept"
        );
        assert_eq!(budget.held(), 1);
        assert!(spare.release_if_idle(61_001, limit));
        assert_eq!(budget.held(), 0);
        assert_eq!(spare.take(), None);
        assert!(
            !spare.release_if_idle(200_000, limit),
            "nothing left to release"
        );
    }
}
