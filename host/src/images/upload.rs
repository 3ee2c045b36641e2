//! Uploads: a package streamed into the blob store under the server's size limit, its
//! digest checked against what the client said it sent, then published as the model's
//! next version. An [`Upload`] holds one of the server's upload slots for its whole life
//! (taken by [`ImageService::begin_upload`], refused at once when none is free); its blob
//! is pinned away from garbage collection from the moment it is complete until the image
//! record names it, and collected at once when the upload fails. What arrives over HTTP
//! (headers, lingering on a refused body) is the API's business; this owns the bytes.

use super::{ImageError, ImageService, UploadSlot};
use crate::blobs::{BlobError, BlobWriter, Digest};
use crate::registry::ImageRecord;
use std::io::Write;
use std::sync::Arc;
use thiserror::Error;

/// Why an upload did not become an image.
#[derive(Debug, Error)]
pub enum UploadError {
    /// Every upload slot is taken.
    #[error("too many package uploads are in progress on this server (its limit is {limit})")]
    Busy {
        /// Uploads that may run at once.
        limit: usize,
    },
    /// The package is larger than the server accepts.
    #[error("the package is larger than this server's {} MiB upload limit", limit >> 20)]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// What arrived is not what the client sent.
    #[error("the package's sha256 is {got}, not {expected} as X-Content-Sha256 says; the upload was corrupted")]
    DigestMismatch {
        /// The digest of what arrived.
        got: Digest,
        /// The digest the client declared.
        expected: Digest,
    },
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Writing the package failed.
    #[error("cannot store the package: {0}")]
    Io(#[from] std::io::Error),
    /// The package was stored but is not a publishable image.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// One package upload in progress.
pub struct Upload {
    images: Arc<ImageService>,
    writer: BlobWriter,
    limit: u64,
    expected: Option<Digest>,
    /// Held until the upload is published or dropped.
    _slot: UploadSlot,
}

impl ImageService {
    /// Starts an upload of at most [`ImageService::max_upload_bytes`]; `expected` is the
    /// digest the client declared, if any. Refused with [`UploadError::Busy`] when the
    /// server already runs as many uploads as it allows.
    pub fn begin_upload(self: &Arc<Self>, expected: Option<Digest>) -> Result<Upload, UploadError> {
        let slot = self.try_begin_upload().ok_or(UploadError::Busy {
            limit: self.max_concurrent_uploads(),
        })?;
        let limit = self.max_upload_bytes;
        let writer = self.blobs().writer(limit)?;
        Ok(Upload {
            images: self.clone(),
            writer,
            limit,
            expected,
            _slot: slot,
        })
    }
}

impl Upload {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.written()
    }

    /// Appends the next piece of the package (a blocking file write). Past the limit
    /// nothing more is written and the upload is over: [`UploadError::TooLarge`].
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        if self.writer.written().saturating_add(chunk.len() as u64) > self.limit {
            return Err(UploadError::TooLarge { limit: self.limit });
        }
        self.writer.write_all(chunk)?;
        Ok(())
    }

    /// Completes the blob, checks the declared digest, and publishes the package as
    /// `tenant`'s model `name`'s next version (blocking: unpacks, compiles, loads graphs).
    /// On any failure the upload's blobs are collected.
    pub fn publish(
        self,
        tenant: &str,
        name: &str,
        created_by: &str,
    ) -> Result<ImageRecord, UploadError> {
        let images = self.images;
        let archive = images.finish_pinned(self.writer)?;
        if let Some(expected) = self.expected {
            if *archive.digest() != expected {
                let got = archive.digest().clone();
                images.discard(archive);
                return Err(UploadError::DigestMismatch { got, expected });
            }
        }
        Ok(images.publish(tenant, name, created_by, archive)?)
    }
}
