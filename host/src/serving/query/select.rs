//! Picking the served entity of a query: an endpoint's entity by the traffic split, by
//! name or by image version, or a bare model version; and the entity a failed try falls
//! back to. The decisions are plain functions over the endpoint's entities, so they are
//! tested without loading anything.

use super::super::{ActiveConfig, EndpointManager, EntityRuntime, ServingError, Split};
use super::error::QueryError;
use crate::registry::RegistryError;
use std::sync::Arc;

/// Which entity of the named endpoint or model serves the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick<'a> {
    /// The endpoint's traffic split (with fallback when the endpoint has it on); for a
    /// bare model name, its latest version.
    Split,
    /// The endpoint's served entity of this name (Databricks' `served-models/{entity}`).
    Entity(&'a str),
    /// The endpoint's served entity of this image version; for a bare model name, this
    /// version (KServe V2's `/versions/{v}`).
    Version(u64),
}

/// What a query's name may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// A serving endpoint only (Databricks).
    Endpoints,
    /// A serving endpoint of the tenant when one has the name, else a model (KServe V2).
    EndpointsThenModels,
}

/// What a served entity is known by, for picking it.
pub(super) trait Candidate {
    /// Its name within the endpoint.
    fn name(&self) -> &str;
    /// Its image version.
    fn version(&self) -> u64;
}

impl Candidate for Arc<EntityRuntime> {
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// The index of the entity of `endpoint` that serves `pick`; `draw` picks by the split.
pub(super) fn on_endpoint<E: Candidate>(
    endpoint: &str,
    entities: &[E],
    split: &Split,
    pick: Pick<'_>,
    draw: impl FnOnce(&Split) -> Option<usize>,
) -> Result<usize, ServingError> {
    let missing = |entity: String| ServingError::NoSuchEntity {
        endpoint: endpoint.to_string(),
        entity,
    };
    match pick {
        Pick::Split => draw(split).ok_or_else(|| ServingError::NotReady(endpoint.to_string())),
        Pick::Entity(name) => entities
            .iter()
            .position(|e| e.name() == name)
            .ok_or_else(|| missing(name.to_string())),
        Pick::Version(v) => entities
            .iter()
            .position(|e| e.version() == v)
            .ok_or_else(|| missing(format!("version {v}"))),
    }
}

/// The image version a bare model name serves for `pick`: the one asked for, else the
/// latest (`latest`). `None` when `pick` names a served entity, which only endpoints have.
pub(super) fn model_version(
    pick: Pick<'_>,
    latest: impl FnOnce() -> Result<u64, ServingError>,
) -> Option<Result<u64, ServingError>> {
    match pick {
        Pick::Split => Some(latest()),
        Pick::Version(v) => Some(Ok(v)),
        Pick::Entity(_) => None,
    }
}

/// The entity to try next after the entity at `failed` failed with `error`: with
/// fallback on and after a server-side failure only, the next one in route order.
pub(super) fn fallback(
    fallback_enabled: bool,
    split: &Split,
    failed: usize,
    error: &QueryError,
) -> Option<usize> {
    if !fallback_enabled || !error.is_server_side() {
        return None;
    }
    split.others(failed).next()
}

/// The entity chosen for a query.
pub(super) enum Chosen {
    /// An endpoint's entity picked by its split: another may take over on failure.
    Routed {
        /// The endpoint's config serving now.
        active: Arc<ActiveConfig>,
        /// The index of the entity picked.
        first: usize,
    },
    /// The one entity the query named.
    One(Arc<EntityRuntime>),
}

/// Picks the entity for `pick` of `name` in `tenant`'s endpoints (then models, when
/// `names` allows them; a bare model version is loaded on first use).
pub(super) async fn choose(
    endpoints: &Arc<EndpointManager>,
    tenant: &str,
    name: &str,
    pick: Pick<'_>,
    names: Names,
) -> Result<Chosen, ServingError> {
    // The live table answers for ready endpoints without touching the database.
    let no_endpoint = match endpoints.active_or_load(tenant, name).await {
        Ok(active) => {
            let index = on_endpoint(name, &active.entities, &active.split, pick, Split::pick)?;
            return Ok(match pick {
                Pick::Split => Chosen::Routed {
                    active,
                    first: index,
                },
                Pick::Entity(_) | Pick::Version(_) => Chosen::One(active.entities[index].clone()),
            });
        }
        Err(e @ ServingError::Registry(RegistryError::NotFound { .. }))
            if names == Names::EndpointsThenModels =>
        {
            e
        }
        Err(e) => return Err(e),
    };
    // Only endpoints have named entities: for those, the endpoint's absence is the answer.
    let Some(version) = model_version(pick, || endpoints.latest_version(tenant, name)) else {
        return Err(no_endpoint);
    };
    let entity = endpoints.direct_entity(tenant, name, version?).await?;
    Ok(Chosen::One(entity))
}
