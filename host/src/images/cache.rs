//! The on-disk cache of compiled components: wasmtime's serialized artifacts, keyed by the
//! component's digest and by the engine's compatibility hash, so a restart loads handlers
//! without recompiling and a different engine never picks up a stale artifact.

use crate::blobs::Digest;
use crate::runtime::{Runtime, RuntimeError};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;

/// Compiled-component cache of one engine.
pub struct ComponentCache {
    dir: Dir,
    compiles: AtomicU64,
    hits: AtomicU64,
}

/// Cache counters.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub struct CacheStats {
    /// Components compiled from wasm in this process.
    pub compiles: u64,
    /// Components loaded from the cache in this process.
    pub hits: u64,
}

impl ComponentCache {
    /// Opens the cache under `root` for `runtime`'s engine.
    pub fn open(root: &Path, runtime: &Runtime) -> std::io::Result<Self> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        runtime
            .engine()
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let path = root.join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&path)?;
        let dir = Dir::open_ambient_dir(&path, ambient_authority())?;
        remove_leftover_temporaries(&dir);
        Ok(Self {
            dir,
            compiles: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    fn file_name(digest: &Digest) -> String {
        format!("{}.cwasm", digest.hex())
    }

    /// The compiled component for `digest`: from the cache when present and valid, else
    /// compiled from `wasm()` and stored.
    pub fn get_or_compile(
        &self,
        runtime: &Runtime,
        digest: &Digest,
        wasm: impl FnOnce() -> Result<Vec<u8>, RuntimeError>,
    ) -> Result<Component, RuntimeError> {
        let name = Self::file_name(digest);
        if let Ok(bytes) = self.dir.read(&name) {
            // SAFETY: the file was written by `store` below from wasmtime's own
            // `Component::serialize`, in a folder only this server writes, keyed by the
            // engine's compatibility hash; wasmtime still checks the header and version.
            match unsafe { Component::deserialize(runtime.engine(), &bytes) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(component = %digest, "compiled component loaded from cache");
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(component = %digest, "discarding unusable cache entry: {e:#}");
                    let _ = self.dir.remove_file(&name);
                }
            }
        }
        let component = Component::new(runtime.engine(), wasm()?)
            .map_err(|e| RuntimeError::InvalidComponent(format!("{e:#}")))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        tracing::info!(component = %digest, "component compiled");
        if let Err(e) = self.store(&name, &component) {
            tracing::warn!(component = %digest, "cannot cache compiled component: {e}");
        }
        Ok(component)
    }

    fn store(&self, name: &str, component: &Component) -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        // A name of its own, so that two compiles of one component never share a file.
        let tmp = format!("{name}.{}.tmp", unique_suffix());
        let mut file = self.dir.create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        self.dir.rename(&tmp, &self.dir, name)
    }

    /// Drops the cached artifact of a component that no image references any more.
    pub fn remove(&self, digest: &Digest) {
        let _ = self.dir.remove_file(Self::file_name(digest));
    }

    /// Counters since start-up.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiles: self.compiles.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }
}

/// A suffix no other temporary file of this process has.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Removes the temporary files of stores a previous process did not finish.
fn remove_leftover_temporaries(dir: &Dir) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".tmp") {
            let _ = dir.remove_file(&name);
        }
    }
}
