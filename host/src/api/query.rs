//! Databricks query API: `POST /serving-endpoints/{name}/invocations` (routed by the
//! traffic split, with optional fallback) and
//! `POST /serving-endpoints/{name}/served-models/{entity}/invocations` (one entity).
//! Bodies: exactly one of `dataframe_split`, `dataframe_records`, `instances`, `inputs`,
//! plus `params`; answers `{"predictions": ...}` with the `served-model-name` header.

use super::{
    codec_work, output_bytes, ApiError, AppState, Caller, RawBody, ENCODE_COST_PER_BYTE,
    PARSE_COST_PER_BYTE,
};
use crate::codec::databricks;
use crate::serving::{ActiveConfig, EntityRuntime, ServingError};
use crate::tenancy::Permission;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::sync::Arc;

/// Largest query body.
pub const MAX_QUERY_BYTES: usize = 64 << 20;

static SERVED_MODEL_NAME: HeaderName = HeaderName::from_static("served-model-name");

/// A JSON answer already serialized (answers are written straight from the handler's
/// output bytes, never held as a JSON tree).
pub struct JsonText(pub Vec<u8>);

impl JsonText {
    /// Serializes `value`; failing is a server error (only a broken `Serialize` can fail).
    pub fn of(value: &impl serde::Serialize) -> Result<Self, ApiError> {
        serde_json::to_vec(value)
            .map(Self)
            .map_err(ApiError::internal)
    }
}

impl IntoResponse for JsonText {
    fn into_response(self) -> Response {
        (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            self.0,
        )
            .into_response()
    }
}

/// A successful answer and the entity that gave it.
pub fn answer(entity: &EntityRuntime, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    if let Ok(value) = HeaderValue::from_str(&entity.name) {
        response
            .headers_mut()
            .insert(SERVED_MODEL_NAME.clone(), value);
    }
    response
}

/// Runs `call` on the routed entity; when the endpoint has fallback on and the call fails
/// with a 5xx, runs it once more on another entity.
pub async fn with_fallback<F, Fut, B>(
    active: &ActiveConfig,
    first: usize,
    call: F,
) -> Result<Response, ApiError>
where
    F: Fn(Arc<EntityRuntime>) -> Fut,
    Fut: Future<Output = Result<B, ApiError>>,
    B: IntoResponse,
{
    let entity = active.entities[first].clone();
    match call(entity.clone()).await {
        Ok(body) => Ok(answer(&entity, body)),
        Err(e) if active.fallback && e.status().is_server_error() => {
            let Some(other) = active.split.others(first).next() else {
                return Err(e);
            };
            let retry = active.entities[other].clone();
            tracing::warn!(from = %entity.name, to = %retry.name, "falling back after a server-side failure");
            let body = call(retry.clone()).await?;
            Ok(answer(&retry, body))
        }
        Err(e) => Err(e),
    }
}

/// One query on one entity, counted in its model version's statistics.
async fn databricks_call(entity: Arc<EntityRuntime>, body: Bytes) -> Result<JsonText, ApiError> {
    let started = std::time::Instant::now();
    let stats = entity.image.stats.clone();
    let result = databricks_call_counted(entity, body).await;
    stats.request(result.is_ok(), started.elapsed());
    result
}

async fn databricks_call_counted(
    entity: Arc<EntityRuntime>,
    body: Bytes,
) -> Result<JsonText, ApiError> {
    let (_, request) = {
        let (entity, body) = (entity.clone(), body.clone());
        let worker = entity.clone();
        codec_work(&worker, body.len(), PARSE_COST_PER_BYTE, move || {
            let started = std::time::Instant::now();
            let signature = entity.image.manifest.signature.as_ref();
            let parsed = databricks::parse_query(&body, signature);
            entity.image.stats.decoded(started.elapsed());
            Ok(parsed?)
        })
        .await?
    };
    let invocation = entity.invoke(request, Some(&body)).await?;
    let size = output_bytes(&invocation.response);
    let worker = entity.clone();
    codec_work(&worker, size, ENCODE_COST_PER_BYTE, move || {
        let started = std::time::Instant::now();
        let encoded = databricks::predictions(&invocation.response)
            .map_err(|e| ApiError::internal(format!("handler output of `{}`: {e}", entity.name)))
            .and_then(|predictions| JsonText::of(&predictions));
        entity.image.stats.encoded(started.elapsed());
        encoded
    })
    .await
}

/// `POST /serving-endpoints/{name}/invocations`.
pub async fn invocations(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let grant = caller.require(Permission::CanQuery, "serving endpoint", &name)?;
    let active = state.endpoints.active(&grant.tenant, &name)?;
    let first = active
        .split
        .pick()
        .ok_or_else(|| ServingError::NotReady(name.clone()))?;
    with_fallback(&active, first, |entity| {
        databricks_call(entity, body.clone())
    })
    .await
}

/// `POST /serving-endpoints/{name}/served-models/{entity}/invocations`: bypasses the split.
pub async fn served_model_invocations(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, entity)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let grant = caller.require(Permission::CanQuery, "serving endpoint", &name)?;
    let active = state.endpoints.active(&grant.tenant, &name)?;
    let target = active
        .entity(&entity)
        .cloned()
        .ok_or(ServingError::NoSuchEntity {
            endpoint: name,
            entity,
        })?;
    let result = databricks_call(target.clone(), body).await?;
    Ok(answer(&target, result))
}
