//! KServe Open Inference Protocol V2 for models and endpoints. `{name}` is a serving
//! endpoint of the caller's tenant when one has that name (routed by its traffic split;
//! `/versions/{v}` picks the served entity of that image version), else a model image
//! (`/versions/{v}` is the image version; without it, the latest).

use super::query::{answer, with_fallback, JsonText};
use super::{
    codec_work, output_bytes, parse_version, ApiError, AppState, Caller, RawBody,
    ENCODE_COST_PER_BYTE, PARSE_COST_PER_BYTE,
};
use crate::codec::{signature, v2};
use crate::images::LoadedImage;
use crate::package::{Manifest, Signature};
use crate::registry::RegistryError;
use crate::serving::{EntityRuntime, ServingError};
use crate::tenancy::{Permission, TenantGrant};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// Parses a V2 body and checks it against the image's signature.
fn parse_checked(
    body: &[u8],
    image: &LoadedImage,
) -> Result<(v2::RequestMeta, crate::runtime::Request), ApiError> {
    let (parsed, mut request) = v2::parse_request(body)?;
    if let Some(sig) = &image.manifest.signature {
        signature::check_request(&request, sig)?;
    }
    if image.manifest.raw_body {
        request.raw_body = Some(body.to_vec());
    }
    Ok((parsed, request))
}

async fn entity_call(
    endpoint: String,
    entity: Arc<EntityRuntime>,
    body: Bytes,
) -> Result<JsonText, ApiError> {
    let (parsed, request) = {
        let entity = entity.clone();
        let budget = entity.image.handler.memory_budget().clone();
        codec_work(&budget, body.len(), PARSE_COST_PER_BYTE, move || {
            parse_checked(&body, &entity.image)
        })
        .await?
    };
    // `parse_checked` already attached the raw body when the manifest asks for it.
    let invocation = entity.invoke(request, None).await?;
    let budget = entity.image.handler.memory_budget().clone();
    let size = output_bytes(&invocation.response);
    codec_work(&budget, size, ENCODE_COST_PER_BYTE, move || {
        let response = v2::build_response(
            &endpoint,
            Some(entity.version.to_string()),
            &parsed,
            &invocation.response,
        )
        .map_err(|e| ApiError::internal(format!("handler output of `{}`: {e}", entity.name)))?;
        JsonText::of(&response)
    })
    .await
}

fn endpoint_exists(state: &AppState, grant: &TenantGrant, name: &str) -> Result<bool, ApiError> {
    match state.registry.endpoint(&grant.tenant, name) {
        Ok(_) => Ok(true),
        Err(RegistryError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn latest_version(state: &AppState, tenant: &str, name: &str) -> Result<u64, ApiError> {
    state
        .registry
        .images(tenant, name)?
        .last()
        .map(|i| i.version)
        .ok_or_else(|| ApiError::not_found(format!("model `{name}` does not exist")))
}

async fn infer(
    state: AppState,
    grant: TenantGrant,
    name: String,
    version: Option<u64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The live map answers for ready endpoints without touching the database.
    let active = match state.endpoints.active(&grant.tenant, &name) {
        Ok(active) => Some(active),
        Err(ServingError::Registry(RegistryError::NotFound { .. })) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(active) = active {
        return match version {
            Some(v) => {
                let entity = active
                    .entities
                    .iter()
                    .find(|e| e.version == v)
                    .cloned()
                    .ok_or(ServingError::NoSuchEntity {
                        endpoint: name.clone(),
                        entity: format!("version {v}"),
                    })?;
                let result = entity_call(name, entity.clone(), body).await?;
                Ok(answer(&entity, result))
            }
            None => {
                let first = active
                    .split
                    .pick()
                    .ok_or_else(|| ServingError::NotReady(name.clone()))?;
                with_fallback(&active, first, |entity| {
                    entity_call(name.clone(), entity, body.clone())
                })
                .await
            }
        };
    }
    let version = match version {
        Some(v) => v,
        None => latest_version(&state, &grant.tenant, &name)?,
    };
    let entity = state
        .endpoints
        .direct_entity(&grant.tenant, &name, version)
        .await?;
    let result = entity_call(name, entity.clone(), body).await?;
    Ok(answer(&entity, result))
}

/// `POST /v2/models/{name}/infer`.
pub async fn infer_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let grant = caller
        .require(Permission::CanQuery, "model", &name)?
        .clone();
    infer(state, grant, name, None, body).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`.
pub async fn infer_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let grant = caller
        .require(Permission::CanQuery, "model", &name)?
        .clone();
    let version = parse_version(&version)?;
    infer(state, grant, name, Some(version), body).await
}

fn tensors(list: &[crate::package::TensorSignature]) -> Value {
    json!(list
        .iter()
        .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
        .collect::<Vec<_>>())
}

fn metadata(name: &str, versions: Vec<String>, signature: Option<&Signature>) -> Value {
    json!({
        "name": name,
        "versions": versions,
        "platform": "sandserve_wasm",
        "inputs": signature.map_or(json!([]), |s| tensors(&s.inputs)),
        "outputs": signature.map_or(json!([]), |s| tensors(&s.outputs)),
    })
}

/// Metadata and readiness of `{name}` (at `version`, when given).
async fn describe(
    state: &AppState,
    grant: &TenantGrant,
    name: &str,
    version: Option<u64>,
) -> Result<(Value, bool), ApiError> {
    if endpoint_exists(state, grant, name)? {
        let record = state.endpoints.record(&grant.tenant, name)?;
        let active = state.endpoints.active(&grant.tenant, name).ok();
        let ready = record.state.ready == "READY" && active.is_some();
        // Parsed, so that a version stored as "01" by an older release still matches 1.
        let numbers: Vec<u64> = record
            .config
            .iter()
            .flat_map(|c| c.served_entities.iter())
            .filter_map(|e| e.entity_version.trim().parse().ok())
            .collect();
        let versions: Vec<String> = numbers.iter().map(u64::to_string).collect();
        if let Some(v) = version {
            if !numbers.contains(&v) {
                return Err(ApiError::not_found(format!(
                    "endpoint `{name}` serves no version {v}"
                )));
            }
        }
        let signature = active.as_ref().and_then(|a| {
            a.entities
                .iter()
                .find(|e| version.is_none_or(|v| e.version == v))
                .and_then(|e| e.image.manifest.signature.clone())
        });
        return Ok((metadata(name, versions, signature.as_ref()), ready));
    }
    let images = state.registry.images(&grant.tenant, name)?;
    let image = match version {
        Some(v) => images.iter().find(|i| i.version == v),
        None => images.last(),
    }
    .ok_or_else(|| ApiError::not_found(format!("model `{name}` does not exist")))?;
    let manifest = Manifest::parse(&image.manifest).map_err(ApiError::internal)?;
    let versions = images.iter().map(|i| i.version.to_string()).collect();
    Ok((metadata(name, versions, manifest.signature.as_ref()), true))
}

/// `GET /v2/models/{name}` and `/versions/{v}`: V2 model metadata.
pub async fn model_metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let (name, version) = name_and_version(&params)?;
    let grant = caller.require(Permission::CanView, "model", &name)?;
    Ok(Json(describe(&state, grant, &name, version).await?.0))
}

/// `GET /v2/models/{name}/ready` and `/versions/{v}/ready`: 200 when ready, 503 otherwise.
pub async fn model_ready(
    State(state): State<AppState>,
    caller: Caller,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let (name, version) = name_and_version(&params)?;
    let grant = caller.require(Permission::CanView, "model", &name)?;
    let (_, ready) = describe(&state, grant, &name, version).await?;
    if ready {
        Ok(Json(json!({ "name": name, "ready": true })))
    } else {
        Err(ApiError::unavailable(
            format!("`{name}` is not ready yet"),
            Some(1),
        ))
    }
}

fn name_and_version(params: &[(String, String)]) -> Result<(String, Option<u64>), ApiError> {
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let name = get("name").ok_or_else(|| ApiError::bad_request("missing model name"))?;
    let version = get("version").map(|v| parse_version(&v)).transpose()?;
    Ok((name, version))
}
