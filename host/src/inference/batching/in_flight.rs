//! Which requests may still join a batch. A batch's leader waits up to the graph's delay
//! for company; when every request of the image version that is running has already
//! joined a batch (or had its `compute` answered), nobody else can come, and waiting on is
//! pure latency: at concurrency 1 a lone request would wait out the whole delay. So the
//! serving layer counts each admitted request of an image in every batched graph of it
//! ([`InFlight`], from `GraphSet::requests_started`) until the request ends or its first
//! `compute` of that graph is answered, and the batcher sends a batch as soon as all the
//! requests it counts are in batches (`Batcher::everyone_joined`).
//!
//! The request's counts reach the wasi-nn call through the thread that runs its guest
//! ([`InFlightScope`]), as its deadline does (`runtime::call_scope`). A request the
//! batcher does not know (none counted) changes nothing: batches wait out their delay.

use super::queue::Batcher;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

thread_local! {
    static CURRENT: RefCell<RequestInFlight> = RefCell::new(RequestInFlight::default());
}

/// One request counted in one batcher until it ends or its `compute` there is answered.
pub struct InFlight {
    batcher: Arc<Batcher>,
    done: AtomicBool,
}

impl InFlight {
    /// Counts a request in `batcher`.
    pub(crate) fn start(batcher: Arc<Batcher>) -> Arc<Self> {
        batcher.in_flight.fetch_add(1, Ordering::AcqRel);
        Arc::new(Self {
            batcher,
            done: AtomicBool::new(false),
        })
    }

    /// The request will not join a batch of this graph any more (counted down once).
    fn answered(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.batcher.one_less_in_flight();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.answered();
    }
}

/// A request's counts in the batched graphs of its image (empty when none batches).
#[derive(Clone, Default)]
pub struct RequestInFlight(pub(crate) Vec<Arc<InFlight>>);

/// Publishes a request's counts on the thread running its guest until dropped.
pub struct InFlightScope {
    before: RequestInFlight,
}

impl InFlightScope {
    /// Sets `request`'s counts as this thread's.
    pub fn enter(request: &RequestInFlight) -> Self {
        Self {
            before: CURRENT.with(|c| c.replace(request.clone())),
        }
    }
}

impl Drop for InFlightScope {
    fn drop(&mut self) {
        let before = std::mem::take(&mut self.before);
        CURRENT.with(|c| *c.borrow_mut() = before);
    }
}

/// The request running on this thread had a `compute` of `batcher`'s graph answered.
pub(super) fn answered_here(batcher: &Arc<Batcher>) {
    CURRENT.with(|c| {
        for count in c.borrow().0.iter() {
            if Arc::ptr_eq(&count.batcher, batcher) {
                count.answered();
            }
        }
    });
}
