//! Triton's repository index and statistics extensions, and clear refusals of the V2
//! extensions sandserve does not implement.
//!
//! - `POST /v2/repository/index` lists every model version the caller's token can see:
//!   serving endpoints (`READY`, `LOADING` while the first config is prepared,
//!   `UNAVAILABLE` after it failed) and models not shadowed by an endpoint of the same
//!   name (always `READY`: a model version loads on its first request).
//! - `GET /v2/models[/{name}[/versions/{v}]]/stats` gives each model version's counters
//!   (`telemetry::stats`), shaped as Triton's `ModelStatistics`. An endpoint's requests
//!   count for the model versions it serves, so `{name}` an endpoint answers for those.

use super::v2_models::describe_path;
use super::{ApiError, AppState, Caller, RawBody};
use crate::inference::batch_executions::{self, BatchSizeSnapshot};
use crate::registry::{EndpointRecord, Readiness};
use crate::telemetry::StatsSnapshot;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// The body of `POST /v2/repository/index` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    /// Only versions ready for requests.
    #[serde(default)]
    ready: bool,
}

/// An endpoint's index entries.
fn endpoint_entries(record: &EndpointRecord) -> Vec<Value> {
    let (state, reason) = match (record.state.ready, &record.update_error) {
        (Readiness::Ready, _) => ("READY", String::new()),
        (_, Some(error)) => ("UNAVAILABLE", error.clone()),
        _ => (
            "LOADING",
            "the endpoint's config is being prepared".to_string(),
        ),
    };
    let config = record.config.as_ref().or(record.pending_config.as_ref());
    let mut versions: Vec<&str> = config
        .iter()
        .flat_map(|c| c.served_entities.iter())
        .map(|e| e.entity_version.trim())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions
        .into_iter()
        .map(|v| json!({"name": record.name, "version": v, "state": state, "reason": reason}))
        .collect()
}

/// `POST /v2/repository/index`: `[{"name", "version", "state", "reason"}]`.
pub async fn repository_index(
    State(state): State<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.tenant()?;
    let request: IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        super::parse_json(&body)?
    };
    let mut entries = Vec::new();
    let endpoints = state.endpoints.records(&grant.tenant)?;
    for record in endpoints.iter().filter(|r| grant.covers(&r.name)) {
        entries.extend(endpoint_entries(record));
    }
    for model in state.images.models(&grant.tenant)? {
        if !grant.covers(&model) || endpoints.iter().any(|e| e.name == model) {
            continue;
        }
        for image in state.images.versions(&grant.tenant, &model)? {
            entries.push(json!({"name": model, "version": image.version.to_string(),
                                "state": "READY", "reason": ""}));
        }
    }
    if request.ready {
        entries.retain(|e| e["state"] == "READY");
    }
    Ok(Json(Value::Array(entries)))
}

/// One model version's statistics in Triton's shape. Each request runs its handler once;
/// the graphs it batches (`[graphs.batching]`) run once for several requests, so
/// `execution_count` is the handler runs less the requests that shared a batched run, and
/// `batch_stats` has each batch size's runs of those graphs (joining the inputs, the
/// graph's run, cutting the outputs). sandserve has no response cache: those counters stay
/// zero.
fn model_stats(
    name: &str,
    version: u64,
    s: &StatsSnapshot,
    batches: &[BatchSizeSnapshot],
) -> Value {
    let shared_runs: u64 = batches
        .iter()
        .map(|b| b.requests.saturating_sub(b.executions))
        .sum();
    let stage = |count: u64, ns: u64| json!({"count": count, "ns": ns});
    let batch_stats: Vec<Value> = batches
        .iter()
        .map(|b| {
            json!({
                "batch_size": b.batch_size,
                "compute_input": stage(b.executions, b.input_ns),
                "compute_infer": stage(b.executions, b.infer_ns),
                "compute_output": stage(b.executions, b.output_ns),
            })
        })
        .collect();
    json!({
        "name": name,
        "version": version.to_string(),
        "last_inference": s.last_inference_ms,
        "inference_count": s.success.count,
        "execution_count": s.compute_infer.count.saturating_sub(shared_runs),
        "inference_stats": {
            "success": s.success,
            "fail": s.fail,
            "queue": s.queue,
            "compute_input": s.compute_input,
            "compute_infer": s.compute_infer,
            "compute_output": s.compute_output,
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "response_stats": {},
        "batch_stats": batch_stats,
        "memory_usage": [],
    })
}

/// `GET /v2/models/stats`: every model version the token can see.
pub async fn all_stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let grant = caller.tenant()?;
    let table = state.images.stats();
    let mut stats = Vec::new();
    for model in state.images.models(&grant.tenant)? {
        if !grant.covers(&model) {
            continue;
        }
        for image in state.images.versions(&grant.tenant, &model)? {
            let snapshot = table.snapshot(&grant.tenant, &model, image.version);
            let batches = batch_executions::snapshot(&grant.tenant, &model, image.version);
            stats.push(model_stats(&model, image.version, &snapshot, &batches));
        }
    }
    Ok(Json(json!({ "model_stats": stats })))
}

/// `GET /v2/models/{name}[/versions/{v}]/stats`.
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let (grant, _, described) = describe_path(&state, &caller, &params)?;
    let served = described.served;
    let table = state.images.stats();
    let stats: Vec<Value> = served
        .iter()
        .map(|(model, v)| {
            let batches = batch_executions::snapshot(&grant.tenant, model, *v);
            model_stats(
                model,
                *v,
                &table.snapshot(&grant.tenant, model, *v),
                &batches,
            )
        })
        .collect();
    Ok(Json(json!({ "model_stats": stats })))
}

/// Routes of V2 extensions sandserve does not implement: 400 saying why, after the
/// caller has authenticated (so that the answer tells a stranger nothing).
pub async fn not_supported(caller: Caller, uri: axum::http::Uri) -> Result<Json<Value>, ApiError> {
    caller.tenant()?;
    let path = uri.path();
    let why = if path.starts_with("/v2/repository/models/") {
        "loading and unloading models is not supported: a model version loads on its first \
         request and is released when idle; serve it with a serving endpoint to keep it loaded"
    } else if path.contains("sharedmemory") {
        "shared-memory tensors are not supported: the server and its clients share no memory; \
         send tensors in the body (binary tensor data is supported)"
    } else if path.contains("/trace/") {
        "trace settings are not supported"
    } else {
        "log settings are not supported: the operator sets logging when starting the server"
    };
    Err(ApiError::bad_request(format!("{path}: {why}")).with_reason("not_supported"))
}
