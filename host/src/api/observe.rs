//! What the server shows of its work: `GET /metrics` (every metric, Prometheus text; the
//! admin's, or anyone's with `--public-metrics`), a tenant's own endpoint's metrics
//! (`GET /api/2.0/serving-endpoints/{name}/metrics`, databricks-sdk `export_metrics`), and
//! the per-entity rings of handler output and build lines
//! (`.../served-models/{entity}/logs` and `.../build-logs`, databricks-sdk `logs` and
//! `build_logs`: `{"logs": "..."}`, one line per record, oldest first).

use super::{ApiError, AppState, Caller};
use crate::telemetry::{metrics, LogBook, LogLine};
use crate::tenancy::Permission;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn prometheus(text: String) -> Response {
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

/// `GET /metrics`: the admin token, unless the server runs with `--public-metrics`.
pub async fn all(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<Response, ApiError> {
    if !state.public_metrics {
        caller?.require_admin()?;
    }
    Ok(prometheus(metrics::render()))
}

/// `GET /api/2.0/serving-endpoints/{name}/metrics`: the samples of this endpoint's
/// entities (CAN_VIEW).
pub async fn endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let grant = caller.require(Permission::CanView, "serving endpoint", &name)?;
    state.endpoints.record(&grant.tenant, &name)?;
    Ok(prometheus(metrics::for_endpoint(
        &metrics::render(),
        &grant.tenant,
        &name,
    )))
}

/// `GET /api/2.0/serving-endpoints/{name}/served-models/{entity}/logs` (CAN_MANAGE).
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, entity)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    read(
        &state,
        &caller,
        &name,
        &entity,
        &state.endpoints.logs().requests,
    )
}

/// `GET /api/2.0/serving-endpoints/{name}/served-models/{entity}/build-logs` (CAN_MANAGE).
pub async fn build_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, entity)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    read(
        &state,
        &caller,
        &name,
        &entity,
        &state.endpoints.logs().builds,
    )
}

fn read(
    state: &AppState,
    caller: &Caller,
    name: &str,
    entity: &str,
    book: &LogBook,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.require(Permission::CanManage, "serving endpoint", name)?;
    let record = state.endpoints.record(&grant.tenant, name)?;
    let known = [&record.config, &record.pending_config]
        .into_iter()
        .flatten()
        .any(|config| config.served_entities.iter().any(|e| e.name == entity));
    if !known {
        return Err(ApiError::not_found(format!(
            "serving endpoint `{name}` has no served model `{entity}`"
        )));
    }
    let text = match book.find(&grant.tenant, name, entity) {
        Some(ring) => {
            let (lines, dropped) = ring.snapshot();
            render(&lines, dropped)
        }
        None => String::new(),
    };
    Ok(Json(json!({ "logs": text })))
}

/// One line per record: `TIME SOURCE [REQUEST-ID] TEXT`.
fn render(lines: &[LogLine], dropped: u64) -> String {
    let mut out = String::new();
    if dropped > 0 {
        out.push_str(&format!("[{dropped} older lines dropped]\n"));
    }
    for line in lines {
        let at = i128::from(line.at_ms) * 1_000_000;
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(at)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        out.push_str(&at);
        out.push(' ');
        out.push_str(line.source);
        if !line.request_id.is_empty() {
            out.push_str(" [");
            out.push_str(&line.request_id);
            out.push(']');
        }
        out.push(' ');
        out.push_str(&line.text);
        out.push('\n');
    }
    out
}
