//! The server-wide cap on uploads in progress. Each upload holds disk (its archive and
//! what it unpacks to), a blocking thread and, while its handler compiles, CPU and memory;
//! past the cap a new upload is refused at once (the API answers 429 with `Retry-After`)
//! rather than queued, so that a flood of uploads holds neither connections nor disk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Default for `max_concurrent_uploads`.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 4;

/// Upload slots: at most `limit` taken at once.
#[derive(Debug)]
pub(crate) struct UploadSlots {
    taken: Arc<AtomicUsize>,
    limit: usize,
}

/// One upload's slot, given back when dropped (the upload finished, failed, or its client
/// went away).
#[derive(Debug)]
pub struct UploadSlot {
    taken: Arc<AtomicUsize>,
}

impl UploadSlots {
    /// `limit` slots (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            taken: Arc::default(),
            limit: limit.max(1),
        }
    }

    /// How many uploads may run at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A free slot, or `None` when `limit` uploads are running.
    pub fn try_take(&self) -> Option<UploadSlot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.limit).then_some(taken + 1)
            })
            .ok()
            .map(|_| UploadSlot {
                taken: self.taken.clone(),
            })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back() {
        let slots = UploadSlots::new(2);
        let a = slots.try_take().unwrap();
        let b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none(), "the third is refused");
        drop(a);
        let c = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop((b, c));
        assert_eq!(slots.taken.load(Ordering::Acquire), 0);
        assert_eq!(UploadSlots::new(0).limit(), 1, "never zero");
    }
}
