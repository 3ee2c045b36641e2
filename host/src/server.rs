//! The composition root: [`App`] builds one server's state from its [`ServeConfig`] (the
//! data folder's stores or, in cluster mode, the shared PostgreSQL metadata and S3 blobs;
//! the engines, the runtime and memory budget, the guest threads, the endpoints), and
//! [`serve`] binds it and serves until SIGINT or SIGTERM. In cluster mode the node joins
//! the cluster's query routing (queries for versions it does not own go to their owners).
//! On the signal the node drains: `/readyz` answers 503 at once, no new connection is
//! accepted, requests in flight finish (within `--drain-timeout-secs`), the node gives up
//! its lease, and the process exits 0. [`app`] gives the same routes without a listener,
//! for in-process tests.

use crate::api::{router, AppState};
use crate::blobs::{BlobError, BlobStore, S3Blobs};
use crate::cluster::{Cluster, Membership, Seal};
use crate::config::{BlobsConfig, ServeConfig};
use crate::governance::{Governance, GovernanceSettings};
use crate::images::{ComponentCache, ImageService, ImageSettings};
use crate::inference::{EngineSettings, Engines};
use crate::package::UnpackLimits;
use crate::readiness::{Gate, Readiness, OWNED_WARM, STARTUP};
use crate::runtime::{MemoryBudget, Runtime, RuntimeConfig};
use crate::serving::{EndpointManager, GuestThreads, InlinePolicy};
use crate::tenancy::{redacted, AdminBootstrap, Directory};
use axum::Router;
use std::sync::Arc;
use thiserror::Error;

mod follow;
mod metadata;
mod ownership;
mod sweep;

/// Why the server could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A store in the data folder could not be opened.
    #[error("cannot open {what} in {path}: {detail}")]
    Store {
        /// Which store.
        what: &'static str,
        /// The data folder.
        path: String,
        /// Why.
        detail: String,
    },
    /// The runtime could not start.
    #[error("cannot start the wasm runtime: {0}")]
    Runtime(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another server running there?")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No admin credential: nobody could create a tenant.
    #[error("no admin token: set SANDSERVE_ADMIN_TOKEN (at least 16 characters) on first start")]
    NoAdmin,
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::listener::TlsError),
}

/// One server's parts, built from its config: the composition root. Everything a request
/// touches is owned here and handed down (the registry, blob store, compile cache, runtime
/// and its memory budget, the guest threads and their occupancy count, the endpoints and
/// their traffic splits), so two servers in one process share nothing but the engines (see
/// `inference::engines`: the native libraries load once per process).
pub struct App {
    state: AppState,
    endpoints: Arc<EndpointManager>,
    data_dir: std::path::PathBuf,
    startup: Gate,
    /// Cluster mode's follower and lease; `None` with sled metadata.
    shared: Option<metadata::SharedMetadata>,
}

impl App {
    /// Opens the data folder (metadata, blobs, compile cache), bootstraps the admin
    /// credential, loads the engines, starts the runtime and the guest threads, and sweeps
    /// the blobs a crash left behind. Serves nothing yet: see [`App::start`].
    pub fn open(config: &ServeConfig) -> Result<Self, ServeError> {
        // Before any entity makes its metric handles (process-wide, installed once).
        crate::telemetry::metrics::install();
        let data = &config.data_dir;
        let store_error = |what: &'static str| {
            let path = data.display().to_string();
            move |e: &dyn std::fmt::Display| ServeError::Store {
                what,
                path: path.clone(),
                detail: e.to_string(),
            }
        };
        let metadata::OpenedMetadata {
            registry,
            membership,
            shared,
            governance: shared_governance,
        } = metadata::open(config).map_err(|e| store_error("the metadata database")(&e))?;
        let directory = Arc::new(Directory::new(registry.clone(), registry.clone()));
        bootstrap_admin(&directory, config.admin_token.as_deref())?;
        let blobs = open_blobs(config).map_err(|e| store_error("the blob store")(&e))?;

        let mut engine_settings = EngineSettings::from_env();
        if config.engines_dir.is_some() {
            engine_settings.engines_dir = config.engines_dir.clone();
        }
        let engines = Engines::init(&engine_settings);
        let runtime = Arc::new(
            Runtime::new(RuntimeConfig {
                max_concurrent_instances: config.max_instances,
                fuel_metering: config.fuel_metering,
                memory_budget: MemoryBudget::new(config.memory_budget_bytes),
                ..RuntimeConfig::default()
            })
            .map_err(|e| ServeError::Runtime(e.to_string()))?,
        );
        let cache = ComponentCache::open(&data.join("cache/components"), &runtime)
            .map_err(|e| store_error("the compile cache")(&e))?;
        let images = Arc::new(ImageService::new(
            blobs,
            registry.clone(),
            runtime,
            engines,
            cache,
            ImageSettings {
                unpack_limits: UnpackLimits {
                    max_unpacked_bytes: config.max_unpacked_bytes,
                    ..UnpackLimits::default()
                },
                fuel_metering: config.fuel_metering,
                max_concurrent_uploads: config.max_concurrent_uploads,
                max_upload_bytes: config.max_upload_bytes,
            },
        ));
        let guest_threads = GuestThreads::new(config.guest_threads)
            .map_err(|e| ServeError::Runtime(format!("cannot start the guest threads: {e}")))?;
        // Blobs a crash (kill -9 during an upload) left behind: nothing runs yet, so every
        // blob no image references is an orphan (the sweep is safe with uploads anyway).
        // Writes a crash cut short were cleared from `tmp/` when the store opened. Not with
        // shared metadata: another node's upload may be writing a blob no record names yet.
        if shared.is_none() {
            match images.collect_orphans() {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed blobs no image references"),
                Err(e) => tracing::warn!("skipping the sweep of unreferenced blobs: {e}"),
            }
        }
        let governance = Governance::open_with(
            data,
            GovernanceSettings {
                tables: config.inference_tables.clone(),
            },
            shared_governance,
        )
        .map_err(|e| store_error("the governance database")(&e))?;
        let endpoints = EndpointManager::new(
            registry.clone(),
            images.clone(),
            InlinePolicy {
                max_run: config.inline_max_run,
            },
            Arc::new(guest_threads),
            governance.clone(),
        );
        let readiness = Readiness::new();
        let startup = readiness.gate(STARTUP);
        let state = AppState {
            directory,
            images,
            engines,
            endpoints: endpoints.clone(),
            public_metrics: config.public_metrics,
            governance,
            readiness,
            cluster: None,
            membership,
        };
        Ok(Self {
            state,
            endpoints,
            data_dir: data.clone(),
            startup,
            shared,
        })
    }

    /// Cluster mode: queries for endpoint versions this node does not own go to their
    /// owners among `membership`'s live nodes, each version owned by `owners` nodes. Call
    /// before [`App::router`].
    pub fn join_cluster(
        &mut self,
        membership: Arc<dyn Membership>,
        owners: usize,
    ) -> Result<Arc<Cluster>, ServeError> {
        // The cluster's secret seals what this node forwards (a node without one, in
        // tests, seals with a key of its own that no other node accepts).
        let seal = self
            .shared
            .as_ref()
            .and_then(|shared| Seal::new(membership.self_id(), &shared.secret));
        let cluster = match seal {
            Some(seal) => Cluster::with_seal(membership, owners, seal),
            None => Cluster::new(membership, owners),
        };
        let cluster = Arc::new(cluster.map_err(|e| ServeError::Runtime(e.to_string()))?);
        self.state.cluster = Some(cluster.clone());
        self.endpoints
            .set_ownership(Arc::new(ownership::ClusterOwnership(cluster.clone())));
        Ok(cluster)
    }

    /// This node's readiness, for conditions of its own (cluster mode: membership caught
    /// up, owned versions warm) and for draining.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.state.readiness
    }

    /// Starts the idle sweeper and restores the endpoints the registry holds (their
    /// images load in the background); in cluster mode, also starts applying the changes
    /// the other nodes make. Call within a Tokio runtime.
    pub fn start(&self) -> Result<(), ServeError> {
        self.endpoints.sweep_idle();
        tokio::spawn(async {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                ticks.tick().await;
                crate::telemetry::metrics::upkeep();
            }
        });
        let restored = match &self.shared {
            None => self.endpoints.restore_all(),
            Some(shared) => {
                let changes = shared
                    .changes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(changes) = changes {
                    follow::apply_changes(
                        changes,
                        self.state.directory.clone(),
                        self.endpoints.clone(),
                        self.state.governance.clone(),
                    );
                }
                // Updates of nodes that stopped (this one's before a restart included).
                sweep::at_start(&shared.lease, &self.endpoints);
                sweep::watch(shared.lease.clone(), self.endpoints.clone());
                self.endpoints.restore_shared()
            }
        };
        restored.map_err(|e| ServeError::Store {
            what: "the serving endpoints",
            path: self.data_dir.display().to_string(),
            detail: e.to_string(),
        })?;
        // Built and restored (images load in the background, on first use at the latest).
        self.startup.set(true);
        if self.state.cluster.is_some() {
            // Ready once the configs this node owns are loaded (or failed to).
            let warm = self.state.readiness.gate(OWNED_WARM);
            self.endpoints
                .keep_owned_warm(Box::new(move || warm.set(true)));
        }
        Ok(())
    }

    /// The routes over this server's state; what [`serve`] puts behind the listener, and
    /// what in-process tests call with `tower::ServiceExt::oneshot`.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }
}

/// A started server's routes for `config` (its data folder opened, its endpoints restored),
/// without a listener: for tests that call the API in-process.
pub fn app(config: &ServeConfig) -> Result<Router, ServeError> {
    let app = App::open(config)?;
    app.start()?;
    Ok(app.router())
}

/// Builds the server from `config` and serves it until a shutdown signal.
pub async fn serve(mut config: ServeConfig) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    // The bound address (port 0 picks one) is what the node advertises by default.
    config.listen = addr;
    let mut app = App::open(&config)?;
    if app.shared.is_some() {
        let membership = app.state.membership.clone();
        app.join_cluster(membership, config.owners)?;
    }
    app.start()?;
    let mut limits = config.connections.clone();
    // Descriptors beyond the connections: sled, blobs being read, engines, the compile cache.
    limits.max_connections = crate::listener::fit_connection_cap(limits.max_connections, 256);
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, data_dir = %config.data_dir.display(), max_connections = limits.max_connections, "sandserve listening ({scheme})");
    // Scripts and tests read the bound address (the port may be 0 = any) from stdout.
    println!("listening on {scheme}://{addr}");
    let readiness = app.readiness().clone();
    let lease = app.shared.as_ref().map(|shared| shared.lease.clone());
    crate::listener::serve(
        listener,
        app.router(),
        limits,
        config.tls.as_ref(),
        async move {
            shutdown_signal().await;
            // Before the listener closes: a probe on an open connection sees 503 at once.
            readiness.start_draining();
            // Cluster mode: peers stop forwarding here now, not once the drain is over
            // (the requests in flight still finish).
            if let Some(lease) = lease {
                lease.leave();
            }
        },
    )
    .await?;
    tracing::info!("drained; exiting");
    // Usage still in memory and inference-table rows still queued reach the disk.
    if let Err(e) = app.state.governance.flush() {
        tracing::warn!("governance records not flushed at shutdown: {e}");
    }
    Ok(())
}

/// The blob store `config` asks for: the data folder's `blobs/`, or S3 cached in its
/// `cache/blobs/`.
fn open_blobs(config: &ServeConfig) -> Result<BlobStore, BlobError> {
    match &config.blobs {
        BlobsConfig::Local => BlobStore::open(&config.data_dir.join("blobs")),
        BlobsConfig::S3 { s3, cache } => {
            let remote = Arc::new(S3Blobs::connect(s3.clone())?);
            let store =
                BlobStore::open_cached(&config.data_dir.join("cache/blobs"), remote, *cache)?;
            tracing::info!(
                blobs = store.remote().unwrap_or_default(),
                cache_mib = cache.budget_bytes >> 20,
                "blobs in the object store, cached on this node"
            );
            Ok(store)
        }
    }
}

/// Stores the admin token's salted hash; keeps the stored one when none is given.
fn bootstrap_admin(directory: &Directory, token: Option<&str>) -> Result<(), ServeError> {
    let outcome = directory
        .bootstrap_admin(token)
        .map_err(|e| ServeError::Store {
            what: "the metadata database",
            path: String::new(),
            detail: e.to_string(),
        })?;
    match outcome {
        AdminBootstrap::Kept => Ok(()),
        AdminBootstrap::Set => {
            tracing::info!(token = %redacted(token.unwrap_or_default()), "admin token set");
            Ok(())
        }
        AdminBootstrap::Missing => Err(ServeError::NoAdmin),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
