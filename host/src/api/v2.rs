//! KServe Open Inference Protocol V2 inference for models and endpoints, in JSON or with
//! the binary tensor data extension. `{name}` is a serving endpoint of the caller's tenant
//! when one has that name (routed by its traffic split; `/versions/{v}` picks the served
//! entity of that image version), else a model image (`/versions/{v}` is the image
//! version; without it, the latest). Metadata, readiness and configuration are in
//! `v2_models`, the repository index and statistics in `v2_extensions`.

use super::query::{answer, with_fallback};
use super::{
    codec_work, output_bytes, parse_version, ApiError, AppState, Caller, RawBody,
    ENCODE_COST_PER_BYTE, PARSE_COST_PER_BYTE,
};
use crate::codec::binary::HEADER_LENGTH;
use crate::codec::{signature, v2};
use crate::images::LoadedImage;
use crate::registry::RegistryError;
use crate::serving::{EntityRuntime, ServingError};
use crate::tenancy::{Permission, TenantGrant};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// Parses a V2 body (JSON, or JSON and binary tensor data) and checks it against the
/// image's signature.
fn parse_checked(
    body: &[u8],
    header_length: Option<&str>,
    image: &LoadedImage,
) -> Result<(v2::RequestMeta, crate::runtime::Request), ApiError> {
    let (parsed, mut request) = v2::parse_request(body, header_length)?;
    if let Some(sig) = &image.manifest.signature {
        signature::check_request(&request, sig)?;
    }
    if image.manifest.raw_body {
        request.raw_body = Some(body.to_vec());
    }
    Ok((parsed, request))
}

/// A V2 answer: JSON, or a JSON header and binary outputs after it.
pub struct V2Answer(v2::EncodedResponse);

impl IntoResponse for V2Answer {
    fn into_response(self) -> Response {
        let v2::EncodedResponse {
            header_length,
            chunks,
        } = self.0;
        let Some(length) = header_length else {
            let body = chunks.into_iter().next().unwrap_or_default();
            return (
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body,
            )
                .into_response();
        };
        // The chunks are the handler's own buffers, written out as they are.
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        (
            [
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    HeaderName::from_static("inference-header-content-length"),
                    length.into(),
                ),
            ],
            Body::from_stream(stream),
        )
            .into_response()
    }
}

/// What a V2 request carries besides its body: the binary data extension's header.
#[derive(Debug, Clone, Default)]
struct Framing {
    header_length: Option<String>,
}

impl Framing {
    fn of(headers: &HeaderMap) -> Result<Self, ApiError> {
        if let Some(encoding) = headers.get(CONTENT_ENCODING) {
            if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
                return Err(ApiError::bad_request(format!(
                    "header `Content-Encoding`: {encoding:?} is not supported; send the body \
                     uncompressed"
                )));
            }
        }
        let header_length = headers
            .get(HEADER_LENGTH)
            .map(|v| {
                v.to_str().map(str::to_string).map_err(|_| {
                    ApiError::bad_request(format!("header `{HEADER_LENGTH}`: not a byte count"))
                })
            })
            .transpose()?;
        Ok(Self { header_length })
    }
}

async fn entity_call(
    endpoint: String,
    entity: Arc<EntityRuntime>,
    body: Bytes,
    framing: Framing,
) -> Result<V2Answer, ApiError> {
    let started = Instant::now();
    let stats = entity.image.stats.clone();
    let result = entity_call_counted(endpoint, entity, body, framing).await;
    stats.request(result.is_ok(), started.elapsed());
    result
}

async fn entity_call_counted(
    endpoint: String,
    entity: Arc<EntityRuntime>,
    body: Bytes,
    framing: Framing,
) -> Result<V2Answer, ApiError> {
    let (parsed, request) = {
        let entity = entity.clone();
        let worker = entity.clone();
        codec_work(&worker, body.len(), PARSE_COST_PER_BYTE, move || {
            let started = Instant::now();
            let parsed = parse_checked(&body, framing.header_length.as_deref(), &entity.image);
            entity.image.stats.decoded(started.elapsed());
            parsed
        })
        .await?
    };
    // `parse_checked` already attached the raw body when the manifest asks for it.
    let invocation = entity.invoke(request, None).await?;
    let size = output_bytes(&invocation.response);
    let worker = entity.clone();
    codec_work(&worker, size, ENCODE_COST_PER_BYTE, move || {
        let started = Instant::now();
        let encoded = v2::encode_response(
            &endpoint,
            Some(entity.version.to_string()),
            &parsed,
            invocation.response,
        )
        .map_err(|e| ApiError::internal(format!("handler output of `{}`: {e}", entity.name)));
        entity.image.stats.encoded(started.elapsed());
        Ok(V2Answer(encoded?))
    })
    .await
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
    framing: Framing,
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
                let result = entity_call(name, entity.clone(), body, framing).await?;
                Ok(answer(&entity, result))
            }
            None => {
                let first = active
                    .split
                    .pick()
                    .ok_or_else(|| ServingError::NotReady(name.clone()))?;
                with_fallback(&active, first, |entity| {
                    entity_call(name.clone(), entity, body.clone(), framing.clone())
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
    let result = entity_call(name, entity.clone(), body, framing).await?;
    Ok(answer(&entity, result))
}

/// `POST /v2/models/{name}/infer`.
pub async fn infer_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let grant = caller
        .require(Permission::CanQuery, "model", &name)?
        .clone();
    let framing = Framing::of(&headers)?;
    infer(state, grant, name, None, body, framing).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`.
pub async fn infer_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let grant = caller
        .require(Permission::CanQuery, "model", &name)?
        .clone();
    let version = parse_version(&version)?;
    let framing = Framing::of(&headers)?;
    infer(state, grant, name, Some(version), body, framing).await
}
