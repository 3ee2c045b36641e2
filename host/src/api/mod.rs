//! The HTTP API (axum): the routing table, the shared state, and small helpers. Each
//! resource has its own module; every error is an [`ApiError`].
//!
//! | route | who |
//! |---|---|
//! | `GET /health`, `GET /readyz`, `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2` | anyone |
//! | `GET /metrics` | admin (anyone with `--public-metrics`) |
//! | `GET /api/2.0/serving-endpoints/{name}/metrics` | CAN_VIEW |
//! | `GET /api/2.0/serving-endpoints/{name}/served-models/{e}/logs`, `.../build-logs` | CAN_MANAGE |
//! | `POST/GET /api/2.0/tenants`, `GET/DELETE /api/2.0/tenants/{name}` | admin |
//! | `POST/GET /api/2.0/tokens`, `DELETE /api/2.0/tokens/{id}` | admin, or CAN_MANAGE for its tenant |
//! | `GET /api/2.0/models`, `GET /api/2.0/models/{name}/versions[/{v}]` | CAN_VIEW |
//! | `POST /api/2.0/models/{name}/versions`, `DELETE .../versions/{v}` | CAN_MANAGE |
//! | `PATCH /api/2.0/models/{name}/versions/{v}` (sharing) | CAN_MANAGE, or admin with `?tenant=` |
//! | `POST/GET /api/2.0/serving-endpoints`, `GET/DELETE .../{name}` | CAN_MANAGE / CAN_VIEW |
//! | `PUT /api/2.0/serving-endpoints/{name}/config`, `.../ai-gateway`, `.../rate-limits`, `PATCH .../tags` | CAN_MANAGE |
//! | `GET /api/2.0/serving-endpoints/{name}/inference-table` | CAN_MANAGE |
//! | `GET /api/2.0/usage` | a tenant token (its own), or admin |
//! | `GET /api/2.0/audit`, `GET/PUT /api/2.0/tenants/{name}/quotas` | admin |
//! | `GET /api/2.0/cluster/nodes` | admin |
//! | every `POST/PUT/PATCH/DELETE /api/2.0/...` | written to the audit log (`governance::audit`) |
//! | `GET /api/2.0/serving-endpoints/{name}/openapi` | CAN_QUERY |
//! | `GET/PUT/PATCH /api/2.0/permissions/serving-endpoints/{id}` | CAN_MANAGE |
//! | `GET /api/2.0/permissions/serving-endpoints/{id}/permissionLevels` | CAN_VIEW |
//! | `GET /.well-known/databricks-config` | anyone |
//! | `POST /serving-endpoints/{name}/invocations`, `.../served-models/{e}/invocations` | CAN_QUERY |
//! | `GET /v2/models/{name}[/versions/{v}][/ready\|/config\|/stats]`, `GET /v2/models/stats`, `POST /v2/repository/index` | CAN_VIEW |
//! | `POST /v2/models/{name}[/versions/{v}]/infer` | CAN_QUERY |
//! | V2 extensions not implemented (repository load/unload, shared memory, trace, logging) | any token: 400 saying why |

mod access;
mod auth;
mod cluster;
mod cluster_headers;
mod databricks;
mod endpoints;
mod error;
mod forwarding;
mod governance;
mod health;
mod json;
mod models;
mod not_yet;
mod observe;
mod openapi;
mod permissions;
mod plain_errors;
mod query;
mod tenants;
mod tokens;
mod v2;
mod v2_extensions;
mod v2_models;

pub use access::{sane_request_id, RequestIdText, MAX_REQUEST_ID_BYTES};
pub use auth::Caller;
pub use error::ApiError;
pub use json::{parse_json, parse_value, JsonBody, RawBody};

use crate::cluster::Cluster;
use crate::governance::Governance;
use crate::images::ImageService;
use crate::inference::Engines;
use crate::readiness::Readiness;
use crate::serving::EndpointManager;
use crate::tenancy::Directory;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, patch, post, put, MethodRouter};
use axum::Router;
use std::sync::Arc;
use tower::{Layer, ServiceBuilder};
use tower_http::normalize_path::NormalizePathLayer;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Tenants, tokens, authentication.
    pub directory: Arc<Directory>,
    /// Model images.
    pub images: Arc<ImageService>,
    /// Loaded engines.
    pub engines: &'static Engines,
    /// Serving endpoints.
    pub endpoints: Arc<EndpointManager>,
    /// `GET /metrics` without a token (`--public-metrics`); else the admin's only.
    pub public_metrics: bool,
    /// Gateway settings, quotas, usage, inference tables, audit log.
    pub governance: Arc<Governance>,
    /// Whether this node takes traffic (`GET /readyz`).
    pub readiness: Arc<Readiness>,
    /// Cluster mode's routing of queries to their owners; `None` on a single node.
    pub cluster: Option<Arc<Cluster>>,
    /// The cluster's live nodes (this one alone with sled metadata).
    pub membership: Arc<dyn crate::cluster::membership::Membership>,
}

/// Parses a model version from a path: a positive integer.
pub fn parse_version(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::bad_request(format!("version `{text}` is not a positive integer")))
}

/// Runs blocking work (fsyncs, compiles, guest calls) off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("blocking task failed: {e}")))?
}

/// The full routing table. A trailing slash is trimmed before routing, so every route
/// answers with or without one (MLflow calls `/api/2.0/serving-endpoints/`).
///
/// The layers that every request passes wrap the routing table once, from outside, as one
/// stack of plain services. Added with `Router::layer` instead, each would wrap every route
/// in a boxed service of its own, and a request would clone each box of its route's chain
/// at every level it passes (36 allocations a request with the layers below).
pub fn router(state: AppState) -> Router {
    let every_request = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster_headers::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            governance::audit,
        ))
        .layer(axum::middleware::from_fn(plain_errors::errors_as_json))
        .layer(DefaultBodyLimit::max(1 << 20))
        .service(routes(state));
    access::layers(NormalizePathLayer::trim_trailing_slash().layer(every_request))
}

/// A query route: in cluster mode, behind the layer that sends a query to its owner
/// (`forwarding`); on a single node, the route alone (no layer, no cost).
fn query_route(state: &AppState, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    if state.cluster.is_some() {
        route.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forwarding::to_owner,
        ))
    } else {
        route
    }
}

fn routes(state: AppState) -> Router {
    let clustered = |route| query_route(&state, route);
    Router::new()
        .route("/health", get(health::health))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(observe::all))
        .route(
            "/.well-known/databricks-config",
            get(health::databricks_config),
        )
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2", get(health::server_metadata))
        .route("/api/2.0/tenants", post(tenants::create).get(tenants::list))
        .route(
            "/api/2.0/tenants/{name}",
            get(tenants::get).delete(tenants::delete),
        )
        .route(
            "/api/2.0/tenants/{name}/quotas",
            get(governance::get_quotas).put(governance::put_quotas),
        )
        .route("/api/2.0/cluster/nodes", get(cluster::nodes))
        .route("/api/2.0/usage", get(governance::usage))
        .route("/api/2.0/audit", get(governance::audit_log))
        .route(
            "/api/2.0/serving-endpoints/{name}/inference-table",
            get(governance::inference_table),
        )
        .route("/api/2.0/tokens", post(tokens::create).get(tokens::list))
        .route(
            "/api/2.0/tokens/{token_id}",
            axum::routing::delete(tokens::delete),
        )
        .route("/api/2.0/models", get(models::list))
        .route(
            "/api/2.0/models/{name}/versions",
            post(models::upload)
                .layer(DefaultBodyLimit::disable())
                .get(models::versions),
        )
        .route(
            "/api/2.0/models/{name}/versions/{version}",
            get(models::get_version)
                .delete(models::delete_version)
                .patch(models::patch_version),
        )
        .route(
            "/api/2.0/serving-endpoints",
            post(endpoints::create).get(endpoints::list),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}",
            get(endpoints::get).delete(endpoints::delete),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/config",
            put(endpoints::update_config),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/ai-gateway",
            put(endpoints::update_ai_gateway),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/tags",
            patch(endpoints::patch_tags),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/openapi",
            get(openapi::get),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/served-models/{entity}/logs",
            get(observe::logs),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/served-models/{entity}/build-logs",
            get(observe::build_logs),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/metrics",
            get(observe::endpoint),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/rate-limits",
            put(endpoints::put_rate_limits),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/notifications",
            patch(not_yet::notifications),
        )
        .route(
            "/api/2.0/serving-endpoints/{name}/telemetry-config",
            patch(not_yet::telemetry),
        )
        .route(
            "/api/2.0/permissions/serving-endpoints/{id}",
            get(permissions::get)
                .put(permissions::set)
                .patch(permissions::update),
        )
        .route(
            "/api/2.0/permissions/serving-endpoints/{id}/permissionLevels",
            get(permissions::levels),
        )
        .route(
            "/serving-endpoints/{name}/invocations",
            clustered(
                post(query::invocations).layer(DefaultBodyLimit::max(query::MAX_QUERY_BYTES)),
            ),
        )
        .route(
            "/serving-endpoints/{name}/served-models/{entity}/invocations",
            clustered(
                post(query::served_model_invocations)
                    .layer(DefaultBodyLimit::max(query::MAX_QUERY_BYTES)),
            ),
        )
        .route("/v2/models/stats", get(v2_extensions::all_stats))
        .route(
            "/v2/repository/index",
            post(v2_extensions::repository_index),
        )
        .route("/v2/models/{name}", get(v2_models::model_metadata))
        .route("/v2/models/{name}/ready", get(v2_models::model_ready))
        .route("/v2/models/{name}/config", get(v2_models::model_config))
        .route("/v2/models/{name}/stats", get(v2_extensions::stats))
        .route(
            "/v2/models/{name}/infer",
            clustered(post(v2::infer_model).layer(DefaultBodyLimit::max(query::MAX_QUERY_BYTES))),
        )
        .route(
            "/v2/models/{name}/versions/{version}",
            get(v2_models::model_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(v2_models::model_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/config",
            get(v2_models::model_config),
        )
        .route(
            "/v2/models/{name}/versions/{version}/stats",
            get(v2_extensions::stats),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            clustered(post(v2::infer_version).layer(DefaultBodyLimit::max(query::MAX_QUERY_BYTES))),
        )
        .route(
            "/v2/repository/models/{name}/load",
            any(v2_extensions::not_supported),
        )
        .route(
            "/v2/repository/models/{name}/unload",
            any(v2_extensions::not_supported),
        )
        .route(
            "/v2/systemsharedmemory/{*rest}",
            any(v2_extensions::not_supported),
        )
        .route(
            "/v2/cudasharedmemory/{*rest}",
            any(v2_extensions::not_supported),
        )
        .route("/v2/trace/setting", any(v2_extensions::not_supported))
        .route(
            "/v2/models/{name}/trace/setting",
            any(v2_extensions::not_supported),
        )
        .route("/v2/logging", any(v2_extensions::not_supported))
        .fallback(|| async {
            ApiError::not_found("no such route; see the API reference in docs/api.md")
        })
        .with_state(state)
}
