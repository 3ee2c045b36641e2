//! Cluster mode's request routing: several nodes share one metadata store and one blob
//! store, and each endpoint version is served by a few of them. [`Membership`] says which
//! nodes are live (the PostgreSQL nodes table with heartbeat leases); [`Placement`] picks a
//! key's owners by rendezvous hashing; [`Cluster::route`] sends a query this node does not
//! own to an owner ([`Forwarder`]), or serves it here when it owns the key, when another
//! node forwarded it already (its [`Seal`] checked by the API's header guard), or when no
//! owner can be reached (the fallback, counted). Single-node servers have no [`Cluster`] and never reach this module.
//! (`server/follow.rs` applies the metadata changes other nodes make to this node's
//! caches and live endpoints.)

pub mod forward;
pub mod membership;
pub mod placement;
pub mod seal;

pub use forward::{ForwardError, Forwarder, Outcome, FORWARDED_BY, SERVED_BY};
pub use membership::{Membership, NodeInfo, SingleNode};
pub use placement::{endpoint_key, model_key, Placement, DEFAULT_OWNERS};
pub use seal::{Relayed, Seal, SealedBy};

use axum::body::Body;
use axum::http::{Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counter of queries forwarded to an owner that answered.
pub const FORWARDED_METRIC: &str = "sandserve_cluster_forwarded_total";
/// Counter of queries served here because no owner could be reached.
pub const FALLBACK_METRIC: &str = "sandserve_cluster_fallback_total";

/// How often a node waiting for an owner's answer checks that the owner's lease holds.
pub const OWNER_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Largest request body read before forwarding, so that the query can be sent again.
pub const RESEND_LIMIT: usize = 1 << 20;

/// A request and, when its body is small enough ([`RESEND_LIMIT`], by its
/// `Content-Length`), its head and body kept for sending again. A body shorter than its
/// `Content-Length` said, or broken off, answers 400 here.
async fn resendable(
    request: Request<Body>,
) -> Result<
    (
        Request<Body>,
        Option<(axum::http::request::Parts, bytes::Bytes)>,
    ),
    Response<Body>,
> {
    let small = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|len| len <= RESEND_LIMIT);
    if !small {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, RESEND_LIMIT).await {
        Ok(bytes) => {
            let request = copy(&parts, &bytes);
            Ok((request, Some((parts, bytes))))
        }
        Err(e) => {
            let body = serde_json::json!({
                "error_code": "BAD_REQUEST",
                "message": format!("the request body could not be read: {e}"),
            });
            let mut answer = Response::new(Body::from(body.to_string()));
            *answer.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            answer.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            Err(answer)
        }
    }
}

/// A request with `parts`' head and `body`.
fn copy(parts: &axum::http::request::Parts, body: &bytes::Bytes) -> Request<Body> {
    let mut request = Request::new(Body::from(body.clone()));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    // What the router put there (the matched path's parameters, the request id): the
    // route serving it here reads them.
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// Where a query goes.
pub enum Routed {
    /// Serve it here.
    Local(Request<Body>),
    /// An owner answered; pass its answer on.
    Answered(Response<Body>),
    /// Forwarding broke off after the body had left (answer 503, retryable).
    Failed(ForwardError),
}

/// One node's view of the cluster and its client to the others.
pub struct Cluster {
    membership: Arc<dyn Membership>,
    placement: Placement,
    forwarder: Forwarder,
    forwarded: AtomicU64,
    fallbacks: AtomicU64,
}

impl Cluster {
    /// Routing over `membership`, each key owned by `owners` nodes, sealing with a key of
    /// this node's own (no other node accepts its forwards as such: see [`Cluster::with_seal`]).
    pub fn new(membership: Arc<dyn Membership>, owners: usize) -> Result<Self, ForwardError> {
        let seal = Seal::private(membership.self_id());
        Self::with_seal(membership, owners, seal)
    }

    /// Routing over `membership`, each key owned by `owners` nodes, forwarding with `seal`
    /// (made of the cluster's secret) and accepting the forwards of nodes that share it.
    pub fn with_seal(
        membership: Arc<dyn Membership>,
        owners: usize,
        seal: Seal,
    ) -> Result<Self, ForwardError> {
        let forwarder = Forwarder::new(seal)?;
        metrics::describe_counter!(
            FORWARDED_METRIC,
            "Queries forwarded to the node that owns their endpoint version."
        );
        metrics::describe_counter!(
            FALLBACK_METRIC,
            "Queries served by a node that does not own them because no owner could be reached."
        );
        Ok(Self {
            membership,
            placement: Placement::new(owners),
            forwarder,
            forwarded: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        })
    }

    /// The live nodes that own `key`, the preferred one first.
    pub fn owners(&self, key: &str) -> Vec<NodeInfo> {
        let nodes = self.membership.live_nodes();
        self.placement
            .owners(key, &nodes)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Whether this node owns `key` (what it should load and keep warm).
    pub fn is_owner(&self, key: &str) -> bool {
        let nodes = self.membership.live_nodes();
        self.placement
            .is_owner(key, self.membership.self_id(), &nodes)
    }

    /// A number that changes whenever the live nodes do (what each node owns may have
    /// changed): a hash of their ids, for this process only.
    pub fn live_epoch(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for node in self.membership.live_nodes() {
            node.id.hash(&mut hasher);
        }
        hasher.finish()
    }

    /// Whether this node's own lease is current (its view of who owns what can be trusted;
    /// a node just woken from a stop, or cut off from the database, must not act on it).
    pub fn is_live_member(&self) -> bool {
        self.membership.lease_current()
    }

    /// Forwards `request` to `owner`, giving up (a retryable failure) when the owner's lease
    /// runs out before it answers: a stopped owner (SIGSTOP, a frozen machine) accepts
    /// connections in its kernel but never answers, and its queries must fail after the
    /// lease, not after [`forward::ANSWER_TIMEOUT`].
    async fn send_while_live(&self, owner: &NodeInfo, request: Request<Body>) -> Outcome {
        let sent = self.forwarder.send(owner, request);
        tokio::pin!(sent);
        let mut checks = tokio::time::interval(OWNER_CHECK);
        checks.tick().await;
        loop {
            tokio::select! {
                outcome = &mut sent => return outcome,
                _ = checks.tick() => {
                    if !self.membership.live_nodes().iter().any(|n| n.id == owner.id) {
                        return Outcome::Failed(ForwardError::Interrupted {
                            node: owner.id.clone(),
                        });
                    }
                }
            }
        }
    }

    /// This node's seal, which also checks the other nodes' (the API's header guard).
    pub fn seal(&self) -> &Seal {
        self.forwarder.seal()
    }

    /// Queries forwarded to an owner so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Queries served here because no owner could be reached, so far.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Where the query `request` for `key` is served: here when this node owns `key` or
    /// another node forwarded it already (marked [`SealedBy`]), else by the first owner that
    /// can be reached, else here (the fallback).
    pub async fn route(&self, key: &str, request: Request<Body>) -> Routed {
        if request.extensions().get::<SealedBy>().is_some() {
            return Routed::Local(request);
        }
        let owners = self.owners(key);
        let me = self.membership.self_id();
        if owners.is_empty() || owners.iter().any(|n| n.id == me) {
            return Routed::Local(request);
        }
        // A small body is read first, so that the query can go to the next owner (or be
        // served here) when its owner dies or freezes after it was sent: running a query
        // twice is harmless (a sandbox has no side effects). A large one streams, and such
        // a failure answers 503.
        let (mut request, resend) = match resendable(request).await {
            Ok(ready) => ready,
            Err(answer) => return Routed::Answered(answer),
        };
        for owner in &owners {
            let attempt = match &resend {
                Some((parts, body)) => copy(parts, body),
                None => request,
            };
            match self.send_while_live(owner, attempt).await {
                Outcome::Answered(answer) => {
                    self.forwarded.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(FORWARDED_METRIC).increment(1);
                    return Routed::Answered(answer);
                }
                Outcome::Unreachable(back, why) => {
                    tracing::warn!(node = %owner.id, key, "owner unreachable: {why}");
                    request = back;
                }
                Outcome::Failed(e) => match &resend {
                    Some((parts, body)) => {
                        tracing::warn!(node = %owner.id, key, "owner failed, trying elsewhere: {e}");
                        request = copy(parts, body);
                    }
                    None => return Routed::Failed(e),
                },
            }
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(FALLBACK_METRIC).increment(1);
        tracing::warn!(key, "no owner reachable: serving here");
        Routed::Local(request)
    }
}
