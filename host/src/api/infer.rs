//! `POST /v2/models/{name}/versions/{version}/infer`: KServe V2 inference against one model
//! image version of the caller's tenant, run in a fresh sandbox.

use super::{blocking, ApiError, AppState, Caller, RawBody};
use crate::codec::v2;
use crate::tenancy::Permission;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

/// Largest inference request body.
pub const MAX_INFER_BYTES: usize = 64 << 20;

/// Runs one V2 request on an image version.
pub async fn infer_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.require(Permission::CanQuery, "model", &name)?;
    let version: u64 = version.parse().map_err(|_| {
        ApiError::bad_request(format!("version `{version}` is not a positive integer"))
    })?;
    let tenant = grant.tenant.clone();
    let images = state.images.clone();
    let response = blocking(move || {
        let (parsed, mut request) = v2::parse_request(&body)?;
        let image = images.load(&tenant, &name, version)?;
        if image.manifest.raw_body {
            request.raw_body = Some(body.to_vec());
        }
        let invocation = image
            .handler
            .invoke(&request, &image.limits, image.graphs.nn_ctx())?;
        let response = v2::build_response(
            &name,
            Some(version.to_string()),
            &parsed,
            &invocation.response,
        )
        .map_err(|e| ApiError::internal(format!("handler output: {e}")))?;
        serde_json::to_value(response).map_err(ApiError::internal)
    })
    .await?;
    Ok(Json(response))
}
