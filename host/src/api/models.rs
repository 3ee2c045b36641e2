//! `/api/2.0/models`: uploading model packages as new image versions, listing, reading and
//! deleting them, and marking a version shared with other tenants (`PATCH`; see
//! `serving::shared`). Everything happens inside the caller's tenant; another tenant's
//! models are simply not there (404), shared or not.

use super::{blocking, parse_version, ApiError, AppState, Caller};
use crate::blobs::Digest;
use crate::images::UploadError;
use crate::package::Manifest;
use crate::registry::ImageRecord;
use crate::tenancy::{validate_name, Permission};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

/// How much of an oversized upload is read and discarded before answering 413, so that
/// clients that do not wait for `100 Continue` still read the answer.
const LINGER_BYTES: u64 = 32 << 20;
/// How much of an upload refused for want of a slot is read and discarded: enough for
/// a small package to be read whole, little enough that refusing holds nothing long.
const BUSY_LINGER_BYTES: u64 = 1 << 20;

/// Reads and discards up to [`LINGER_BYTES`] more of the body, for at most 5 seconds.
async fn linger(stream: &mut axum::body::BodyDataStream) {
    drain(stream, LINGER_BYTES, std::time::Duration::from_secs(5)).await;
}

/// Reads and discards up to `bytes` more of the body, for at most `time`.
async fn drain(stream: &mut axum::body::BodyDataStream, bytes: u64, time: std::time::Duration) {
    let drain = async {
        let mut drained = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len() as u64;
            if drained > bytes {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(time, drain).await;
}

fn version_summary(image: &ImageRecord) -> Value {
    json!({
        "name": image.name,
        "version": image.version,
        "digest": image.digest,
        "size_bytes": image.size_bytes,
        // Stored in seconds; answered in epoch milliseconds, as Databricks answers.
        "creation_timestamp": image.created_at.saturating_mul(1000),
        "created_by": image.created_by,
        "shared": image.is_shared(),
        // The last change of `shared`: who (`admin` or a token id) and when (epoch ms).
        "sharing": image.sharing.as_ref().map(|s| json!({
            "changed_by": s.changed_by,
            "changed_at": s.changed_at_ms,
        })),
    })
}

/// `PATCH /api/2.0/models/{name}/versions/{v}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchVersion {
    /// Whether other tenants may serve the version from their own endpoints.
    shared: bool,
}

/// `PATCH /api/2.0/models/{name}/versions/{v}` query: the admin names the tenant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerQuery {
    #[serde(default)]
    tenant: Option<String>,
}

/// `PATCH /api/2.0/models/{name}/versions/{v}` `{"shared": true|false}`: marks the version
/// shared with every other tenant (they may serve it from their own endpoints as
/// `owner/model`; nothing else of it is theirs to see) or not (every other tenant's
/// endpoint serving it stops at once). CAN_MANAGE on the model, or the admin with
/// `?tenant=`.
pub async fn patch_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
    Query(owner): Query<OwnerQuery>,
    super::JsonBody(body): super::JsonBody<PatchVersion>,
) -> Result<Json<Value>, ApiError> {
    let version = parse_version(&version)?;
    let (tenant, by) = match (&caller.0, owner.tenant) {
        (crate::tenancy::Principal::Admin, Some(tenant)) => {
            validate_name("tenant", &tenant)?;
            (tenant, "admin".to_string())
        }
        (crate::tenancy::Principal::Admin, None) => {
            return Err(ApiError::bad_request(
                "query parameter `tenant`: the admin token names the model's tenant",
            ))
        }
        (crate::tenancy::Principal::Tenant(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "query parameter `tenant`: only the admin token names a tenant; a tenant \
                 token acts on its own models",
            ))
        }
        (crate::tenancy::Principal::Tenant(_), None) => {
            let grant = caller.require(Permission::CanManage, "model", &name)?;
            (grant.tenant.clone(), grant.token_id.clone())
        }
    };
    let endpoints = state.endpoints.clone();
    let record =
        blocking(move || Ok(endpoints.set_sharing(&tenant, &name, version, body.shared, &by)?))
            .await?;
    Ok(Json(version_summary(&record)))
}

/// `GET /api/2.0/models`: the caller's models.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let grant = caller.tenant()?;
    if grant.permission < Permission::CanView {
        return Err(ApiError::forbidden("listing models needs CAN_VIEW"));
    }
    let mut models = Vec::new();
    for name in state.images.models(&grant.tenant)? {
        if !grant.covers(&name) {
            continue;
        }
        let versions = state.images.versions(&grant.tenant, &name)?;
        if let Some(latest) = versions.last() {
            models.push(json!({
                "name": name,
                "latest_version": latest.version,
                "versions": versions.len(),
                "description": Manifest::parse(&latest.manifest).ok().and_then(|m| m.description),
            }));
        }
    }
    Ok(Json(json!({ "models": models })))
}

/// `GET /api/2.0/models/{name}/versions`.
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.require(Permission::CanView, "model", &name)?;
    let versions = state.images.versions(&grant.tenant, &name)?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "model `{name}` does not exist"
        )));
    }
    Ok(Json(
        json!({ "versions": versions.iter().map(version_summary).collect::<Vec<_>>() }),
    ))
}

/// `GET /api/2.0/models/{name}/versions/{version}`: metadata, manifest, files and the
/// capabilities the image declares.
pub async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.require(Permission::CanView, "model", &name)?;
    let version = parse_version(&version)?;
    let image = state.images.version(&grant.tenant, &name, version)?;
    let manifest = Manifest::parse(&image.manifest).map_err(ApiError::internal)?;
    let mut body = version_summary(&image);
    body["description"] = json!(manifest.description);
    body["manifest"] = json!(manifest);
    body["files"] = json!(image.files);
    body["capabilities"] = json!({
        "graphs": manifest.graphs.iter().map(|g| json!({
            "name": g.name,
            "encoding": g.encoding,
            "target": g.options().target,
        })).collect::<Vec<_>>(),
        "raw_body": manifest.raw_body,
        "guest_load": manifest.guest_load,
        "limits": manifest.limits,
        "signature": manifest.signature,
    });
    Ok(Json(body))
}

/// `DELETE /api/2.0/models/{name}/versions/{version}`.
pub async fn delete_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.require(Permission::CanManage, "model", &name)?;
    let version = parse_version(&version)?;
    let tenant = grant.tenant.clone();
    // Which tenants serve it is theirs to know: the answer says only that some do.
    if state
        .endpoints
        .shared_and_served_by_others(&tenant, &name, version)?
    {
        return Err(ApiError::conflict(format!(
            "version {version} of `{name}` is shared and another tenant's endpoint serves it; \
             unshare it first (PATCH this version with {{\"shared\": false}}; their endpoints \
             stop serving it), then delete it"
        )));
    }
    if let Some(endpoint) = state.endpoints.serves_image(&tenant, &name, version)? {
        return Err(ApiError::conflict(format!(
            "version {version} of `{name}` is served by endpoint `{endpoint}`; take it out of that endpoint's config first"
        )));
    }
    let endpoints = state.endpoints.clone();
    let (t, n) = (tenant.clone(), name.clone());
    blocking(move || Ok(state.images.delete(&t, &n, version)?)).await?;
    // After the delete: a direct query loading the version meanwhile finds it gone (see
    // `EndpointManager::direct_entity`).
    endpoints.release_direct(&tenant, &name, version);
    Ok(Json(json!({})))
}

/// The checks of an upload that need no body: who, which name, which content type, which
/// digest.
fn check_upload(
    caller: Result<Caller, ApiError>,
    name: &str,
    headers: &HeaderMap,
) -> Result<(crate::tenancy::TenantGrant, Option<Digest>), ApiError> {
    let grant = caller?
        .require(Permission::CanManage, "model", name)?
        .clone();
    validate_name("name", name)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let accepted = [
        "application/x-tar",
        "application/gzip",
        "application/x-gzip",
        "application/octet-stream",
    ];
    if !accepted.iter().any(|t| content_type.starts_with(t)) {
        return Err(ApiError::unsupported_media(format!(
            "upload the package as application/x-tar or application/gzip, not `{content_type}`"
        )));
    }
    let expected = headers
        .get("x-content-sha256")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| Digest::parse(s).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("header `X-Content-Sha256`: expected 64 hex characters")
                })
        })
        .transpose()?;
    Ok((grant, expected))
}

/// `POST /api/2.0/models/{name}/versions`: streams the package into an upload
/// (`images::Upload`: bounded memory, 413 past the limit), which checks `X-Content-Sha256`
/// when sent, then validates and publishes. At most `max_concurrent_uploads` run at once;
/// one more is refused at once (429).
pub async fn upload(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut stream = body.into_data_stream();
    let checked = check_upload(caller, &name, &headers);
    let (grant, expected) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            // Read (and drop) what the client is still sending, so that it reads the answer
            // and can reuse the connection.
            linger(&mut stream).await;
            return Err(e);
        }
    };
    if let Err(e) = super::governance::check_image_quota(&state, &grant.tenant, &headers) {
        linger(&mut stream).await;
        return Err(e);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = state.images.max_upload_bytes();
    if declared.is_some_and(|len| len > limit.saturating_add(LINGER_BYTES)) {
        // Far too large: answer at once (clients sending `Expect: 100-continue` never send it).
        return Err(UploadError::TooLarge { limit }.into());
    }
    // Holds an upload slot until it is published or refused (or its client goes away).
    let mut upload = match state.images.begin_upload(expected) {
        Ok(upload) => upload,
        Err(e) => {
            if matches!(e, UploadError::Busy { .. }) {
                drain(
                    &mut stream,
                    BUSY_LINGER_BYTES,
                    std::time::Duration::from_secs(1),
                )
                .await;
            }
            return Err(e.into());
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::body_unreadable(&e))?;
        if let Err(e) = tokio::task::block_in_place(|| upload.write(&chunk)) {
            drop(upload);
            linger(&mut stream).await;
            return Err(e.into());
        }
    }
    metrics::counter!(
        crate::telemetry::metrics::names::UPLOAD_BYTES,
        "tenant" => grant.tenant.clone()
    )
    .increment(upload.written());
    let tenant = grant.tenant.clone();
    let created_by = grant.token_id.clone();
    let record = blocking(move || Ok(upload.publish(&tenant, &name, &created_by)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": record.name,
            "version": record.version,
            "digest": record.digest,
            "size_bytes": record.size_bytes,
        })),
    ))
}
