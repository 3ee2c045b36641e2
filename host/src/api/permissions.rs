//! `/api/2.0/permissions/serving-endpoints/{id}`: Databricks' permissions API, mapped onto
//! sandserve's tokens. sandserve has no users or groups: its principals are tokens, each
//! with one level (CAN_VIEW < CAN_QUERY < CAN_MANAGE) over the endpoints it names or `*`.
//! So an endpoint's access control list is:
//!
//! - the group `admins` with CAN_MANAGE, inherited (the admin token manages everything);
//! - every token of the tenant that covers the endpoint, as a service principal named by
//!   its token id, at the token's level: inherited from `/serving-endpoints/` for a token
//!   over `*`, direct for a token that names the endpoint.
//!
//! A token's level and scope are fixed when it is issued, so `PUT` and `PATCH` honour an
//! access control list that describes what holds already (and answer it), and refuse any
//! change with a 400 naming the entry: issue or revoke tokens (`/api/2.0/tokens`) instead.

use super::tokens::within_reach;
use super::{ApiError, AppState, Caller, JsonBody};
use crate::registry::{EndpointRecord, TokenRecord};
use crate::tenancy::{Permission, TenantGrant};
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

const ROOT_OBJECT: &str = "/serving-endpoints/";

/// One entry of a `PUT`/`PATCH` body (Databricks' `ServingEndpointAccessControlRequest`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessControlRequest {
    #[serde(default)]
    group_name: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    service_principal_name: Option<String>,
    #[serde(default)]
    permission_level: Option<Permission>,
}

/// `PUT`/`PATCH` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessControlList {
    #[serde(default)]
    access_control_list: Vec<AccessControlRequest>,
}

/// The endpoint with opaque id `id` among those the caller covers (404 otherwise).
fn endpoint_by_id(
    state: &AppState,
    grant: &TenantGrant,
    id: &str,
) -> Result<EndpointRecord, ApiError> {
    state
        .endpoints
        .records(&grant.tenant)?
        .into_iter()
        .find(|e| e.id() == id && grant.covers(&e.name))
        .ok_or_else(|| {
            ApiError::not_found(format!("serving endpoint with id `{id}` does not exist"))
        })
}

/// The tenant's tokens over `endpoint` that the caller may see.
fn principals(
    state: &AppState,
    grant: &TenantGrant,
    endpoint: &str,
) -> Result<Vec<TokenRecord>, ApiError> {
    Ok(state
        .directory
        .tokens(Some(&grant.tenant))?
        .into_iter()
        .filter(|t| t.resources.iter().any(|r| r == "*" || r == endpoint))
        .filter(|t| within_reach(grant, t))
        .collect())
}

fn inherited(token: &TokenRecord) -> bool {
    token.resources.iter().any(|r| r == "*")
}

fn acl_json(record: &EndpointRecord, tokens: &[TokenRecord]) -> Value {
    let mut list = vec![json!({
        "group_name": "admins",
        "display_name": "admins",
        "all_permissions": [{"permission_level": "CAN_MANAGE", "inherited": true,
            "inherited_from_object": [ROOT_OBJECT]}],
    })];
    for token in tokens {
        let mut permission = json!({"permission_level": token.permission,
            "inherited": inherited(token)});
        if inherited(token) {
            permission["inherited_from_object"] = json!([ROOT_OBJECT]);
        }
        list.push(json!({
            "service_principal_name": token.token_id,
            "display_name": token.comment.clone().unwrap_or_else(|| token.token_id.clone()),
            "all_permissions": [permission],
        }));
    }
    json!({
        "object_id": format!("/serving-endpoints/{}", record.id()),
        "object_type": "serving-endpoint",
        "access_control_list": list,
    })
}

/// `GET /api/2.0/permissions/serving-endpoints/{id}` (CAN_MANAGE: it lists token ids).
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.tenant()?;
    let record = endpoint_by_id(&state, grant, &id)?;
    caller.require(Permission::CanManage, "serving endpoint", &record.name)?;
    let tokens = principals(&state, grant, &record.name)?;
    Ok(Json(acl_json(&record, &tokens)))
}

/// `GET .../{id}/permissionLevels` (CAN_VIEW).
pub async fn levels(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.tenant()?;
    endpoint_by_id(&state, grant, &id)?;
    Ok(Json(json!({"permission_levels": [
        {"permission_level": "CAN_MANAGE", "description": "Can manage the endpoint: config, tags, permissions, deletion (a CAN_MANAGE token)"},
        {"permission_level": "CAN_QUERY", "description": "Can query the endpoint and view it (a CAN_QUERY token)"},
        {"permission_level": "CAN_VIEW", "description": "Can view the endpoint (a CAN_VIEW token)"},
    ]})))
}

/// Checks that `list` describes what holds: each entry a visible token over the endpoint at
/// its level; for `PUT` (`replace`), every direct grant is listed too.
fn check_unchanged(
    list: &[AccessControlRequest],
    tokens: &[TokenRecord],
    replace: bool,
) -> Result<(), ApiError> {
    let refuse = |i: usize, field: &str, why: String| {
        Err(
            ApiError::bad_request(format!("field `access_control_list[{i}].{field}`: {why}"))
                .with_reason("unsupported_field"),
        )
    };
    for (i, entry) in list.iter().enumerate() {
        if entry.user_name.is_some() {
            return refuse(i, "user_name", "sandserve has no users; its principals are tokens, named as service principals by token id".into());
        }
        if let Some(group) = &entry.group_name {
            if group != "admins" || entry.permission_level != Some(Permission::CanManage) {
                return refuse(i, "group_name", "sandserve has no groups but `admins` (CAN_MANAGE); its principals are tokens, named as service principals by token id".into());
            }
            continue;
        }
        let Some(principal) = &entry.service_principal_name else {
            return refuse(i, "service_principal_name", "name a token id".into());
        };
        let Some(token) = tokens.iter().find(|t| t.token_id == *principal) else {
            return refuse(i, "service_principal_name", format!("`{principal}` is not a token over this endpoint; issue one with POST /api/2.0/tokens"));
        };
        if entry.permission_level != Some(token.permission) {
            return refuse(i, "permission_level", format!("token `{principal}` has {} and a token's level is fixed when it is issued; issue a new token with POST /api/2.0/tokens", token.permission));
        }
    }
    if replace {
        let dropped = tokens.iter().find(|t| {
            !inherited(t)
                && !list
                    .iter()
                    .any(|e| e.service_principal_name.as_deref() == Some(t.token_id.as_str()))
        });
        if let Some(token) = dropped {
            return Err(ApiError::bad_request(format!(
                "field `access_control_list`: leaves out token `{}`, whose access cannot be taken away here; revoke it with DELETE /api/2.0/tokens/{}",
                token.token_id, token.token_id
            ))
            .with_reason("unsupported_field"));
        }
    }
    Ok(())
}

async fn change(
    state: AppState,
    caller: Caller,
    id: String,
    body: AccessControlList,
    replace: bool,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.tenant()?;
    let record = endpoint_by_id(&state, grant, &id)?;
    caller.require(Permission::CanManage, "serving endpoint", &record.name)?;
    let tokens = principals(&state, grant, &record.name)?;
    check_unchanged(&body.access_control_list, &tokens, replace)?;
    Ok(Json(acl_json(&record, &tokens)))
}

/// `PUT .../{id}`: set (replace the direct grants).
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AccessControlList>,
) -> Result<Json<Value>, ApiError> {
    change(state, caller, id, body, true).await
}

/// `PATCH .../{id}`: update (add to the grants).
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AccessControlList>,
) -> Result<Json<Value>, ApiError> {
    change(state, caller, id, body, false).await
}
