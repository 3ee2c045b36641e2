//! Liveness, readiness and server metadata (no authentication; nothing tenant-specific).
//! The public sees which engines loaded and their versions; the operator (admin token)
//! also sees library paths, why an engine did not load, and the compile-cache counters
//! (which would tell one tenant whether another had uploaded the same component).

use super::auth::is_admin;
use super::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

/// Engines as the public sees them: loaded or not, and the version.
fn public_engines(state: &AppState) -> Value {
    let engines = &state.engines;
    let mut public = serde_json::Map::new();
    for status in [&engines.onnx, &engines.openvino, &engines.cuda] {
        public.insert(
            status.name.to_string(),
            json!({"loaded": status.loaded, "version": status.version}),
        );
    }
    Value::Object(public)
}

/// `GET /health`: status and engines; with the admin token, engine details and the
/// compile-cache counters too.
pub async fn health(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    if is_admin(&state, &headers) {
        return Json(json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "engines": state.engines,
            "component_cache": state.images.cache_stats(),
        }));
    }
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "engines": public_engines(&state),
    }))
}

/// `GET /v2/health/live`.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`.
pub async fn ready() -> Json<Value> {
    Json(json!({ "ready": true }))
}

/// `GET /v2`: KServe V2 server metadata, plus which engines loaded.
pub async fn server_metadata(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": "sandserve",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
        "engines": public_engines(&state),
    }))
}

/// `GET /.well-known/databricks-config`: the host metadata databricks-sdk reads when it
/// configures itself. sandserve is one workspace on no cloud, with no OIDC (tokens are
/// bearer tokens issued by `/api/2.0/tokens`): every field is empty, so the SDK keeps the
/// host and token it was given.
pub async fn databricks_config() -> Json<Value> {
    Json(json!({
        "oidc_endpoint": "",
        "account_id": null,
        "workspace_id": null,
        "cloud": null,
    }))
}
