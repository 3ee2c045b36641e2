//! Liveness, readiness and server metadata (no authentication; nothing tenant-specific).
//! The public sees which engines loaded and their versions; the operator (admin token)
//! also sees library paths, why an engine did not load, and the compile-cache counters
//! (which would tell one tenant whether another had uploaded the same component).

use super::auth::is_admin;
use super::{ApiError, AppState};
use crate::readiness::ReadyState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
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

/// `GET /v2/health/live`: 200 with an empty body (the protocol's "true").
pub async fn live() -> StatusCode {
    StatusCode::OK
}

/// Why the node is not ready, as a 503 (`None` when it is ready).
fn not_ready(state: &AppState) -> Option<ApiError> {
    match state.readiness.state() {
        ReadyState::Ready => None,
        ReadyState::Draining => Some(
            ApiError::unavailable("the server is shutting down", Some(1)).with_reason("draining"),
        ),
        ReadyState::Waiting(gates) => Some(
            ApiError::unavailable(
                format!("the server is starting: waiting for {}", gates.join(", ")),
                Some(1),
            )
            .with_reason("starting"),
        ),
    }
}

/// `GET /readyz`: 200 `{"status": "ready"}` when this node should get traffic (started; in
/// cluster mode also caught up and its owned versions warm), else 503 saying why
/// (`starting`, or `draining` from the moment a shutdown begins). Liveness is `GET /health`.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match not_ready(&state) {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(e) => e.into_response(),
    }
}

/// `GET /v2/health/ready`: 200 with an empty body when the node is ready (as `/readyz`),
/// else 503. Models load on their first request; an endpoint that is not ready is told by
/// `GET /v2/models/{name}/ready`.
pub async fn ready(State(state): State<AppState>) -> Response {
    match not_ready(&state) {
        None => StatusCode::OK.into_response(),
        Some(e) => e.into_response(),
    }
}

/// The V2 extensions sandserve implements, as `GET /v2` lists them: the binary tensor
/// data extension, request and response parameters (passed to and from the handler),
/// Triton's model configuration and statistics extensions. The repository index works
/// but loading and unloading do not, so `model_repository` is not claimed.
pub const EXTENSIONS: [&str; 4] = [
    "binary_tensor_data",
    "parameters",
    "model_configuration",
    "statistics",
];

/// `GET /v2`: KServe V2 server metadata, plus which engines loaded.
pub async fn server_metadata(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": "sandserve",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
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
