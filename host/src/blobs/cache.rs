//! The node-local cache's accounting: which blobs the local folder holds in cluster mode,
//! their sizes, and the order they were last used in. It decides what to evict to bring
//! the folder under its byte budget (least recently used first, never a blob the caller
//! says to keep: one pinned by an upload or a loaded image, or the one just fetched); the
//! store (`store.rs`) removes the files.

use super::Digest;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    used: u64,
}

/// Cached blobs, their sizes and recency, under a byte budget.
#[derive(Debug)]
pub(crate) struct CacheIndex {
    budget: u64,
    total: u64,
    clock: u64,
    entries: HashMap<Digest, Entry>,
}

impl CacheIndex {
    /// An empty index with a budget of `budget` bytes.
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            budget,
            total: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// Records `digest` (`size` bytes) as present and used now.
    pub(crate) fn insert(&mut self, digest: Digest, size: u64) {
        self.clock += 1;
        let entry = Entry {
            size,
            used: self.clock,
        };
        if let Some(old) = self.entries.insert(digest, entry) {
            self.total -= old.size;
        }
        self.total += size;
    }

    /// Marks `digest` used now; false when it is not cached.
    pub(crate) fn touch(&mut self, digest: &Digest) -> bool {
        self.clock += 1;
        match self.entries.get_mut(digest) {
            Some(entry) => {
                entry.used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Forgets `digest`.
    pub(crate) fn remove(&mut self, digest: &Digest) {
        if let Some(old) = self.entries.remove(digest) {
            self.total -= old.size;
        }
    }

    /// Bytes cached.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The budget, bytes.
    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// What to evict, least recently used first, so that the rest fits the budget; blobs
    /// for which `keep` is true stay (the cache then stays over its budget until they are
    /// released). Does not change the index: remove each victim once its file is gone.
    pub(crate) fn victims(&self, keep: impl Fn(&Digest) -> bool) -> Vec<Digest> {
        if self.total <= self.budget {
            return Vec::new();
        }
        let mut order: Vec<(&Digest, &Entry)> = self.entries.iter().collect();
        order.sort_by_key(|(_, e)| e.used);
        let mut over = self.total - self.budget;
        let mut victims = Vec::new();
        for (digest, entry) in order {
            if over == 0 {
                break;
            }
            if keep(digest) {
                continue;
            }
            over = over.saturating_sub(entry.size);
            victims.push(digest.clone());
        }
        victims
    }
}
