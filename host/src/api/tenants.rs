//! `/api/2.0/tenants`: the admin creates, lists and deletes tenants.

use super::{blocking, ApiError, AppState, Caller, JsonBody};
use crate::registry::TenantRecord;
use crate::tenancy::validate_name;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// `POST /api/2.0/tenants` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
}

/// A tenant as answered: its creation time in epoch milliseconds (stored in seconds).
fn tenant_json(record: &TenantRecord) -> Value {
    json!({"name": record.name, "creation_timestamp": record.created_at.saturating_mul(1000)})
}

/// Creates a tenant.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateTenant>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    validate_name("name", &body.name)?;
    let record = blocking(move || Ok(state.directory.create_tenant(&body.name)?)).await?;
    tracing::info!(tenant = %record.name, "tenant created");
    Ok((StatusCode::CREATED, Json(tenant_json(&record))))
}

/// Lists tenants.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let tenants: Vec<Value> = state.directory.tenants()?.iter().map(tenant_json).collect();
    Ok(Json(json!({ "tenants": tenants })))
}

/// One tenant.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(tenant_json(&state.directory.tenant(&name)?)))
}

/// Deletes a tenant and its tokens (refused, 409, while it has models or endpoints).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    blocking(move || {
        state.directory.delete_tenant(&name)?;
        Ok(state.governance.forget_tenant(&name)?)
    })
    .await?;
    Ok(Json(json!({})))
}
