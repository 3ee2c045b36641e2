//! Loading an endpoint config's served entities (on a blocking thread, before the config
//! is swapped in): each entity's image version, its runtime with its metrics and log
//! ring, and one build line per entity loaded or failed (the tenant's `.../build-logs`).

use super::entity::EntityRuntime;
use super::observe;
use super::placement::InlinePolicy;
use super::{spare, GuestThreads, PrepareError};
use crate::images::ImageService;
use crate::registry::EndpointConfig;
use crate::telemetry::metrics::EntityLabels;
use crate::telemetry::EntityLogs;
use std::sync::Arc;

/// The endpoint whose entities are loaded, and where their build lines go.
pub(super) struct Endpoint<'a> {
    pub(super) tenant: &'a str,
    pub(super) name: &'a str,
    pub(super) logs: &'a EntityLogs,
}

pub(super) fn load_entities(
    images: &ImageService,
    at: &Endpoint<'_>,
    config: &EndpointConfig,
    inline: InlinePolicy,
    spares: Arc<spare::SpareBudget>,
    threads: Arc<GuestThreads>,
) -> Result<Vec<Arc<EntityRuntime>>, PrepareError> {
    config
        .served_entities
        .iter()
        .map(|entity| {
            let built = load_entity(images, at, entity, inline, spares.clone(), threads.clone());
            let line = match &built {
                Ok(loaded) => format!(
                    "loaded {} version {}: graphs [{}], memory limit {} MiB, timeout {} ms, \
                     max concurrency {}",
                    loaded.model,
                    loaded.version,
                    loaded.image.graphs.names().collect::<Vec<_>>().join(", "),
                    loaded.limits.max_memory_bytes >> 20,
                    loaded.limits.timeout.as_millis(),
                    loaded.max_concurrency
                ),
                Err(e) => format!("failed to load: {e}"),
            };
            observe::build_line(at.logs, at.tenant, at.name, &entity.name, line);
            built
        })
        .collect()
}

fn load_entity(
    images: &ImageService,
    at: &Endpoint<'_>,
    entity: &crate::registry::ServedEntity,
    inline: InlinePolicy,
    spares: Arc<spare::SpareBudget>,
    threads: Arc<GuestThreads>,
) -> Result<Arc<EntityRuntime>, PrepareError> {
    let version = entity
        .version()
        .ok_or_else(|| PrepareError::BadVersion(entity.entity_version.clone()))?;
    observe::build_line(
        at.logs,
        at.tenant,
        at.name,
        &entity.name,
        format!(
            "loading {} version {version} (compile or compile cache, graphs, checks)",
            entity.entity_name
        ),
    );
    // Another tenant's version only while it is shared (`shared`); it is the owner's
    // loaded image, so its graphs (and their batches) are shared with the owner's entities.
    super::shared::check_load(
        images,
        at.tenant,
        &entity.name,
        &entity.entity_name,
        version,
    )?;
    let (owner, model) = super::shared::owner_and_model(at.tenant, &entity.entity_name);
    let image = images
        .load(owner, model, version)
        .map_err(|source| PrepareError::Load {
            entity: entity.name.clone(),
            source,
        })?;
    // Counters, metrics and logs are the serving tenant's, under the name its config uses.
    let stats = images
        .stats()
        .model(at.tenant, &entity.entity_name, version);
    let observed = observe::Observed::endpoint_entity(
        at.logs,
        &EntityLabels {
            tenant: at.tenant,
            endpoint: at.name,
            entity: &entity.name,
            model: &entity.entity_name,
            version,
        },
        stats,
    );
    let entity = EntityRuntime::new(entity, version, image, inline, spares, threads, observed);
    entity.fits_memory_budget()?;
    Ok(Arc::new(entity))
}
