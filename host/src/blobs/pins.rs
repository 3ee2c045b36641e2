//! Pins: counted claims on blobs that must stay where they are while the claim lives.
//! Uploads pin what they write until an image record names it (garbage collection leaves
//! pinned blobs alone, see `images/pins.rs`), and loaded images pin the blobs they read
//! (the cache never evicts a pinned blob, see `cache.rs`).

use super::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Pinned blobs and how many pins each has. Cheap to clone (one shared table).
#[derive(Debug, Clone, Default)]
pub struct PinTable(Arc<Mutex<HashMap<Digest, usize>>>);

/// The locked table: what a caller reads or pins under one lock.
pub type PinGuard<'a> = MutexGuard<'a, HashMap<Digest, usize>>;

impl PinTable {
    /// Locks the table (a poisoned lock is taken over: the counts stay consistent, each
    /// change is one statement).
    pub fn lock(&self) -> PinGuard<'_> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `digest` in the table `guard` holds locked (taken from this table).
    pub fn pin_locked(&self, guard: &mut PinGuard<'_>, digest: Digest, size: u64) -> BlobPin {
        *guard.entry(digest.clone()).or_default() += 1;
        BlobPin {
            table: self.clone(),
            digest,
            size,
        }
    }

    /// Pins `digest`.
    pub fn pin(&self, digest: Digest, size: u64) -> BlobPin {
        let mut guard = self.lock();
        self.pin_locked(&mut guard, digest, size)
    }
}

/// A claim on one blob, given back when dropped.
#[derive(Debug)]
pub struct BlobPin {
    table: PinTable,
    digest: Digest,
    size: u64,
}

impl BlobPin {
    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        let mut pins = self.table.lock();
        if let Some(count) = pins.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.digest);
            }
        }
    }
}
