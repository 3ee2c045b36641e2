//! Cluster mode's hook on the query routes: a query for an endpoint version this node does
//! not own goes to an owner (`cluster::Cluster::route`), so that a graph is loaded only on
//! its owners. The placement key is the endpoint and its config version
//! ([`endpoint_key`]), or for a V2 query naming a model version directly, that version
//! ([`model_key`]; the latest when none is named). The caller is authenticated here first (its tenant is part of the key; a
//! request that does not authenticate, or names nothing that exists, is served here and
//! gets its 401 or 404 from the route), and again by the owner, which receives the same
//! `Authorization` header. Single-node servers never add this layer (see `query_route`).

use super::{ApiError, AppState, Caller};
use crate::cluster::placement::{endpoint_key, model_key};
use crate::cluster::Routed;
use crate::tenancy::Principal;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Routes one query to its owner, or lets it through to the route here.
pub async fn to_owner(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let key = placement_key(&state, &mut parts).await;
    let request = Request::from_parts(parts, body);
    let Some(key) = key else {
        return next.run(request).await;
    };
    match cluster.route(&key, request).await {
        Routed::Local(request) => next.run(request).await,
        Routed::Answered(answer) => answer,
        Routed::Failed(e) => {
            // The detail names the node (its host name): for the log, not the tenant.
            tracing::warn!("a forwarded query failed: {e}");
            ApiError::unavailable(
                "the node serving this endpoint stopped answering; retry".to_string(),
                Some(1),
            )
            .into_response()
        }
    }
}

/// The key a query is placed by, when its caller authenticates as a tenant and its name
/// is an endpoint or a model version of that tenant.
async fn placement_key(state: &AppState, parts: &mut axum::http::request::Parts) -> Option<String> {
    let params = RawPathParams::from_request_parts(parts, state).await.ok()?;
    let mut name = None;
    let mut version = None;
    for (key, value) in &params {
        match key {
            "name" => name = Some(value.to_string()),
            "version" => version = Some(value.to_string()),
            _ => {}
        }
    }
    let name = name?;
    let Caller(Principal::Tenant(grant)) = Caller::from_request_parts(parts, state).await.ok()?
    else {
        return None;
    };
    let tenant = grant.tenant.clone();
    // From memory when this node knows the endpoint (it serves it, or placed a query for
    // it since its last change): no database read on the request path, and queries keep
    // flowing while the metadata database is down. Else one read, off the async worker.
    if let Some(version) = state.endpoints.known_routing_version(&tenant, &name) {
        return Some(endpoint_key(&tenant, &name, version));
    }
    let endpoints = state.endpoints.clone();
    tokio::task::spawn_blocking(move || {
        if let Ok(Some(config_version)) = endpoints.routing_version(&tenant, &name) {
            return Some(endpoint_key(&tenant, &name, config_version));
        }
        let version = match version {
            Some(v) => v.parse::<u64>().ok()?,
            None => endpoints.latest_version(&tenant, &name).ok()?,
        };
        Some(model_key(&tenant, &name, version))
    })
    .await
    .ok()
    .flatten()
}
