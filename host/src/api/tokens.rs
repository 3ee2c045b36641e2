//! `/api/2.0/tokens`: issuing, listing and revoking tenant tokens. The admin may act for any
//! tenant; a CAN_MANAGE token only for its own, and never wider than itself.

use super::{blocking, ApiError, AppState, Caller, JsonBody};
use crate::registry::{unix_millis, TokenRecord};
use crate::tenancy::{validate_name, NewToken, Permission, Principal, TenantGrant};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest token lifetime: ten years.
const MAX_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// `POST /api/2.0/tokens` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The tenant (defaults to the caller's).
    tenant: Option<String>,
    /// Permission levels; the highest one counts.
    permissions: Vec<Permission>,
    /// Models / endpoints it covers; `["*"]` for all (the default).
    #[serde(default, alias = "resources")]
    endpoints: Option<Vec<String>>,
    /// Seconds until it expires; absent = never.
    lifetime_seconds: Option<u64>,
    /// Free text.
    comment: Option<String>,
}

fn token_info(t: &TokenRecord) -> Value {
    json!({
        "token_id": t.token_id,
        "tenant": t.tenant,
        "permissions": [t.permission],
        "endpoints": t.resources,
        "creation_time": t.created_at_ms,
        "expiry_time": t.expires_at_ms,
        "comment": t.comment,
        "created_by": t.created_by,
    })
}

/// Issues a token; the secret is in this response only.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let permission = body.permissions.iter().copied().max().ok_or_else(|| {
        ApiError::bad_request(
            "field `permissions`: give at least one of CAN_VIEW, CAN_QUERY, CAN_MANAGE",
        )
    })?;
    let resources = body.endpoints.unwrap_or_else(|| vec!["*".into()]);
    if resources.is_empty() {
        return Err(ApiError::bad_request(
            "field `endpoints`: give `*` or at least one name",
        ));
    }
    for r in resources.iter().filter(|r| *r != "*") {
        validate_name("endpoints", r)?;
    }
    if body.lifetime_seconds == Some(0)
        || body.lifetime_seconds.is_some_and(|s| s > MAX_LIFETIME_SECS)
    {
        return Err(ApiError::bad_request(format!(
            "field `lifetime_seconds`: must be between 1 and {MAX_LIFETIME_SECS}"
        )));
    }
    let created_at_ms = unix_millis();
    let expires_at_ms = body
        .lifetime_seconds
        .map(|s| created_at_ms.saturating_add(s.saturating_mul(1000)));
    let (tenant, created_by) = match &caller.0 {
        Principal::Admin => {
            let tenant = body.tenant.ok_or_else(|| {
                ApiError::bad_request("field `tenant`: the admin must name the tenant")
            })?;
            (tenant, "admin".to_string())
        }
        Principal::Tenant(grant) => {
            if body.tenant.as_ref().is_some_and(|t| *t != grant.tenant) {
                return Err(ApiError::not_found(format!(
                    "tenant `{}` does not exist",
                    body.tenant.unwrap_or_default()
                )));
            }
            if grant.permission != Permission::CanManage {
                return Err(ApiError::forbidden("issuing tokens needs CAN_MANAGE"));
            }
            if !grant.may_delegate(permission, &resources, expires_at_ms) {
                return Err(ApiError::forbidden(
                    "a token may not be wider than the one creating it (permission, endpoints or lifetime)",
                ));
            }
            (grant.tenant.clone(), grant.token_id.clone())
        }
    };
    let new = NewToken {
        tenant,
        permission,
        resources,
        created_at_ms,
        expires_at_ms,
        comment: body.comment,
        created_by,
    };
    let (token, record) = blocking(move || Ok(state.directory.issue_token(new)?)).await?;
    let info = token_info(&record);
    tracing::info!(token_id = %record.token_id, "token issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token_id": record.token_id, "token": token, "token_info": info })),
    ))
}

/// `GET /api/2.0/tokens` query.
#[derive(Deserialize)]
pub struct ListQuery {
    tenant: Option<String>,
}

/// Lists tokens (never their secrets).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant = match &caller.0 {
        Principal::Admin => query.tenant,
        Principal::Tenant(grant) => {
            if grant.permission != Permission::CanManage {
                return Err(ApiError::forbidden("listing tokens needs CAN_MANAGE"));
            }
            Some(grant.tenant.clone())
        }
    };
    let tokens = state.directory.tokens(tenant.as_deref())?;
    let visible = tokens.iter().filter(|t| match &caller.0 {
        Principal::Admin => true,
        Principal::Tenant(grant) => within_reach(grant, t),
    });
    Ok(Json(
        json!({ "token_infos": visible.map(token_info).collect::<Vec<_>>() }),
    ))
}

/// Whether a tenant's manager token may see and revoke `token`: its own, or one no wider
/// than itself (so a token scoped to some endpoints neither learns the names outside its
/// scope from other tokens nor revokes the tenant's wider tokens).
pub(super) fn within_reach(grant: &TenantGrant, token: &TokenRecord) -> bool {
    token.token_id == grant.token_id
        || grant.may_delegate(token.permission, &token.resources, token.expires_at_ms)
}

/// Revokes a token.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(token_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let missing = || ApiError::not_found(format!("token `{token_id}` does not exist"));
    let record = state.directory.token(&token_id).map_err(|_| missing())?;
    if let Principal::Tenant(grant) = &caller.0 {
        if grant.tenant != record.tenant {
            return Err(missing());
        }
        if grant.permission != Permission::CanManage {
            return Err(ApiError::forbidden("revoking tokens needs CAN_MANAGE"));
        }
        if !within_reach(grant, &record) {
            return Err(ApiError::forbidden(
                "a token may only revoke itself or tokens no wider than itself (permission, endpoints or lifetime); ask a wider manager token",
            ));
        }
    }
    blocking(move || Ok(state.directory.revoke_token(&record.token_id)?)).await?;
    Ok(Json(json!({})))
}
