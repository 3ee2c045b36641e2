//! The durable blob store of cluster mode, behind a trait: the S3 implementation is in
//! `s3.rs`; the unit tests use an in-memory one. Calls block the calling thread (they run
//! on the server's blocking threads, as every blob read does).

use super::{BlobError, Digest};
use std::io::{Read, Write};
use std::time::SystemTime;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// The blob it holds.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// When it was last written.
    pub last_modified: SystemTime,
}

/// An object store that holds blobs under content-addressed keys.
pub trait RemoteBlobs: Send + Sync + std::fmt::Debug {
    /// Where the blobs are (`s3://bucket/prefix`), for the log.
    fn describe(&self) -> String;

    /// Stores `size` bytes read from `content` as `digest` (whose content the caller has
    /// already hashed). Writing an object that exists again refreshes its time.
    fn upload(&self, digest: &Digest, size: u64, content: &mut dyn Read) -> Result<(), BlobError>;

    /// Streams the object `digest` into `sink` and returns its size; the caller checks
    /// the content. [`BlobError::NotFound`] when there is no such object.
    fn download(&self, digest: &Digest, sink: &mut dyn Write) -> Result<u64, BlobError>;

    /// The object `digest`, or `None`.
    fn head(&self, digest: &Digest) -> Result<Option<RemoteObject>, BlobError>;

    /// Every object under the store's prefix that is named like a blob.
    fn list(&self) -> Result<Vec<RemoteObject>, BlobError>;

    /// Deletes the object `digest` (absent is not an error).
    fn delete(&self, digest: &Digest) -> Result<(), BlobError>;
}
