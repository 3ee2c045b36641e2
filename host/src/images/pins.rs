//! Blob garbage collection and the pins that keep it away from uploads in flight.
//!
//! An upload writes blobs before any record names them; a pin, taken atomically with the
//! blob's publication (both under the pin table's lock), keeps collection away until the
//! upload has either published its image (the record now names the blobs) or failed
//! (then its blobs are collected at once). Collection takes the same lock first and reads
//! the records second, so a blob is never both unpinned and not yet referenced while it
//! runs. A crash (kill -9) skips that last step: [`ImageService::collect_orphans`], run at
//! start-up, removes every blob no record names.
//!
//! In cluster mode a finished blob is uploaded to the object store right after it is
//! pinned, and removing a blob removes its object only once it is older than the grace
//! period (`blobs/store.rs`): other nodes' uploads are not pinned here.

use super::ImageService;
use crate::blobs::{BlobError, BlobPin, BlobWriter, Digest};
use crate::registry::RegistryError;

impl ImageService {
    /// Publishes `writer`'s blob and pins it, atomically with respect to garbage collection.
    /// In cluster mode the blob is then uploaded; when that fails it is collected again.
    pub fn finish_pinned(&self, writer: BlobWriter) -> Result<BlobPin, BlobError> {
        let pin = {
            let mut pins = self.in_flight.lock();
            let (digest, size) = writer.finish()?;
            self.in_flight.pin_locked(&mut pins, digest, size)
        };
        if let Err(e) = self.blobs.persist(pin.digest(), pin.size()) {
            self.discard(pin);
            return Err(e);
        }
        Ok(pin)
    }

    /// Gives up an uploaded blob (for example on a digest mismatch), removing it unless an
    /// image or another upload uses it.
    pub fn discard(&self, blob: BlobPin) {
        let digest = blob.digest().clone();
        drop(blob);
        self.collect_garbage(&[digest]);
    }

    /// Removes those of `candidates` that no image references and no upload is using.
    pub(crate) fn collect_garbage(&self, candidates: &[Digest]) {
        // Pins first, references second: an upload publishing an image that uses one of
        // the candidates either still pins it here or is already in the references read
        // below (it drops its pins only after publishing, and dropping needs this lock).
        let pinned = self.in_flight.lock();
        let referenced = match self.registry.referenced_blobs() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("skipping blob garbage collection: {e}");
                return;
            }
        };
        for digest in candidates {
            if !referenced.contains(digest) && !pinned.contains_key(digest) {
                self.remove_blob(digest);
            }
        }
    }

    /// Removes every stored blob that no image references and no upload is using: what a
    /// crash during uploads left behind. Safe while uploads run (the same order as
    /// [`ImageService::collect_garbage`]: pins, then references, then the blobs on disk,
    /// where a blob appears only under the pin lock). Returns how many it removed.
    pub fn collect_orphans(&self) -> Result<usize, OrphanError> {
        let pinned = self.in_flight.lock();
        let referenced = self.registry.referenced_blobs()?;
        let mut removed = 0;
        for digest in self.blobs.list()? {
            if !referenced.contains(&digest) && !pinned.contains_key(&digest) {
                tracing::info!(blob = %digest, "removing a blob no image references");
                self.remove_blob(&digest);
                removed += 1;
            }
        }
        // Cluster mode: objects no image references, older than the grace period.
        match self
            .blobs
            .sweep_remote(|d| referenced.contains(d) || pinned.contains_key(d))
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted objects no image references"),
            Err(e) => tracing::warn!("skipping the sweep of the object store: {e}"),
        }
        Ok(removed)
    }

    fn remove_blob(&self, digest: &Digest) {
        if let Err(e) = self.blobs.remove(digest) {
            tracing::warn!(blob = %digest, "cannot remove unreferenced blob: {e}");
        }
        self.cache.remove(digest);
    }
}

/// Why the orphan sweep could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrphanError {
    /// The records could not be read.
    #[error("cannot read which blobs images reference: {0}")]
    Registry(#[from] RegistryError),
    /// The blob store could not be listed.
    #[error(transparent)]
    Blob(#[from] BlobError),
}
