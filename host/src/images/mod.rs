//! Model images: publishing an uploaded package as an immutable version (unpack into the
//! blob store, validate the handler and every graph, record it in the registry) and loading
//! a version to run it (compiled component from the cache, graphs loaded once and shared).
//!
//! Blobs of a failed upload, and blobs no image references after a delete, are garbage
//! collected; blobs an upload in progress is still writing are never collected (see
//! `pins.rs`, which also sweeps what a crash left behind). An upload streams into the blob
//! store and is published from there (`upload.rs`); at most `max_concurrent_uploads` run
//! at once (`slots.rs`).

mod cache;
mod error;
mod pins;
mod slots;
mod upload;

pub use crate::blobs::BlobPin;
pub use cache::{CacheStats, ComponentCache};
pub use error::ImageError;
pub use pins::OrphanError;
pub use slots::{UploadSlot, DEFAULT_MAX_CONCURRENT_UPLOADS};
pub use upload::{Upload, UploadError};

use crate::blobs::{BlobStore, Digest, PinTable};
use crate::inference::{Engines, GraphFile, GraphSet, GraphSpec, InferenceError};
use crate::package::{unpack, Manifest, PackageError, UnpackLimits};
use crate::registry::{ImageDraft, ImageFile, ImageRecord, ImageStore, RegistryError};
use crate::runtime::{LoadedHandler, RequestLimits, Runtime};
use crate::telemetry::StatsTable;
use std::collections::HashMap;
use std::io::BufReader;
use std::sync::{Arc, Mutex};

/// One image version ready to run.
pub struct LoadedImage {
    /// Its record.
    pub record: ImageRecord,
    /// Its manifest.
    pub manifest: Manifest,
    /// The compiled, linked handler.
    pub handler: LoadedHandler,
    /// Its graphs, loaded.
    pub graphs: GraphSet,
    /// Limits of each request.
    pub limits: RequestLimits,
    /// Its blobs, kept in the node's blob cache while this copy lives.
    _blobs: Vec<BlobPin>,
}

type ImageKey = (String, String, u64);

/// The loaded versions: those kept loaded, and every copy something still holds. One copy
/// per version while anything holds it, so that every entity serving a version (the
/// owner's and, for a shared version, other tenants') runs the same graphs, and a graph
/// that batches gathers all their requests in one batcher; a version released from `kept`
/// while an entity still held it (an endpoint being prepared when another one's prepare
/// released what no live config served) is found again in `held` instead of loaded twice.
#[derive(Default)]
struct Loaded {
    kept: HashMap<ImageKey, Arc<LoadedImage>>,
    held: HashMap<ImageKey, std::sync::Weak<LoadedImage>>,
}

impl Loaded {
    /// The copy of `key` kept or still held somewhere (kept again from now on).
    fn find(&mut self, key: &ImageKey) -> Option<Arc<LoadedImage>> {
        if let Some(image) = self.kept.get(key) {
            return Some(image.clone());
        }
        let image = self.held.get(key)?.upgrade()?;
        self.kept.insert(key.clone(), image.clone());
        Some(image)
    }
}

/// Publishes and loads model images.
pub struct ImageService {
    blobs: BlobStore,
    registry: Arc<dyn ImageStore>,
    runtime: Arc<Runtime>,
    engines: &'static Engines,
    cache: ComponentCache,
    loaded: Mutex<Loaded>,
    in_flight: PinTable,
    uploads: slots::UploadSlots,
    unpack_limits: UnpackLimits,
    max_upload_bytes: u64,
    fuel_metering: bool,
    stats: StatsTable,
}

/// What an [`ImageService`] allows.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// Bounds on what one package may unpack to.
    pub unpack_limits: UnpackLimits,
    /// Whether the runtime meters fuel (images that set `limits.fuel` need it).
    pub fuel_metering: bool,
    /// Uploads that may be in progress at once, across the server.
    pub max_concurrent_uploads: usize,
    /// Largest package accepted, bytes.
    pub max_upload_bytes: u64,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self {
            unpack_limits: UnpackLimits::default(),
            fuel_metering: false,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            max_upload_bytes: 1 << 30,
        }
    }
}

impl ImageService {
    /// A service over these stores.
    pub fn new(
        blobs: BlobStore,
        registry: Arc<dyn ImageStore>,
        runtime: Arc<Runtime>,
        engines: &'static Engines,
        cache: ComponentCache,
        settings: ImageSettings,
    ) -> Self {
        Self {
            in_flight: blobs.upload_pins().clone(),
            blobs,
            registry,
            runtime,
            engines,
            cache,
            loaded: Mutex::default(),
            uploads: slots::UploadSlots::new(settings.max_concurrent_uploads),
            unpack_limits: settings.unpack_limits,
            max_upload_bytes: settings.max_upload_bytes,
            fuel_metering: settings.fuel_metering,
            stats: StatsTable::default(),
        }
    }

    /// A slot for one more upload, or `None` when the server already runs as many as it
    /// allows; hold it until the upload has finished (published or failed).
    pub fn try_begin_upload(&self) -> Option<UploadSlot> {
        self.uploads.try_take()
    }

    /// Largest package accepted, bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Uploads that may run at once.
    pub fn max_concurrent_uploads(&self) -> usize {
        self.uploads.limit()
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Every model version's inference counters.
    pub fn stats(&self) -> &StatsTable {
        &self.stats
    }

    /// Compile-cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Publishes the uploaded package `archive` as the next version of `tenant/name`:
    /// unpacks it into blobs, validates the handler and graphs, records the image. On any
    /// failure nothing is left behind.
    pub fn publish(
        &self,
        tenant: &str,
        name: &str,
        created_by: &str,
        archive: BlobPin,
    ) -> Result<ImageRecord, ImageError> {
        let mut pins = Vec::new();
        let result = self.publish_pinned(tenant, name, created_by, &archive, &mut pins);
        if result.is_err() {
            let mut written: Vec<Digest> = pins.iter().map(|p| p.digest().clone()).collect();
            written.push(archive.digest().clone());
            drop(pins);
            drop(archive);
            self.collect_garbage(&written);
        }
        result
    }

    fn publish_pinned(
        &self,
        tenant: &str,
        name: &str,
        created_by: &str,
        archive: &BlobPin,
        pins: &mut Vec<BlobPin>,
    ) -> Result<ImageRecord, ImageError> {
        let file = self.blobs.open_blob(archive.digest())?;
        let mut files: Vec<ImageFile> = Vec::new();
        // Why a blob could not be stored (the object store is down): answered as such.
        let mut not_stored = None;
        let unpacked = {
            let mut sink =
                |path: &str, reader: &mut dyn std::io::Read| -> Result<u64, PackageError> {
                    let mut writer = self
                        .blobs
                        .writer(self.unpack_limits.max_unpacked_bytes)
                        .map_err(|e| PackageError::Io(e.to_string()))?;
                    let copied = std::io::copy(reader, &mut writer)
                        .map_err(|e| PackageError::Io(e.to_string()))?;
                    let pin = self.finish_pinned(writer).map_err(|e| {
                        let message = e.to_string();
                        not_stored = Some(e);
                        PackageError::Io(message)
                    })?;
                    files.push(ImageFile {
                        path: path.to_string(),
                        digest: pin.digest().clone(),
                        size_bytes: pin.size(),
                    });
                    pins.push(pin);
                    Ok(copied)
                };
            unpack(BufReader::new(file), &self.unpack_limits, &mut sink)
        };
        let unpacked = match (unpacked, not_stored) {
            (Ok(unpacked), _) => unpacked,
            (Err(_), Some(blob)) => return Err(ImageError::Blob(blob)),
            (Err(e), None) => return Err(e.into()),
        };
        let manifest = unpacked.manifest;
        if manifest.name != name {
            return Err(ImageError::NameMismatch {
                manifest: manifest.name,
                url: name.to_string(),
            });
        }
        if manifest.limits.fuel.is_some() && !self.fuel_metering {
            return Err(ImageError::Unsupported(
                "the manifest sets limits.fuel, but this server does not meter fuel \
                 (start it with --fuel-metering, or remove limits.fuel)"
                    .into(),
            ));
        }
        let draft = ImageDraft {
            tenant: tenant.to_string(),
            name: name.to_string(),
            digest: archive.digest().clone(),
            size_bytes: archive.size(),
            manifest: unpacked.manifest_text,
            files,
            created_by: created_by.to_string(),
        };
        // Validate: the handler compiles and links, every graph loads.
        let label = format!("{tenant}/{name}@new");
        self.prepare_handler(&label, &manifest, &draft.files)?;
        self.load_graphs(&label, &manifest, &draft.files)?;
        let record = self.registry.publish_image(draft)?;
        tracing::info!(tenant, model = name, version = record.version, digest = %record.digest, "model image published");
        Ok(record)
    }

    fn prepare_handler(
        &self,
        label: &str,
        manifest: &Manifest,
        files: &[ImageFile],
    ) -> Result<LoadedHandler, ImageError> {
        let handler = files
            .iter()
            .find(|f| f.path == manifest.handler)
            .ok_or_else(|| PackageError::MissingFile {
                path: manifest.handler.clone(),
            })?;
        // A blob that cannot be read (the object store is down, the object is corrupted)
        // is the store's failure, not an invalid component.
        let mut unreadable = None;
        let component = self
            .cache
            .get_or_compile(&self.runtime, &handler.digest, || {
                self.blobs.read(&handler.digest).map_err(|e| {
                    let message = e.to_string();
                    unreadable = Some(e);
                    crate::runtime::RuntimeError::InvalidComponent(message)
                })
            })
            .map_err(|e| unreadable.map_or(ImageError::Component(e), ImageError::Blob))?;
        self.runtime
            .prepare(label, component)
            .map_err(ImageError::Component)
    }

    fn load_graphs(
        &self,
        image: &str,
        manifest: &Manifest,
        files: &[ImageFile],
    ) -> Result<GraphSet, ImageError> {
        let specs = manifest
            .graphs
            .iter()
            .map(|g| {
                let files = g
                    .files
                    .iter()
                    .map(|path| {
                        let file = files
                            .iter()
                            .find(|f| &f.path == path)
                            .ok_or_else(|| PackageError::MissingFile { path: path.clone() })?;
                        Ok(GraphFile::Stored {
                            file: std::sync::Arc::new(
                                self.blobs.open_blob(&file.digest)?.into_std(),
                            ),
                            path: self.blobs.path_of(&file.digest)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ImageError>>()?;
                Ok(GraphSpec {
                    name: g.name.clone(),
                    encoding: g.encoding,
                    files,
                    options: g.options(),
                    image: image.to_string(),
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        GraphSet::load(self.engines, &specs, manifest.guest_load_policy()).map_err(|e| match e {
            // Engines name the files they read: show the package path, not the blob path.
            InferenceError::GraphRejected {
                graph,
                engine,
                mut reason,
            } => {
                for file in files {
                    if let Ok(path) = self.blobs.path_of(&file.digest) {
                        reason = reason.replace(&path.display().to_string(), &file.path);
                    }
                }
                ImageError::Graph(InferenceError::GraphRejected {
                    graph,
                    engine,
                    reason,
                })
            }
            other => ImageError::Graph(other),
        })
    }

    /// Names of a tenant's models.
    pub fn models(&self, tenant: &str) -> Result<Vec<String>, RegistryError> {
        self.registry.models(tenant)
    }

    /// Every version of one model, oldest first.
    pub fn versions(&self, tenant: &str, name: &str) -> Result<Vec<ImageRecord>, RegistryError> {
        self.registry.images(tenant, name)
    }

    /// One version's record.
    pub fn version(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<ImageRecord, RegistryError> {
        self.registry.image(tenant, name, version)
    }

    /// Marks one version shared with other tenants or not (`by`: `admin` or a token id);
    /// the record keeps who changed it and when.
    pub fn set_sharing(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
        shared: bool,
        by: &str,
    ) -> Result<ImageRecord, RegistryError> {
        let sharing = crate::registry::Sharing {
            shared,
            changed_by: by.to_string(),
            changed_at_ms: crate::registry::unix_millis(),
        };
        let record = self.registry.set_sharing(tenant, name, version, sharing)?;
        tracing::info!(
            tenant,
            model = name,
            version,
            shared,
            by,
            "model version sharing changed"
        );
        Ok(record)
    }

    /// The image version ready to run, loading it on first use.
    pub fn load(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<Arc<LoadedImage>, ImageError> {
        let key = (tenant.to_string(), name.to_string(), version);
        if let Some(image) = self.lock_loaded().find(&key) {
            return Ok(image);
        }
        let record = self.registry.image(tenant, name, version)?;
        let manifest = Manifest::parse(&record.manifest)?;
        let label = format!("{tenant}/{name}@{version}");
        // Pinned before they are read: in cluster mode the cache keeps them while in use.
        let pins = self.blobs.use_pins();
        let blobs = record
            .files
            .iter()
            .map(|f| pins.pin(f.digest.clone(), f.size_bytes))
            .collect();
        let handler = self.prepare_handler(&label, &manifest, &record.files)?;
        let graphs = self.load_graphs(&label, &manifest, &record.files)?;
        let limits = manifest.limits.request_limits();
        let image = Arc::new(LoadedImage {
            record,
            manifest,
            handler,
            graphs,
            limits,
            _blobs: blobs,
        });
        // Another load of the version may have finished meanwhile: keep one copy.
        let mut loaded = self.lock_loaded();
        if let Some(first) = loaded.find(&key) {
            return Ok(first);
        }
        loaded.held.retain(|_, held| held.strong_count() > 0);
        loaded.held.insert(key.clone(), Arc::downgrade(&image));
        loaded.kept.insert(key, image.clone());
        Ok(image)
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a loaded version, held copies too (it is being deleted: a later load must
    /// find it gone); its graphs are freed when the last request using them ends.
    pub fn unload(&self, tenant: &str, name: &str, version: u64) {
        let key = (tenant.to_string(), name.to_string(), version);
        let mut loaded = self.lock_loaded();
        loaded.kept.remove(&key);
        loaded.held.remove(&key);
    }

    /// Unloads every loaded version not in `keep` (graphs are freed when the last request
    /// using them ends; until then a load finds the copy still held).
    pub fn retain_only(&self, keep: &std::collections::HashSet<(String, String, u64)>) {
        let mut loaded = self.lock_loaded();
        loaded.kept.retain(|key, _| keep.contains(key));
        loaded.held.retain(|_, held| held.strong_count() > 0);
    }

    /// Deletes a version and collects the blobs nothing references any more.
    pub fn delete(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<ImageRecord, ImageError> {
        let record = self.registry.delete_image(tenant, name, version)?;
        self.unload(tenant, name, version);
        self.stats.remove(tenant, name, version);
        crate::inference::batch_executions::forget(tenant, name, version);
        let blobs: Vec<Digest> = record.blobs().cloned().collect();
        self.collect_garbage(&blobs);
        Ok(record)
    }
}
