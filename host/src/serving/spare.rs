//! Spare sandboxes: after answering a request, an entity instantiates the sandbox its next
//! request will use, so creating the store and instantiating the component (10-20 us of a
//! small model's request in the server) happen while the client reads the answer instead of
//! while it waits for it.
//!
//! A spare is fresh: no request has run in it. Each entity keeps at most one, and the
//! server at most [`SpareBudget`]'s share of its sandbox slots (a spare holds a slot and its
//! memory until it is used or its entity goes away).

use crate::runtime::{ReadySandbox, RuntimeError};
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

/// A spare and the budget unit it holds.
struct Held {
    sandbox: ReadySandbox,
    _reservation: Reservation,
}

/// An entity's spare sandbox slot.
pub struct Spare {
    budget: Arc<SpareBudget>,
    slot: Mutex<Option<Held>>,
}

impl Spare {
    /// An empty slot drawing on `budget`.
    pub fn new(budget: Arc<SpareBudget>) -> Self {
        Self {
            budget,
            slot: Mutex::new(None),
        }
    }

    /// Takes the spare, if there is one.
    pub fn take(&self) -> Option<ReadySandbox> {
        let held = self.lock().take()?;
        Some(held.sandbox)
    }

    /// Makes a spare with `make` unless there is one already or the budget is spent.
    /// A failure only means the next request instantiates its own sandbox.
    pub fn refill(&self, make: impl FnOnce() -> Result<ReadySandbox, RuntimeError>) {
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
                        _reservation: reservation,
                    });
                }
            }
            Err(e) => tracing::debug!("no spare sandbox: {e}"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
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
        let spare = Spare::new(budget.clone());
        spare.refill(|| Err(RuntimeError::Exhausted("test".into())));
        assert!(spare.take().is_none());
        assert_eq!(budget.held(), 0);
    }
}
