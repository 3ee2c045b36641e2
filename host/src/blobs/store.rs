//! [`BlobStore`]: the blob store the server uses. Single-node: the local folder. Cluster
//! mode: a [`RemoteBlobs`] object store is the source of truth and the local folder its
//! node-local cache.
//!
//! In cluster mode a new blob is hashed into the local folder first, and only then, named
//! by its digest, uploaded ([`BlobStore::persist`]). A read of a blob the folder lacks
//! fetches it (one fetch however many wait, `flight.rs`), checks its sha256 before it is
//! named (a corrupted object is refused and never cached), and then evicts the least
//! recently used blobs that no upload and no loaded image pins until the folder is back
//! under its byte budget (`cache.rs`).
//!
//! Deleting from the object store: another node may be uploading the same content at the
//! moment this one finds it unreferenced, and its pins are not visible here. So an object
//! is deleted only when it is unreferenced, unpinned here, and was last written more than
//! [`REMOTE_DELETE_GRACE`] ago (every upload rewrites the object, refreshing its time);
//! younger ones are left to the sweep of a later start.

use super::cache::CacheIndex;
use super::flight::Flights;
use super::local::{BlobWriter, LocalBlobs};
use super::pins::PinTable;
use super::remote::{RemoteBlobs, RemoteObject};
use super::{BlobError, Digest};
use cap_std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How long an unreferenced object stays in the object store after it was last written.
pub const REMOTE_DELETE_GRACE: Duration = Duration::from_secs(3600);

/// The node-local cache of cluster mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes the cached blobs may take (blobs in use may push it over for a while).
    pub budget_bytes: u64,
}

#[derive(Debug)]
struct Tier {
    remote: Arc<dyn RemoteBlobs>,
    index: Mutex<CacheIndex>,
    flights: Flights,
    fetches: AtomicU64,
}

/// The blob store. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct BlobStore {
    local: LocalBlobs,
    tier: Option<Arc<Tier>>,
    upload_pins: PinTable,
    use_pins: PinTable,
}

impl BlobStore {
    /// The single-node store: the local folder `path` (created if needed).
    pub fn open(path: &Path) -> Result<Self, BlobError> {
        Ok(Self {
            local: LocalBlobs::open(path)?,
            tier: None,
            upload_pins: PinTable::default(),
            use_pins: PinTable::default(),
        })
    }

    /// The cluster-mode store: `remote`, cached in the local folder `path` under
    /// `cache`'s budget (what the folder already holds counts, oldest first).
    pub fn open_cached(
        path: &Path,
        remote: Arc<dyn RemoteBlobs>,
        cache: CacheSettings,
    ) -> Result<Self, BlobError> {
        let local = LocalBlobs::open(path)?;
        let mut index = CacheIndex::new(cache.budget_bytes);
        for (digest, size, _) in local.list_with_meta()? {
            index.insert(digest, size);
        }
        let store = Self {
            local,
            tier: Some(Arc::new(Tier {
                remote,
                index: Mutex::new(index),
                flights: Flights::default(),
                fetches: AtomicU64::new(0),
            })),
            upload_pins: PinTable::default(),
            use_pins: PinTable::default(),
        };
        store.evict(None);
        Ok(store)
    }

    /// Where the durable copy of the blobs is: `None` on a single node.
    pub fn remote(&self) -> Option<String> {
        self.tier.as_ref().map(|t| t.remote.describe())
    }

    /// The pins of uploads in progress (garbage collection and the cache leave these
    /// blobs alone).
    pub fn upload_pins(&self) -> &PinTable {
        &self.upload_pins
    }

    /// The pins of blobs loaded images use (the cache leaves these alone).
    pub fn use_pins(&self) -> &PinTable {
        &self.use_pins
    }

    /// Starts writing a new blob of at most `limit` bytes into the local folder; call
    /// [`BlobStore::persist`] once it is finished.
    pub fn writer(&self, limit: u64) -> Result<BlobWriter, BlobError> {
        self.local.writer(limit)
    }

    /// Stores `bytes` and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        let digest = self.local.put(bytes)?;
        self.persist(&digest, bytes.len() as u64)?;
        Ok(digest)
    }

    /// Makes a finished local blob durable: in cluster mode, uploads it (a multipart upload
    /// when large) and counts it in the cache. Nothing to do on a single node.
    pub fn persist(&self, digest: &Digest, size: u64) -> Result<(), BlobError> {
        let Some(tier) = &self.tier else {
            return Ok(());
        };
        lock(&tier.index).insert(digest.clone(), size);
        let mut file = self.local.open_blob(digest)?;
        tier.remote.upload(digest, size, &mut file)?;
        tracing::debug!(blob = %digest, size, "blob uploaded to the object store");
        self.evict(Some(digest));
        Ok(())
    }

    /// Whether the local folder holds the blob.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.local.contains(digest)
    }

    /// Makes sure the local folder holds the blob, fetching it in cluster mode.
    pub fn ensure_local(&self, digest: &Digest) -> Result<(), BlobError> {
        let Some(tier) = &self.tier else {
            return Ok(());
        };
        if self.local.contains(digest) && lock(&tier.index).touch(digest) {
            return Ok(());
        }
        tier.flights.run(digest, || {
            if self.local.contains(digest) {
                lock(&tier.index).touch(digest);
                return Ok(());
            }
            self.fetch(tier, digest)
        })
    }

    fn fetch(&self, tier: &Tier, digest: &Digest) -> Result<(), BlobError> {
        let started = std::time::Instant::now();
        let mut writer = self.local.writer(u64::MAX)?;
        tier.fetches.fetch_add(1, Ordering::Relaxed);
        tier.remote.download(digest, &mut writer)?;
        let (_, size) = writer.finish_expecting(digest).inspect_err(|e| {
            tracing::error!(blob = %digest, "refused a blob fetched from the object store: {e}");
        })?;
        lock(&tier.index).insert(digest.clone(), size);
        tracing::info!(blob = %digest, size, ms = started.elapsed().as_millis() as u64, "blob fetched from the object store");
        self.evict(Some(digest));
        Ok(())
    }

    /// Opens a blob for reading (fetching it first in cluster mode).
    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        self.ensure_local(digest)?;
        match self.local.open_blob(digest) {
            // Evicted between the fetch and the open: the caller did not pin it.
            Err(BlobError::NotFound(_)) if self.tier.is_some() => {
                self.ensure_local(digest)?;
                self.local.open_blob(digest)
            }
            other => other,
        }
    }

    /// Reads a whole blob into memory (for small blobs such as components).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        self.ensure_local(digest)?;
        self.local.read(digest)
    }

    /// The file-system path of a blob in the local folder (call [`BlobStore::open_blob`]
    /// first in cluster mode, with the blob pinned).
    pub fn path_of(&self, digest: &Digest) -> Result<PathBuf, BlobError> {
        self.local.path_of(digest)
    }

    /// Removes a blob nothing uses any more: the local copy, and in cluster mode the
    /// object too once it is older than [`REMOTE_DELETE_GRACE`] (in the background).
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        self.local.remove(digest)?;
        if let Some(tier) = &self.tier {
            lock(&tier.index).remove(digest);
            let (tier, blob) = (tier.clone(), digest.clone());
            let spawned = std::thread::Builder::new()
                .name("sandserve-blob-gc".into())
                .spawn(move || match tier.remote.head(&blob) {
                    Ok(Some(object)) if old_enough(&object, SystemTime::now()) => {
                        if let Err(e) = tier.remote.delete(&blob) {
                            tracing::warn!(%blob, "cannot delete an unreferenced object: {e}");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%blob, "cannot check an unreferenced object: {e}"),
                });
            if let Err(e) = spawned {
                tracing::warn!(blob = %digest, "cannot delete an unreferenced object: {e}");
            }
        }
        Ok(())
    }

    /// Deletes the objects of the object store for which `keep` is false and that were
    /// last written more than [`REMOTE_DELETE_GRACE`] ago; returns how many. Nothing to
    /// do on a single node.
    pub fn sweep_remote(&self, keep: impl Fn(&Digest) -> bool) -> Result<usize, BlobError> {
        let Some(tier) = &self.tier else {
            return Ok(0);
        };
        let now = SystemTime::now();
        let mut deleted = 0;
        for object in tier.remote.list()? {
            if !keep(&object.digest) && old_enough(&object, now) {
                tracing::info!(blob = %object.digest, "deleting an object no image references");
                tier.remote.delete(&object.digest)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Every blob in the local folder.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        self.local.list()
    }

    /// Files in `tmp/` (writes in progress or abandoned).
    pub fn pending_writes(&self) -> Result<usize, BlobError> {
        self.local.pending_writes()
    }

    /// Bytes the cache holds and its budget (cluster mode).
    pub fn cache_usage(&self) -> Option<(u64, u64)> {
        self.tier.as_ref().map(|t| {
            let index = lock(&t.index);
            (index.total(), index.budget())
        })
    }

    /// Fetches from the object store since start-up (cluster mode).
    pub fn fetches(&self) -> u64 {
        self.tier
            .as_ref()
            .map_or(0, |t| t.fetches.load(Ordering::Relaxed))
    }

    /// Evicts unpinned blobs, least recently used first, until the cache fits its budget;
    /// `fresh` (the blob just fetched or written) stays too.
    fn evict(&self, fresh: Option<&Digest>) {
        let Some(tier) = &self.tier else {
            return;
        };
        // Upload pins, then use pins, then the index: the order every path takes them in.
        let uploads = self.upload_pins.lock();
        let uses = self.use_pins.lock();
        let mut index = lock(&tier.index);
        let victims =
            index.victims(|d| Some(d) == fresh || uploads.contains_key(d) || uses.contains_key(d));
        for digest in victims {
            match self.local.remove(&digest) {
                Ok(()) => {
                    index.remove(&digest);
                    tracing::debug!(blob = %digest, "evicted from the blob cache");
                }
                Err(e) => tracing::warn!(blob = %digest, "cannot evict from the blob cache: {e}"),
            }
        }
    }
}

/// Whether an unreferenced object may be deleted at `now`.
pub(crate) fn old_enough(object: &RemoteObject, now: SystemTime) -> bool {
    now.duration_since(object.last_modified)
        .is_ok_and(|age| age > REMOTE_DELETE_GRACE)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
