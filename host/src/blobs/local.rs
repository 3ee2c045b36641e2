//! The local blob folder: blobs named by their sha256 on a cap-std `Dir` under the data
//! folder. It is the whole store on a single node, and the node-local cache in front of
//! the object store in cluster mode (`store.rs`).
//!
//! A write goes to `tmp/` while it is hashed, is fsynced, renamed to `sha256/<hex>` and the
//! directory fsynced, so a blob either exists completely or not at all. Blobs are never
//! modified; the registry decides when one is garbage and removes it.

use super::{io, BlobError, Digest};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, File};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

const BLOB_DIR: &str = "sha256";
const TMP_DIR: &str = "tmp";

/// The blob folder of one data folder. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: Arc<Dir>,
    root_path: Arc<PathBuf>,
}

impl LocalBlobs {
    /// Opens (creating if needed) the store in `path`, and clears writes a crash left behind.
    pub fn open(path: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(path).map_err(io(format!("creating {}", path.display())))?;
        let root = Dir::open_ambient_dir(path, ambient_authority())
            .map_err(io(format!("opening {}", path.display())))?;
        root.create_dir_all(BLOB_DIR)
            .map_err(io("creating sha256/"))?;
        if root.exists(TMP_DIR) {
            root.remove_dir_all(TMP_DIR).map_err(io("clearing tmp/"))?;
        }
        root.create_dir_all(TMP_DIR).map_err(io("creating tmp/"))?;
        let root_path = std::fs::canonicalize(path).map_err(io("resolving the store path"))?;
        Ok(Self {
            root: Arc::new(root),
            root_path: Arc::new(root_path),
        })
    }

    /// Starts writing a new blob of at most `limit` bytes.
    pub fn writer(&self, limit: u64) -> Result<BlobWriter, BlobError> {
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| BlobError::Io {
            action: "naming a temp file".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let tmp = format!("{TMP_DIR}/{}", hex::encode(name));
        let file = self.root.create(&tmp).map_err(io("creating a temp file"))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp: Some(tmp),
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
            limit,
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        let mut writer = self.writer(u64::MAX)?;
        writer.write_all(bytes).map_err(io("writing a blob"))?;
        Ok(writer.finish()?.0)
    }

    fn blob_path(digest: &Digest) -> String {
        format!("{BLOB_DIR}/{}", digest.hex())
    }

    /// Whether the blob exists.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.root.exists(Self::blob_path(digest))
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        self.root.open(Self::blob_path(digest)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BlobError::NotFound(digest.clone())
            } else {
                BlobError::Io {
                    action: format!("opening {digest}"),
                    source: e,
                }
            }
        })
    }

    /// Reads a whole blob into memory (for small blobs such as components).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io(format!("reading {digest}")))?;
        Ok(bytes)
    }

    /// The file-system path of a blob, for engines that load models from a path.
    pub fn path_of(&self, digest: &Digest) -> Result<PathBuf, BlobError> {
        if self.contains(digest) {
            Ok(self.root_path.join(Self::blob_path(digest)))
        } else {
            Err(BlobError::NotFound(digest.clone()))
        }
    }

    /// Removes a blob (absent blobs are not an error).
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        match self.root.remove_file(Self::blob_path(digest)) {
            Ok(()) => self.sync_dir(BLOB_DIR),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Io {
                action: format!("removing {digest}"),
                source: e,
            }),
        }
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let mut digests = Vec::new();
        for entry in self.root.read_dir(BLOB_DIR).map_err(io("listing blobs"))? {
            let entry = entry.map_err(io("listing blobs"))?;
            if let Ok(digest) = Digest::parse(&entry.file_name().to_string_lossy()) {
                digests.push(digest);
            }
        }
        digests.sort();
        Ok(digests)
    }

    /// Every stored blob with its size and last modification (oldest first): what the
    /// cache's recency order starts from after a restart.
    pub fn list_with_meta(&self) -> Result<Vec<(Digest, u64, SystemTime)>, BlobError> {
        let mut blobs = Vec::new();
        for entry in self.root.read_dir(BLOB_DIR).map_err(io("listing blobs"))? {
            let entry = entry.map_err(io("listing blobs"))?;
            let Ok(digest) = Digest::parse(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let meta = entry.metadata().map_err(io("reading a blob's size"))?;
            let modified = meta
                .modified()
                .map_or(SystemTime::UNIX_EPOCH, |t| t.into_std());
            blobs.push((digest, meta.len(), modified));
        }
        blobs.sort_by_key(|(_, _, modified)| *modified);
        Ok(blobs)
    }

    /// Files in `tmp/` (writes in progress or abandoned).
    pub fn pending_writes(&self) -> Result<usize, BlobError> {
        Ok(self
            .root
            .read_dir(TMP_DIR)
            .map_err(io("listing tmp/"))?
            .count())
    }

    fn sync_dir(&self, dir: &str) -> Result<(), BlobError> {
        // cap-std opens directories with O_PATH, which cannot be fsynced; open our own
        // store folder (a fixed name under the root, never user input) for reading instead.
        std::fs::File::open(self.root_path.join(dir))
            .and_then(|handle| handle.sync_all())
            .map_err(io(format!("syncing {dir}/")))
    }
}

/// A blob being written: hashed as it goes, published by [`BlobWriter::finish`], removed
/// if dropped unfinished.
pub struct BlobWriter {
    store: LocalBlobs,
    tmp: Option<String>,
    file: Option<File>,
    hasher: Sha256,
    written: u64,
    limit: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Fsyncs, names the blob by its digest and fsyncs the directory; returns the digest
    /// and size. Content already stored is not written twice.
    pub fn finish(self) -> Result<(Digest, u64), BlobError> {
        self.finish_checked(None)
    }

    /// Like [`BlobWriter::finish`], but only when the content's digest is `expected`:
    /// otherwise nothing is stored and the answer is [`BlobError::Corrupt`].
    pub fn finish_expecting(self, expected: &Digest) -> Result<(Digest, u64), BlobError> {
        self.finish_checked(Some(expected))
    }

    fn finish_checked(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), BlobError> {
        let file = self.file.take().ok_or_else(|| BlobError::Io {
            action: "finishing a blob".into(),
            source: std::io::Error::other("writer already finished"),
        })?;
        file.sync_all().map_err(io("syncing a blob"))?;
        drop(file);
        let digest = Digest::from_hash(std::mem::take(&mut self.hasher).finalize().as_slice());
        if let Some(expected) = expected {
            if *expected != digest {
                // Dropping `self` removes the temp file.
                return Err(BlobError::Corrupt {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let tmp = self.tmp.take().unwrap_or_default();
        let target = LocalBlobs::blob_path(&digest);
        if self.store.root.exists(&target) {
            self.store
                .root
                .remove_file(&tmp)
                .map_err(io("removing a duplicate temp file"))?;
        } else {
            self.store
                .root
                .rename(&tmp, &self.store.root, &target)
                .map_err(io(format!("publishing {digest}")))?;
            self.store.sync_dir(BLOB_DIR)?;
        }
        Ok((digest, self.written))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("writer already finished"));
        };
        if self.written + buf.len() as u64 > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("blob larger than the {}-byte limit", self.limit),
            ));
        }
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            self.file = None;
            let _ = self.store.root.remove_file(tmp);
        }
    }
}
