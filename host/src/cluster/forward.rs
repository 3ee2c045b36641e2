//! Forwarding one HTTP request to another node and streaming its answer back: the method,
//! path and query, and every end-to-end header (the caller's `Authorization`, its
//! `x-request-id`, content type and length) go as they came; the body is streamed, not
//! buffered; the owner's status, headers and body come back as they are, with
//! [`SERVED_BY`] naming the node that answered. The request carries [`FORWARDED_BY`] with
//! this node's seal ([`Seal`]), and a request with a valid seal is never forwarded again
//! (see `Cluster::route`): one hop at most, so two nodes that disagree about ownership for a
//! moment cannot bounce a request forever.
//!
//! A request whose body was never read by the connection to the owner (it could not
//! connect, or failed before sending) is handed back intact, so the caller can try the
//! next owner or serve it itself. Once body bytes have left, a failure cannot be retried
//! (the body is gone): it is reported as [`ForwardError::Interrupted`].

use super::membership::NodeInfo;
use super::seal::{Relayed, Seal};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use thiserror::Error;

/// Set on a forwarded request, to the forwarding node's seal ([`Seal`]): the receiver
/// serves it itself when the seal is valid.
pub static FORWARDED_BY: HeaderName = HeaderName::from_static("x-sandserve-forwarded-by");
/// Set on a forwarded request's answer, to the id of the node that answered.
pub static SERVED_BY: HeaderName = HeaderName::from_static("x-sandserve-served-by");

/// How long a connection to an owner may take; past it the owner counts as unreachable
/// (on one network a live node accepts in well under a millisecond; a dead one refuses or
/// does not answer at all).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest wait for the next bytes of an owner's answer: a handler may run for up to
/// 300 s (`timeout_ms` is at most 300000), so an owner silent for longer is stuck (stopped
/// with SIGSTOP, or its machine gone without a reset), and the query fails with a 503
/// instead of hanging for as long as the caller waits.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(330);

/// Why forwarding failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The HTTP client could not be built.
    #[error("cannot build the forwarding client: {0}")]
    Client(String),
    /// The owner's URL (from membership) is not usable.
    #[error("node `{node}` has an unusable URL")]
    BadUrl {
        /// The node.
        node: String,
    },
    /// The request reached the owner, but the exchange broke off after its body had
    /// started to leave (it cannot be sent again).
    #[error("node `{node}` failed while serving a forwarded request; retry")]
    Interrupted {
        /// The node.
        node: String,
    },
}

/// What became of a forwarded request.
pub enum Outcome {
    /// The owner answered (any status): its answer, streaming.
    Answered(Response<Body>),
    /// The owner could not be reached; the request, intact, to try elsewhere.
    Unreachable(Request<Body>, String),
    /// The exchange broke off after the body had started to leave.
    Failed(ForwardError),
}

/// The HTTP client one node forwards with (keeps connections to the other nodes open).
pub struct Forwarder {
    client: reqwest::Client,
    seal: Seal,
}

/// Headers of one hop only (RFC 9110 section 7.6.1), never forwarded, plus `host` (the
/// client sets the owner's).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `headers` without the hop-by-hop ones (and those `Connection` names) or `host`.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if HOP_BY_HOP.contains(name)
            || name == header::HOST
            || named_by_connection.iter().any(|n| n == name.as_str())
        {
            continue;
        }
        kept.append(name.clone(), value.clone());
    }
    kept
}

impl Forwarder {
    /// A client for the node whose seal is `seal` (on [`FORWARDED_BY`] of what it sends).
    pub fn new(seal: Seal) -> Result<Self, ForwardError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(ANSWER_TIMEOUT)
            // An answer is passed on as it is: a redirect is the caller's to follow.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ForwardError::Client(e.to_string()))?;
        Ok(Self { client, seal })
    }

    /// This node's seal (it also checks the others').
    pub fn seal(&self) -> &Seal {
        &self.seal
    }

    /// Sends `request` to `owner` and streams its answer back.
    pub async fn send(&self, owner: &NodeInfo, request: Request<Body>) -> Outcome {
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let url = format!("{}{path}", owner.url.trim_end_matches('/'));
        let Ok(url) = reqwest::Url::parse(&url) else {
            return Outcome::Failed(ForwardError::BadUrl {
                node: owner.id.clone(),
            });
        };
        let mut headers = end_to_end(&parts.headers);
        // Sealed over the path as it is sent (the URL parser may normalise it).
        headers.insert(
            FORWARDED_BY.clone(),
            self.seal.stamp(&parts.method, url.path()),
        );
        let handoff = Handoff::new(body);
        let slot = handoff.slot.clone();
        let started = handoff.started.clone();
        let sent = self
            .client
            .request(parts.method.clone(), url)
            .headers(headers)
            .body(reqwest::Body::wrap(handoff))
            .send()
            .await;
        match sent {
            Ok(answer) => {
                let answer: Response<reqwest::Body> = answer.into();
                let (mut answer_parts, answer_body) = answer.into_parts();
                answer_parts.headers = end_to_end(&answer_parts.headers);
                answer_parts.headers.remove(&FORWARDED_BY);
                if let Ok(id) = HeaderValue::from_str(&owner.id) {
                    answer_parts.headers.insert(SERVED_BY.clone(), id);
                }
                answer_parts.extensions.insert(Relayed);
                Outcome::Answered(Response::from_parts(answer_parts, Body::new(answer_body)))
            }
            Err(e) => {
                let untouched = !started.load(Ordering::Acquire);
                let body = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                match body {
                    Some(body) if untouched => {
                        Outcome::Unreachable(Request::from_parts(parts, body), error_chain(&e))
                    }
                    _ => {
                        tracing::warn!(node = %owner.id, "forwarded request failed: {}", error_chain(&e));
                        Outcome::Failed(ForwardError::Interrupted {
                            node: owner.id.clone(),
                        })
                    }
                }
            }
        }
    }
}

/// An error and its causes on one line (reqwest's own message is only the outermost).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The request body as the client sends it, left in a shared slot until the client first
/// reads it: if the connection fails before that, the body is still in the slot, intact.
/// (The slot is a mutex so that the body type is `Sync`, as the client needs; it is only
/// ever locked by one reader at a time.)
struct Handoff {
    slot: Arc<Mutex<Option<Body>>>,
    started: Arc<AtomicBool>,
    hint: SizeHint,
}

impl Handoff {
    fn new(body: Body) -> Self {
        let hint = http_body::Body::size_hint(&body);
        Self {
            slot: Arc::new(Mutex::new(Some(body))),
            started: Arc::new(AtomicBool::new(false)),
            hint,
        }
    }
}

impl http_body::Body for Handoff {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.started.store(true, Ordering::Release);
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests;
