//! Databricks serving-endpoint routes sandserve does not implement (yet), answered with a
//! clear JSON error instead of the generic 404, so that databricks-sdk raises an error that
//! says what is missing: email notifications and telemetry tables are refused with a
//! 400 naming the field, unless the body asks for nothing.

use super::{ApiError, Caller, JsonBody};
use crate::tenancy::Permission;
use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};

/// `PATCH /api/2.0/serving-endpoints/{name}/notifications`.
pub async fn notifications(
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::CanManage, "serving endpoint", &name)?;
    match body.get("email_notifications") {
        None | Some(Value::Null) => Ok(Json(json!({ "name": name }))),
        Some(_) => Err(ApiError::bad_request(
            "field `email_notifications`: sandserve sends no email",
        )
        .with_reason("unsupported_field")),
    }
}

/// `PATCH /api/2.0/serving-endpoints/{name}/telemetry-config`.
pub async fn telemetry(caller: Caller, Path(name): Path<String>) -> ApiError {
    match caller.require(Permission::CanManage, "serving endpoint", &name) {
        Ok(_) => ApiError::bad_request(
            "field `telemetry_config`: sandserve has no Unity Catalog telemetry tables",
        )
        .with_reason("unsupported_field"),
        Err(e) => e,
    }
}
