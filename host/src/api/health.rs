//! Liveness, readiness and server metadata (no authentication; nothing tenant-specific).

use super::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// `GET /health`: status, engines, compile-cache counters.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "engines": state.engines,
        "component_cache": state.images.cache_stats(),
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
        "engines": state.engines,
    }))
}
