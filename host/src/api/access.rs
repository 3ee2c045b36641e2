//! The HTTP layer's per-request concerns, from tower-http: every request gets an id
//! (`x-request-id`: the client's when it sent a sane one, else a generated UUID), every
//! response carries it back, and each request is logged once it is answered (one access
//! line: method, path, status, latency, tenant, request id — never headers, so never a
//! bearer token, and never the query string) and counted in the HTTP metrics.
//!
//! The tenant is filled in by the `Caller` extractor once the token is known
//! ([`record_tenant`]); the request id reaches handlers as [`RequestIdText`].

use crate::telemetry::metrics::HttpMetrics;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Request, Response};
use axum::Router;
use std::convert::Infallible;
use std::time::Duration;
use tower::util::MapRequestLayer;
use tower::{Service, ServiceBuilder};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// Longest client-given request id kept.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Whether a client's `x-request-id` is kept: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`
/// (anything else could forge log lines or carry a secret into them; it is replaced).
pub fn sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_REQUEST_ID_BYTES).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn drop_insane_request_id(mut request: Request<Body>) -> Request<Body> {
    let insane = request
        .headers()
        .get_all("x-request-id")
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !sane_request_id(v));
    if insane {
        request.headers_mut().remove("x-request-id");
    }
    request
}

fn span(request: &Request<Body>) -> Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        target: "access",
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id = id,
        tenant = tracing::field::Empty,
    )
}

fn on_response(response: &Response<Body>, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    HttpMetrics::get().response(status, latency);
    tracing::info!(
        target: "access",
        status,
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "answered"
    );
}

/// Wraps `app` in the request-id and access-log layers (one stack of plain services; see
/// [`super::router`] for why not `Router::layer`), in a router of its own.
pub fn layers<S>(app: S) -> Router
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let stack = ServiceBuilder::new()
        .layer(MapRequestLayer::new(drop_insane_request_id))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(span)
                .on_request(())
                .on_response(on_response)
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .service(app);
    Router::new().fallback_service(stack)
}

/// Puts the authenticated tenant (or `admin`) on the request's access line.
pub fn record_tenant(tenant: &str) {
    Span::current().record("tenant", tenant);
}

/// The request's id, as the request-id layer set it (empty outside the layers, e.g. in
/// a handler called directly).
pub struct RequestIdText(Option<HeaderValue>);

impl RequestIdText {
    /// The id.
    pub fn as_str(&self) -> &str {
        self.0
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestIdText {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<RequestId>()
                .map(|id| id.header_value().clone()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_short_ids_are_kept() {
        for ok in ["abc", "req-1.2_3:4", &"a".repeat(128)] {
            assert!(sane_request_id(&HeaderValue::from_str(ok).unwrap()), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "Bearer x/y", &"a".repeat(129), "é"] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            assert!(!sane_request_id(&value), "{bad}");
        }
    }
}
