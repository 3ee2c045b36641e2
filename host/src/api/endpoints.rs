//! `/api/2.0/serving-endpoints`: Databricks' serving-endpoints API. Create, list, get and
//! delete endpoints; `PUT .../config` starts a zero-downtime update; `PUT .../ai-gateway`
//! turns fallback on or off; `PATCH .../tags` edits tags. Every Databricks field sandserve
//! does not implement is refused by name ([`super::databricks`]).

use super::databricks::{vet_config, vet_create, vet_gateway};
use super::{blocking, parse_value, ApiError, AppState, Caller, JsonBody};
use crate::registry::{EndpointConfig, EndpointRecord, EndpointTag};
use crate::serving::{ActiveConfig, EndpointMeta, ServingError};
use crate::tenancy::{validate_name, Permission, TenantGrant};
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

impl From<ServingError> for ApiError {
    fn from(e: ServingError) -> Self {
        match e {
            ServingError::InvalidConfig(m) => {
                ApiError::bad_request(m).with_reason("invalid_config")
            }
            ServingError::UpdateInProgress(_) => ApiError::conflict(e.to_string()),
            ServingError::NotReady(_) => ApiError::unavailable(e.to_string(), Some(1)),
            ServingError::NoSuchEntity { .. } | ServingError::NoSuchModel(_) => {
                ApiError::not_found(e.to_string())
            }
            ServingError::Overloaded { .. } => ApiError::rate_limited(e.to_string(), 1),
            ServingError::QueueTimeout(_) => ApiError::unavailable(e.to_string(), Some(1)),
            ServingError::Internal(_) => ApiError::internal(e),
            ServingError::Runtime(r) => r.into(),
            ServingError::Image(i) => i.into(),
            ServingError::Registry(r) => r.into(),
        }
    }
}

/// `{"fallback_config": {"enabled": bool}}` (the other AI gateway fields are vetted away
/// or refused before this is read).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AiGateway {
    #[serde(default)]
    fallback_config: Option<FallbackConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackConfig {
    enabled: bool,
}

/// `POST /api/2.0/serving-endpoints` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    name: String,
    config: EndpointConfig,
    #[serde(default)]
    ai_gateway: Option<AiGateway>,
    #[serde(default)]
    tags: Option<Vec<EndpointTag>>,
    #[serde(default)]
    description: Option<String>,
}

/// `PATCH /api/2.0/serving-endpoints/{name}/tags` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchTags {
    #[serde(default)]
    add_tags: Vec<EndpointTag>,
    #[serde(default)]
    delete_tags: Vec<String>,
}

/// The endpoint as Databricks shows it, with the live entities' deployment state.
pub fn endpoint_json(record: &EndpointRecord, active: Option<&ActiveConfig>) -> Value {
    let mut config = json!(record.config);
    if let (Some(active), Some(entities)) = (active, config["served_entities"].as_array_mut()) {
        for entity in entities {
            let live = entity["name"].as_str().and_then(|n| active.entity(n));
            if let Some(live) = live {
                let graphs: Vec<String> = live
                    .image
                    .graphs
                    .names()
                    .filter_map(|g| {
                        live.image
                            .graphs
                            .get(g)
                            .map(|l| format!("graph `{g}` on {}", l.info().device))
                    })
                    .collect();
                entity["state"] = json!({
                    "deployment": "DEPLOYMENT_READY",
                    "deployment_state_message": if graphs.is_empty() { "ready (no graphs)".to_string() } else { graphs.join("; ") },
                    "max_concurrency": live.max_concurrency,
                    "max_queue": live.max_queue,
                    "running": live.running(),
                });
            }
        }
    }
    let mut body = json!({
        "name": record.name,
        "id": record.id(),
        "creator": record.creator,
        "creation_timestamp": record.creation_timestamp,
        "last_updated_timestamp": record.last_updated_timestamp,
        "state": record.state,
        "config": config,
        "ai_gateway": { "fallback_config": { "enabled": record.fallback_enabled } },
        "tags": record.tags,
    });
    if let Some(description) = &record.description {
        body["description"] = json!(description);
    }
    if let Some(pending) = &record.pending_config {
        body["pending_config"] = json!(pending);
    }
    if let Some(error) = &record.update_error {
        body["state"]["update_error"] = json!(error);
    }
    body
}

fn fallback_of(gateway: Option<&AiGateway>) -> Option<bool> {
    gateway
        .and_then(|g| g.fallback_config.as_ref())
        .map(|f| f.enabled)
}

/// A token scoped to some names may put only models it covers behind an endpoint (else it
/// could query, through an endpoint it covers, a model it cannot see); the answer for one it
/// does not cover is the same 404 as for a model that does not exist.
fn require_models_covered(grant: &TenantGrant, config: &EndpointConfig) -> Result<(), ApiError> {
    match config
        .served_entities
        .iter()
        .find(|e| !grant.covers(&e.entity_name))
    {
        Some(entity) => Err(ApiError::not_found(format!(
            "model `{}` does not exist",
            entity.entity_name
        ))),
        None => Ok(()),
    }
}

/// Creates an endpoint; its config is prepared in the background.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(mut body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    vet_create(&mut body)?;
    let body: CreateEndpoint = parse_value(body)?;
    validate_name("name", &body.name)?;
    let grant = caller
        .require(Permission::CanManage, "serving endpoint", &body.name)?
        .clone();
    require_models_covered(&grant, &body.config)?;
    let meta = EndpointMeta {
        fallback_enabled: fallback_of(body.ai_gateway.as_ref()).unwrap_or(false),
        tags: body.tags.unwrap_or_default(),
        description: body.description,
    };
    let endpoints = state.endpoints.clone();
    let record = blocking(move || {
        Ok(endpoints.create(
            &grant.tenant,
            &grant.token_id,
            &body.name,
            body.config,
            meta,
        )?)
    })
    .await?;
    Ok(Json(endpoint_json(&record, None)))
}

/// Lists the caller's endpoints.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let grant = caller.tenant()?;
    if grant.permission < Permission::CanView {
        return Err(ApiError::forbidden("listing endpoints needs CAN_VIEW"));
    }
    let endpoints: Vec<Value> = state
        .endpoints
        .records(&grant.tenant)?
        .iter()
        .filter(|e| grant.covers(&e.name))
        .map(|e| {
            let active = state.endpoints.active(&e.tenant, &e.name).ok();
            endpoint_json(e, active.as_deref())
        })
        .collect();
    Ok(Json(json!({ "endpoints": endpoints })))
}

/// One endpoint.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.require(Permission::CanView, "serving endpoint", &name)?;
    let record = state.endpoints.record(&grant.tenant, &name)?;
    let active = state.endpoints.active(&grant.tenant, &name).ok();
    Ok(Json(endpoint_json(&record, active.as_deref())))
}

/// Deletes an endpoint.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller
        .require(Permission::CanManage, "serving endpoint", &name)?
        .clone();
    let endpoints = state.endpoints.clone();
    blocking(move || Ok(endpoints.delete(&grant.tenant, &name)?)).await?;
    Ok(Json(json!({})))
}

/// `PUT /api/2.0/serving-endpoints/{name}/config`: starts an update.
pub async fn update_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(mut config): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller
        .require(Permission::CanManage, "serving endpoint", &name)?
        .clone();
    vet_config(&mut config, Some(&name), "")?;
    let config: EndpointConfig = parse_value(config)?;
    require_models_covered(&grant, &config)?;
    let endpoints = state.endpoints.clone();
    let record = blocking(move || Ok(endpoints.update(&grant.tenant, &name, config)?)).await?;
    let active = state.endpoints.active(&record.tenant, &record.name).ok();
    Ok(Json(endpoint_json(&record, active.as_deref())))
}

/// `PUT /api/2.0/serving-endpoints/{name}/ai-gateway`: fallback on or off.
pub async fn update_ai_gateway(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(mut gateway): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller
        .require(Permission::CanManage, "serving endpoint", &name)?
        .clone();
    vet_gateway(&mut gateway, "")?;
    let gateway: AiGateway = parse_value(gateway)?;
    let enabled = fallback_of(Some(&gateway)).unwrap_or(false);
    let endpoints = state.endpoints.clone();
    let record =
        blocking(move || Ok(endpoints.set_fallback(&grant.tenant, &name, enabled)?)).await?;
    Ok(Json(
        json!({ "fallback_config": { "enabled": record.fallback_enabled } }),
    ))
}

/// `PATCH /api/2.0/serving-endpoints/{name}/tags`: deletes `delete_tags`, then adds (or
/// overwrites) `add_tags`; answers the tags after the change.
pub async fn patch_tags(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PatchTags>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller
        .require(Permission::CanManage, "serving endpoint", &name)?
        .clone();
    let endpoints = state.endpoints.clone();
    let tags = blocking(move || {
        Ok(endpoints.patch_tags(&grant.tenant, &name, body.add_tags, &body.delete_tags)?)
    })
    .await?;
    Ok(Json(json!({ "tags": tags })))
}
