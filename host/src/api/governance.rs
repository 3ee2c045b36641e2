//! Governance routes: usage (`GET /api/2.0/usage`), inference tables
//! (`GET /api/2.0/serving-endpoints/{name}/inference-table`), the audit log
//! (`GET /api/2.0/audit`, and [`audit`], the middleware that writes it for every
//! control-plane call), tenant quotas (`GET/PUT /api/2.0/tenants/{name}/quotas`) and the
//! quota checks the endpoint and upload routes call.

use super::{blocking, ApiError, AppState, Caller};
use crate::governance::audit::AuditEntry;
use crate::governance::usage::{to_csv, UsageFilter};
use crate::governance::{now_ms, GovernanceError, TenantQuotas};
use crate::tenancy::{Permission, Principal};
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

impl From<GovernanceError> for ApiError {
    fn from(e: GovernanceError) -> Self {
        ApiError::internal(e)
    }
}

/// Most rows one read answers.
const MAX_ROWS: usize = 10_000;

/// `?from=&to=` (Unix milliseconds; `to` exclusive) and what each route adds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

impl Range {
    fn bounds(&self) -> Result<(u64, u64), ApiError> {
        let from = self.from.unwrap_or(0);
        let to = self.to.unwrap_or(u64::MAX / 2);
        if from > to {
            return Err(ApiError::bad_request("`from` is after `to`"));
        }
        Ok((from, to))
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(1000),
            Some(n) if (1..=MAX_ROWS).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!(
                "`limit` {n} is not in 1..={MAX_ROWS}"
            ))),
        }
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let given = [
            ("endpoint", self.endpoint.is_some()),
            ("tenant", self.tenant.is_some()),
            ("limit", self.limit.is_some()),
        ];
        match given.iter().find(|(n, set)| *set && !allowed.contains(n)) {
            Some((n, _)) => Err(ApiError::bad_request(format!(
                "query parameter `{n}` is not taken by this route"
            ))),
            None => Ok(()),
        }
    }
}

fn wants(headers: &HeaderMap, format: Option<&str>, name: &str, types: &[&str]) -> bool {
    if let Some(f) = format {
        return f.eq_ignore_ascii_case(name);
    }
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| types.iter().any(|t| accept.contains(t)))
}

fn check_format(format: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match format {
        Some(f) if !allowed.iter().any(|a| a.eq_ignore_ascii_case(f)) => Err(
            ApiError::bad_request(format!("`format` {f:?} is not one of {allowed:?}")),
        ),
        _ => Ok(()),
    }
}

/// `GET /api/2.0/usage?from=&to=&endpoint=[&tenant=][&format=csv]`: a tenant token reads
/// its own tenant's usage (the endpoints it covers); the admin reads all, or one tenant.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    range.only(&["endpoint", "tenant"])?;
    check_format(range.format.as_deref(), &["json", "csv"])?;
    let (from_ms, to_ms) = range.bounds()?;
    let grant = match &caller.0 {
        Principal::Admin => None,
        Principal::Tenant(grant) => {
            if range.tenant.as_ref().is_some_and(|t| *t != grant.tenant) {
                return Err(ApiError::forbidden(
                    "a tenant token reads its own tenant's usage only",
                ));
            }
            Some(grant.clone())
        }
    };
    // A tenant token reads nothing from before its tenant was created (a tenant deleted
    // and created again under the name does not see the old one's usage).
    let from_ms = match &grant {
        Some(g) => from_ms.max(
            state
                .directory
                .tenant(&g.tenant)?
                .created_at
                .saturating_mul(1000),
        ),
        None => from_ms,
    };
    let filter = UsageFilter {
        from_ms,
        to_ms,
        tenant: grant.as_ref().map(|g| g.tenant.clone()).or(range.tenant),
        endpoint: range.endpoint,
    };
    let governance = state.governance.clone();
    let mut rows = blocking(move || Ok(governance.usage.read(&filter)?)).await?;
    if let Some(grant) = &grant {
        rows.retain(|r| grant.covers(&r.endpoint));
    }
    if wants(&headers, range.format.as_deref(), "csv", &["text/csv"]) {
        let text = to_csv(&rows)?;
        let csv = HeaderValue::from_static("text/csv; charset=utf-8");
        return Ok(([(CONTENT_TYPE, csv)], text).into_response());
    }
    Ok(Json(json!({ "usage": rows })).into_response())
}

/// `GET /api/2.0/serving-endpoints/{name}/inference-table?from=&to=&limit=[&format=jsonl]`
/// (CAN_MANAGE: the rows hold request and response payloads).
pub async fn inference_table(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    range.only(&["limit"])?;
    check_format(range.format.as_deref(), &["json", "jsonl"])?;
    let grant = caller.require(Permission::CanManage, "serving endpoint", &name)?;
    state.endpoints.record(&grant.tenant, &name)?;
    let (from_ms, to_ms) = range.bounds()?;
    let limit = range.limit()?;
    let (governance, tenant) = (state.governance.clone(), grant.tenant.clone());
    let (rows, truncated) = blocking(move || {
        Ok(governance
            .tables
            .read(&tenant, &name, from_ms, to_ms, limit)?)
    })
    .await?;
    let jsonl = ["application/x-ndjson", "application/jsonl"];
    if wants(&headers, range.format.as_deref(), "jsonl", &jsonl) {
        let mut text = rows.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let kind = HeaderValue::from_static("application/x-ndjson");
        return Ok(([(CONTENT_TYPE, kind)], text).into_response());
    }
    let rows: Vec<Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    Ok(Json(json!({
        "rows": rows,
        "truncated": truncated,
        "dropped_rows": state.governance.tables.dropped(),
    }))
    .into_response())
}

/// `GET /api/2.0/audit?from=&to=&limit=` (admin).
pub async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    Query(range): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    range.only(&["limit"])?;
    check_format(range.format.as_deref(), &["json"])?;
    let (from_ms, to_ms) = range.bounds()?;
    let limit = range.limit()?;
    let governance = state.governance.clone();
    let (entries, truncated) =
        blocking(move || Ok(governance.audit.read(from_ms, to_ms, limit)?)).await?;
    Ok(Json(json!({ "entries": entries, "truncated": truncated })))
}

fn tenant_exists(state: &AppState, name: &str) -> Result<(), ApiError> {
    state.directory.tenant(name)?;
    Ok(())
}

/// `GET /api/2.0/tenants/{name}/quotas` (admin).
pub async fn get_quotas(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TenantQuotas>, ApiError> {
    caller.require_admin()?;
    tenant_exists(&state, &name)?;
    Ok(Json(state.governance.quotas(&name)))
}

/// `PUT /api/2.0/tenants/{name}/quotas` (admin): replaces the tenant's quotas.
pub async fn put_quotas(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    super::JsonBody(quotas): super::JsonBody<TenantQuotas>,
) -> Result<Json<TenantQuotas>, ApiError> {
    caller.require_admin()?;
    tenant_exists(&state, &name)?;
    if quotas.max_concurrent_requests == Some(0) {
        return Err(ApiError::bad_request(
            "field `max_concurrent_requests`: must be at least 1",
        ));
    }
    let governance = state.governance.clone();
    let stored = quotas.clone();
    blocking(move || Ok(governance.set_quotas(&name, stored)?)).await?;
    Ok(Json(quotas))
}

/// Refuses a new endpoint past the tenant's `max_endpoints`.
pub fn check_endpoint_quota(state: &AppState, tenant: &str) -> Result<(), ApiError> {
    let Some(max) = state.governance.quotas(tenant).max_endpoints else {
        return Ok(());
    };
    let have = state.endpoints.records(tenant)?.len() as u64;
    if have >= max {
        return Err(ApiError::quota_exceeded(format!(
            "the tenant has {have} serving endpoints, its quota is {max}"
        )));
    }
    Ok(())
}

/// Refuses an upload that would take the tenant's images past `max_image_bytes` (such a
/// tenant must declare the upload's `Content-Length`).
pub fn check_image_quota(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(max) = state.governance.quotas(tenant).max_image_bytes else {
        return Ok(());
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::with_status(
                StatusCode::LENGTH_REQUIRED,
                "this tenant has an image-bytes quota: send the upload with a Content-Length",
            )
        })?;
    let mut used = 0u64;
    for model in state.images.models(tenant)? {
        for version in state.images.versions(tenant, &model)? {
            used = used.saturating_add(version.size_bytes);
        }
    }
    if used.saturating_add(declared) > max {
        return Err(ApiError::quota_exceeded(format!(
            "the tenant's images take {used} bytes; {declared} more would pass its quota of {max}"
        )));
    }
    Ok(())
}

/// Writes one audit entry for every control-plane call (a method that changes something
/// on `/api/2.0/...`), after it is answered: who, what, when, the status.
pub async fn audit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let control = request.uri().path().starts_with("/api/2.0/")
        && !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !control {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    let (actor, tenant) = match super::auth::principal(&state, request.headers()) {
        Some(Principal::Admin) => ("admin".to_string(), None),
        Some(Principal::Tenant(g)) => (g.token_id, Some(g.tenant)),
        None => ("anonymous".to_string(), None),
    };
    let response = next.run(request).await;
    let entry = AuditEntry {
        timestamp_ms: now_ms(),
        actor,
        tenant,
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
    };
    if let Err(e) = state.governance.audit.append(&entry) {
        tracing::error!("audit entry not written: {e}");
    }
    response
}
