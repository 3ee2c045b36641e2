//! The cluster's own headers at the edge of the API, in both modes. On a request,
//! `x-sandserve-forwarded-by` is trusted only with a valid seal of this cluster
//! ([`crate::cluster::Seal`]): then the request is marked [`SealedBy`] for the routing
//! layer; a forged, stale or altered one (or any, on a single node) is counted and dropped,
//! and the request is routed like any other. `x-sandserve-served-by` means nothing on a
//! request and is dropped. On an answer, `x-sandserve-served-by` is kept only when the
//! answer came from another node ([`Relayed`]), and `x-sandserve-forwarded-by` never
//! leaves (a guest cannot make an answer look forwarded).

use super::AppState;
use crate::cluster::{Relayed, SealedBy, FORWARDED_BY, SERVED_BY};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Counter of requests that came with a forwarding header that was not a valid seal.
pub const FORGED_METRIC: &str = "sandserve_cluster_forged_forwards_total";

/// Checks and strips the cluster's headers on the way in and out.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    headers.remove(&SERVED_BY);
    let presented: Vec<_> = headers.get_all(&FORWARDED_BY).iter().cloned().collect();
    headers.remove(&FORWARDED_BY);
    if !presented.is_empty() {
        let sealed = match (&state.cluster, presented.as_slice()) {
            (Some(cluster), [one]) => {
                cluster
                    .seal()
                    .verify(one, request.method(), request.uri().path())
            }
            _ => None,
        };
        match sealed {
            Some(node) => {
                request.extensions_mut().insert(SealedBy(node));
            }
            None => {
                static DESCRIBED: std::sync::Once = std::sync::Once::new();
                DESCRIBED.call_once(|| {
                    metrics::describe_counter!(
                        FORGED_METRIC,
                        "Requests whose x-sandserve-forwarded-by was not a valid, fresh seal \
                         of this cluster (dropped; the request was routed like any other)."
                    );
                });
                metrics::counter!(FORGED_METRIC).increment(1);
                // Debug only: a client could otherwise fill the log (the counter shows it).
                tracing::debug!(
                    path = request.uri().path(),
                    "a request came with a forwarding header that is not a valid seal of this \
                     cluster; routed as any other"
                );
            }
        }
    }
    let mut response = next.run(request).await;
    let relayed = response.extensions().get::<Relayed>().is_some();
    let headers = response.headers_mut();
    headers.remove(&FORWARDED_BY);
    if !relayed {
        headers.remove(&SERVED_BY);
    }
    response
}
