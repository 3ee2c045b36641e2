//! Blob garbage collection and the pins that keep it away from uploads in flight.
//!
//! An upload writes blobs before any record names them; a pin, taken atomically with the
//! blob's publication (both under the pin table's lock), keeps collection away until the
//! upload has either published its image (the record now names the blobs) or failed
//! (then its blobs are collected at once). Collection takes the same lock first and reads
//! the records second, so a blob is never both unpinned and not yet referenced while it
//! runs. A crash (kill -9) skips that last step: [`ImageService::collect_orphans`], run at
//! start-up, removes every blob no record names.

use super::ImageService;
use crate::blobs::{BlobError, BlobWriter, Digest};
use crate::registry::RegistryError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Uploads in flight: how many of them pin each blob.
pub(crate) type PinTable = Arc<Mutex<HashMap<Digest, usize>>>;

/// A finished blob that garbage collection leaves alone while this value lives (an upload
/// still using it).
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
        let mut pins = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = pins.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.digest);
            }
        }
    }
}

impl ImageService {
    /// Publishes `writer`'s blob and pins it, atomically with respect to garbage collection.
    pub fn finish_pinned(&self, writer: BlobWriter) -> Result<BlobPin, BlobError> {
        let mut pins = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let (digest, size) = writer.finish()?;
        *pins.entry(digest.clone()).or_default() += 1;
        Ok(BlobPin {
            table: self.in_flight.clone(),
            digest,
            size,
        })
    }

    /// Gives up an uploaded blob (for example on a digest mismatch), removing it unless an
    /// image or another upload uses it.
    pub fn discard(&self, blob: BlobPin) {
        let digest = blob.digest.clone();
        drop(blob);
        self.collect_garbage(&[digest]);
    }

    /// Removes those of `candidates` that no image references and no upload is using.
    pub(crate) fn collect_garbage(&self, candidates: &[Digest]) {
        // Pins first, references second: an upload publishing an image that uses one of
        // the candidates either still pins it here or is already in the references read
        // below (it drops its pins only after publishing, and dropping needs this lock).
        let pinned = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
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
        let pinned = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let referenced = self.registry.referenced_blobs()?;
        let mut removed = 0;
        for digest in self.blobs.list()? {
            if !referenced.contains(&digest) && !pinned.contains_key(&digest) {
                tracing::info!(blob = %digest, "removing a blob no image references");
                self.remove_blob(&digest);
                removed += 1;
            }
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
