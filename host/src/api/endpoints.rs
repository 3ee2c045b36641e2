//! `/api/2.0/serving-endpoints`: Databricks' serving-endpoints API. Create, list, get and
//! delete endpoints; `PUT .../config` starts a zero-downtime update; `PUT .../ai-gateway`
//! sets fallback, rate limits, usage tracking and the inference table (`PUT
//! .../rate-limits`, Databricks' older route, the rate limits alone; `auto_capture_config`
//! in a config, the older inference table); `PATCH .../tags` edits tags. Every Databricks field sandserve
//! does not implement is refused by name ([`super::databricks`]).

use super::databricks::{vet_config, vet_create, vet_gateway};
use super::governance::check_endpoint_quota;
use super::{blocking, parse_value, ApiError, AppState, Caller, JsonBody};
use crate::governance::gateway::UsageTracking;
use crate::governance::{GatewayConfig, InferenceTable, RateLimit};
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
            ServingError::NoSuchEntity { .. }
            | ServingError::NoSuchModel(_)
            | ServingError::NotShared { .. } => ApiError::not_found(e.to_string()),
            ServingError::Overloaded { .. } => ApiError::rate_limited(e.to_string(), 1),
            ServingError::QueueTimeout(_) => ApiError::unavailable(e.to_string(), Some(1)),
            ServingError::Internal(_) => ApiError::internal(e),
            ServingError::Runtime(r) => r.into(),
            ServingError::Image(i) => i.into(),
            ServingError::Registry(r) => r.into(),
        }
    }
}

/// Databricks' `AiGatewayConfig` (guardrails are refused before this is read).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AiGateway {
    #[serde(default)]
    fallback_config: Option<FallbackConfig>,
    #[serde(default)]
    rate_limits: Option<Vec<RateLimit>>,
    #[serde(default)]
    usage_tracking_config: Option<UsageTracking>,
    #[serde(default)]
    inference_table_config: Option<InferenceTable>,
}

impl AiGateway {
    /// Its governance part.
    fn governance(&self) -> Result<GatewayConfig, ApiError> {
        let config = GatewayConfig {
            rate_limits: self.rate_limits.clone().unwrap_or_default(),
            usage_tracking_config: self.usage_tracking_config.clone(),
            inference_table_config: self.inference_table_config.clone(),
        };
        config.validate().map_err(ApiError::bad_request)?;
        Ok(config)
    }
}

/// `PUT /api/2.0/serving-endpoints/{name}/rate-limits` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRateLimits {
    #[serde(default)]
    rate_limits: Vec<RateLimit>,
}

/// Takes `auto_capture_config` (Databricks' older inference table) out of a config.
fn take_auto_capture(config: &mut Value, path: &str) -> Result<Option<InferenceTable>, ApiError> {
    let Some(value) = config
        .as_object_mut()
        .and_then(|o| o.remove("auto_capture_config"))
    else {
        return Ok(None);
    };
    if value.is_null() {
        return Ok(None);
    }
    let table: InferenceTable = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("field `{path}auto_capture_config`: {e}")))?;
    if table
        .sampling_fraction
        .is_some_and(|f| !(f > 0.0 && f <= 1.0))
    {
        return Err(ApiError::bad_request(format!(
            "field `{path}auto_capture_config.sampling_fraction`: not in (0, 1]"
        )));
    }
    Ok(Some(table))
}

/// The AI gateway as Databricks shows it.
fn gateway_json(fallback: bool, gateway: &GatewayConfig) -> Value {
    let mut body = json!(gateway);
    body["fallback_config"] = json!({ "enabled": fallback });
    body
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
    /// Databricks' older place for rate limits (the AI gateway's win when both are set).
    #[serde(default)]
    rate_limits: Option<Vec<RateLimit>>,
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
pub fn endpoint_json(
    record: &EndpointRecord,
    active: Option<&ActiveConfig>,
    gateway: &GatewayConfig,
) -> Value {
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
        "ai_gateway": gateway_json(record.fallback_enabled, gateway),
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
    let auto_capture = match body.get_mut("config") {
        Some(config) => take_auto_capture(config, "config.")?,
        None => None,
    };
    vet_create(&mut body)?;
    let body: CreateEndpoint = parse_value(body)?;
    validate_name("name", &body.name)?;
    let grant = caller
        .require(Permission::CanManage, "serving endpoint", &body.name)?
        .clone();
    require_models_covered(&grant, &body.config)?;
    let mut gateway = body
        .ai_gateway
        .as_ref()
        .map(AiGateway::governance)
        .transpose()?
        .unwrap_or_default();
    if gateway.rate_limits.is_empty() {
        gateway.rate_limits = body.rate_limits.clone().unwrap_or_default();
    }
    if gateway.inference_table_config.is_none() {
        gateway.inference_table_config = auto_capture;
    }
    check_endpoint_quota(&state, &grant.tenant)?;
    let meta = EndpointMeta {
        fallback_enabled: fallback_of(body.ai_gateway.as_ref()).unwrap_or(false),
        tags: body.tags.unwrap_or_default(),
        description: body.description,
    };
    let (endpoints, governance) = (state.endpoints.clone(), state.governance.clone());
    let (record, gateway) = blocking(move || {
        let record = endpoints.create(
            &grant.tenant,
            &grant.token_id,
            &body.name,
            body.config,
            meta,
        )?;
        let gateway = governance.set_gateway(&grant.tenant, &body.name, gateway)?;
        Ok((record, gateway))
    })
    .await?;
    Ok(Json(endpoint_json(&record, None, &gateway)))
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
            let gateway = state.governance.gateway(&e.tenant, &e.name);
            endpoint_json(e, active.as_deref(), &gateway)
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
    let gateway = state.governance.gateway(&grant.tenant, &name);
    Ok(Json(endpoint_json(&record, active.as_deref(), &gateway)))
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
    let (endpoints, governance) = (state.endpoints.clone(), state.governance.clone());
    blocking(move || {
        endpoints.delete(&grant.tenant, &name)?;
        Ok(governance.forget_endpoint(&grant.tenant, &name)?)
    })
    .await?;
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
    let auto_capture = take_auto_capture(&mut config, "")?;
    vet_config(&mut config, Some(&name), "")?;
    let config: EndpointConfig = parse_value(config)?;
    require_models_covered(&grant, &config)?;
    let (endpoints, governance) = (state.endpoints.clone(), state.governance.clone());
    let (record, gateway) = blocking(move || {
        let record = endpoints.update(&grant.tenant, &name, config)?;
        let mut gateway = governance.gateway(&grant.tenant, &name);
        if let Some(table) = auto_capture {
            gateway.inference_table_config = Some(table);
            gateway = governance.set_gateway(&grant.tenant, &name, gateway)?;
        }
        Ok((record, gateway))
    })
    .await?;
    let active = state.endpoints.active(&record.tenant, &record.name).ok();
    Ok(Json(endpoint_json(&record, active.as_deref(), &gateway)))
}

/// `PUT /api/2.0/serving-endpoints/{name}/ai-gateway`: replaces the AI gateway (what the
/// body leaves out is turned off).
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
    let governed = gateway.governance()?;
    let (endpoints, governance) = (state.endpoints.clone(), state.governance.clone());
    let (record, governed) = blocking(move || {
        let record = endpoints.set_fallback(&grant.tenant, &name, enabled)?;
        let governed = governance.set_gateway(&grant.tenant, &name, governed)?;
        Ok((record, governed))
    })
    .await?;
    Ok(Json(gateway_json(record.fallback_enabled, &governed)))
}

/// `PUT /api/2.0/serving-endpoints/{name}/rate-limits` (Databricks' older route): replaces
/// the endpoint's rate limits alone.
pub async fn put_rate_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutRateLimits>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller
        .require(Permission::CanManage, "serving endpoint", &name)?
        .clone();
    state.endpoints.record(&grant.tenant, &name)?;
    let governance = state.governance.clone();
    let gateway = blocking(move || {
        let mut gateway = governance.gateway(&grant.tenant, &name);
        gateway.rate_limits = body.rate_limits;
        Ok(governance.set_gateway(&grant.tenant, &name, gateway)?)
    })
    .await?;
    Ok(Json(json!({ "rate_limits": gateway.rate_limits })))
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
