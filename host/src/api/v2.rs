//! KServe Open Inference Protocol V2 inference for models and endpoints, in JSON or with
//! the binary tensor data extension. `{name}` is a serving endpoint of the caller's tenant
//! when one has that name (routed by its traffic split; `/versions/{v}` picks the served
//! entity of that image version), else a model image (`/versions/{v}` is the image
//! version; without it, the latest). The routes only read the binary extension's header,
//! authorize and hand the query to the pipeline (`serving::query`); the protocol is
//! [`V2Codec`]. Metadata, readiness and configuration are in `v2_models`, the repository
//! index and statistics in `v2_extensions`.

use super::query::answer;
use super::{parse_version, ApiError, AppState, Caller, RawBody};
use crate::codec::binary::HEADER_LENGTH;
use crate::codec::{v2, V2Codec};
use crate::serving::query::{Names, Pick, Query};
use crate::tenancy::{Permission, TenantGrant};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

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

/// The V2 codec for a request to `name` with these headers: the binary data
/// extension's header length; a compressed body is refused.
fn codec(name: String, headers: &HeaderMap) -> Result<V2Codec, ApiError> {
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
    Ok(V2Codec {
        model_name: name,
        header_length,
    })
}

async fn infer(
    state: &AppState,
    grant: &TenantGrant,
    codec: V2Codec,
    version: Option<u64>,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let name = codec.model_name.as_str();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let served = state
        .endpoints
        .query_as::<_, ApiError>(Query {
            grant,
            name,
            pick: version.map_or(Pick::Split, Pick::Version),
            names: Names::EndpointsThenModels,
            codec: &codec,
            body,
            request_id,
        })
        .await?;
    Ok(answer(served, |encoded| V2Answer(encoded).into_response()))
}

/// `POST /v2/models/{name}/infer`.
pub async fn infer_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let grant = caller.require(Permission::CanQuery, "model", &name)?;
    let codec = codec(name, &headers)?;
    infer(&state, grant, codec, None, body, &headers).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`.
pub async fn infer_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let grant = caller.require(Permission::CanQuery, "model", &name)?;
    let version = parse_version(&version)?;
    let codec = codec(name, &headers)?;
    infer(&state, grant, codec, Some(version), body, &headers).await
}
