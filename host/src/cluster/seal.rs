//! The seal on a forwarded request: proof that another node of this cluster sent it, so
//! that the receiver serves it where it arrives (see `Cluster::route`). Without the seal,
//! any client could send [`FORWARDED_BY`](super::FORWARDED_BY) itself and make every node
//! load every graph. The header's value is `<node id>.<unix seconds>.<hex HMAC-SHA256>`,
//! the HMAC keyed by the cluster secret (generated once and kept in the metadata database;
//! each node reads it at start and never logs or answers it) over the node id, the time,
//! and the request's method and path. A seal is accepted only when its HMAC matches and its
//! time is within [`FRESH_FOR`] of the receiver's clock, so a seal copied off the wire
//! works only for that method and path, and only briefly (the nodes' clocks must agree
//! within that; operations.md). A node without the cluster's secret (single-node mode)
//! seals with a random key of its own, which no other node accepts.

use axum::http::{HeaderValue, Method};
use hmac::{Hmac, KeyInit, Mac};
use sha2_hmac::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far a seal's time may be from the receiver's clock, either way.
pub const FRESH_FOR: Duration = Duration::from_secs(60);

/// Shortest cluster secret accepted (bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// On a request (an extension, set by the API's header guard): another node of the cluster
/// forwarded it, with a valid seal. The header itself never reaches the routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBy(pub String);

/// On an answer (an extension, set by the forwarder): it came from another node, so its
/// [`SERVED_BY`](super::SERVED_BY) header is ours to keep.
#[derive(Debug, Clone, Copy)]
pub struct Relayed;

/// Seals this node's forwarded requests and checks the seals of others'.
pub struct Seal {
    node: String,
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for Seal {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Seal {
    /// Seals of node `node` with the cluster's `secret`; `None` when the secret is shorter
    /// than [`MIN_SECRET_BYTES`].
    pub fn new(node: &str, secret: &[u8]) -> Option<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return None;
        }
        let key = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        Some(Self {
            node: node.to_string(),
            key,
        })
    }

    /// Seals with a random key of this process's own: no other node accepts them.
    pub fn private(node: &str) -> Self {
        let mut secret = [0u8; MIN_SECRET_BYTES];
        // The OS random source failing is not recoverable for a credential.
        if let Err(e) = getrandom::fill(&mut secret) {
            panic!("the operating system's random source failed: {e}");
        }
        match Self::new(node, &secret) {
            Some(seal) => seal,
            None => unreachable!("a key of MIN_SECRET_BYTES is accepted"),
        }
    }

    /// The id of the node whose seals these are.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn mac(&self, node: &str, at: u64, method: &Method, path: &str) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        for part in [
            "sandserve-forward-v1",
            node,
            &at.to_string(),
            method.as_str(),
            path,
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The seal of a request `method path` sent now.
    pub fn stamp(&self, method: &Method, path: &str) -> HeaderValue {
        self.stamp_at(method, path, unix_now())
    }

    fn stamp_at(&self, method: &Method, path: &str, at: u64) -> HeaderValue {
        let tag = hex::encode(
            self.mac(&self.node, at, method, path)
                .finalize()
                .into_bytes(),
        );
        let text = format!("{}.{at}.{tag}", self.node);
        // Node ids are letters, digits, `-`, `_` and `.` (config/cluster.rs).
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// The node that sealed `value` for `method path`, when the seal is this cluster's and
    /// fresh; `None` otherwise (forged, altered, stale, or not a seal at all).
    pub fn verify(&self, value: &HeaderValue, method: &Method, path: &str) -> Option<String> {
        self.verify_at(value, method, path, unix_now())
    }

    fn verify_at(
        &self,
        value: &HeaderValue,
        method: &Method,
        path: &str,
        now: u64,
    ) -> Option<String> {
        let text = value.to_str().ok()?;
        let (rest, tag) = text.rsplit_once('.')?;
        let (node, at) = rest.rsplit_once('.')?;
        let at: u64 = at.parse().ok()?;
        if node.is_empty() || at.abs_diff(now) > FRESH_FOR.as_secs() || tag.len() != 64 {
            return None;
        }
        let tag = hex::decode(tag).ok()?;
        self.mac(node, at, method, path)
            .verify_slice(&tag)
            .ok()
            .map(|()| node.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_fresh_seal_of_the_cluster_is_accepted_for_its_request_only() {
        let a = Seal::new("node-a", SECRET).unwrap();
        let b = Seal::new("node-b", SECRET).unwrap();
        let path = "/serving-endpoints/echo/invocations";
        let now = 1_800_000_000;
        let seal = a.stamp_at(&Method::POST, path, now);
        assert_eq!(
            b.verify_at(&seal, &Method::POST, path, now).as_deref(),
            Some("node-a")
        );
        assert_eq!(
            b.verify_at(&seal, &Method::POST, path, now + 60).as_deref(),
            Some("node-a"),
            "clocks a minute apart"
        );
        // Another request, another time, another key, or an altered seal: refused.
        assert_eq!(b.verify_at(&seal, &Method::GET, path, now), None);
        assert_eq!(
            b.verify_at(&seal, &Method::POST, "/v2/models/x/infer", now),
            None
        );
        assert_eq!(b.verify_at(&seal, &Method::POST, path, now + 61), None);
        assert_eq!(b.verify_at(&seal, &Method::POST, path, now - 61), None);
        let stranger = Seal::private("node-a");
        assert_eq!(stranger.verify_at(&seal, &Method::POST, path, now), None);
        let text = seal.to_str().unwrap();
        let renamed = HeaderValue::from_str(&text.replacen("node-a", "node-c", 1)).unwrap();
        assert_eq!(b.verify_at(&renamed, &Method::POST, path, now), None);
        let later =
            HeaderValue::from_str(&text.replacen(&now.to_string(), &(now + 1).to_string(), 1))
                .unwrap();
        assert_eq!(b.verify_at(&later, &Method::POST, path, now), None);
        for garbage in [
            "node-c",
            "",
            "a.b",
            "node-a.1800000000.zz",
            "..",
            "node-a.x.00",
        ] {
            let value = HeaderValue::from_str(garbage).unwrap();
            assert_eq!(
                b.verify_at(&value, &Method::POST, path, now),
                None,
                "{garbage}"
            );
        }
        // A node id with dots (allowed) round-trips.
        let dotted = Seal::new("pod.zone-1", SECRET).unwrap();
        let seal = dotted.stamp_at(&Method::POST, path, now);
        assert_eq!(
            b.verify_at(&seal, &Method::POST, path, now).as_deref(),
            Some("pod.zone-1")
        );
        assert!(Seal::new("node-a", b"short").is_none());
        assert!(
            !format!("{a:?}").contains("0123"),
            "the key is never printed"
        );
    }
}
