//! Forwarding against real HTTP servers on loopback: an owner that reports what it
//! received, a port nobody listens on, and an owner that hangs up mid-request.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test failing

use super::super::seal::Relayed;
use super::super::{Cluster, Membership, NodeInfo, Routed, SealedBy};
use super::*;
use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A fixed list of live nodes.
struct Fixed {
    me: String,
    nodes: Vec<NodeInfo>,
}

impl Membership for Fixed {
    fn self_id(&self) -> &str {
        &self.me
    }
    fn live_nodes(&self) -> Vec<NodeInfo> {
        self.nodes.clone()
    }
}

/// An owner that answers 201 with what it received, as JSON.
async fn reporting_owner() -> String {
    async fn report(request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let report = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path_and_query().unwrap().as_str(),
            "authorization": header("authorization"),
            "request_id": header("x-request-id"),
            "content_type": header("content-type"),
            "content_length": header("content-length"),
            "forwarded_by": header("x-sandserve-forwarded-by"),
            "x_secret": header("x-secret"),
            "te": header("te"),
            "body_len": body.len(),
            "body_sha256": hex::encode(Sha256::digest(&body)),
        });
        Response::builder()
            .status(StatusCode::CREATED)
            .header("x-owner", "yes")
            .header("x-sandserve-forwarded-by", "node-z")
            .header("content-type", "application/json")
            .body(Body::from(report.to_string()))
            .unwrap()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(report);
        axum::serve(listener, app).await.unwrap();
    });
    url
}

/// A URL where nothing listens (a port bound, then released).
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn node(id: &str, url: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        url: url.into(),
    }
}

fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn query(body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/serving-endpoints/echo/invocations?x=1&y=two")
        .header("authorization", "Bearer tok_secret")
        .header("x-request-id", "req-42")
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .header("connection", "x-secret")
        .header("x-secret", "hop only")
        .header("te", "trailers")
        .body(Body::from(body))
        .unwrap()
}

async fn json_of(response: Response<Body>) -> (StatusCode, HeaderMap, Value) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
async fn forwards_method_path_headers_and_body_and_passes_the_answer_back() {
    let owner = node("node-b", &reporting_owner().await);
    let forwarder = Forwarder::new(Seal::private("node-a")).unwrap();
    let body = body_of(3 << 20);
    let sha = hex::encode(Sha256::digest(&body));
    let Outcome::Answered(answer) = forwarder.send(&owner, query(body)).await else {
        panic!("the owner is up: it must answer");
    };
    let answer_relayed = answer.extensions().get::<Relayed>().is_some();
    let (status, headers, report) = json_of(answer).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["x-owner"], "yes");
    assert_eq!(headers[&SERVED_BY], "node-b");
    assert_eq!(report["method"], "POST");
    assert_eq!(
        report["path"],
        "/serving-endpoints/echo/invocations?x=1&y=two"
    );
    assert_eq!(report["authorization"], "Bearer tok_secret");
    assert_eq!(report["request_id"], "req-42");
    assert_eq!(report["content_type"], "application/json");
    assert_eq!(report["content_length"], (3 << 20).to_string());
    let seal = HeaderValue::from_str(report["forwarded_by"].as_str().unwrap()).unwrap();
    assert_eq!(
        forwarder
            .seal()
            .verify(&seal, &Method::POST, "/serving-endpoints/echo/invocations")
            .as_deref(),
        Some("node-a"),
        "sealed over the method and the path"
    );
    assert!(
        !headers.contains_key(&FORWARDED_BY),
        "an owner's forwarding header is not passed on"
    );
    assert!(answer_relayed);
    assert_eq!(report["body_len"], 3 << 20);
    assert_eq!(report["body_sha256"], sha);
    // Hop-by-hop headers (and the ones `Connection` names) stay on the first hop.
    assert_eq!(report["x_secret"], Value::Null);
    assert_eq!(report["te"], Value::Null);
}

#[tokio::test]
async fn an_unreachable_owner_hands_the_request_back_intact() {
    let owner = node("node-b", &dead_url().await);
    let forwarder = Forwarder::new(Seal::private("node-a")).unwrap();
    let body = body_of(100_000);
    let Outcome::Unreachable(back, why) = forwarder.send(&owner, query(body.clone())).await else {
        panic!("nothing listens there: the request must come back");
    };
    assert!(why.to_lowercase().contains("connect"), "{why}");
    assert_eq!(back.method(), Method::POST);
    assert_eq!(
        back.uri().path_and_query().unwrap().as_str(),
        "/serving-endpoints/echo/invocations?x=1&y=two"
    );
    assert_eq!(back.headers()["authorization"], "Bearer tok_secret");
    assert!(!back.headers().contains_key(&FORWARDED_BY));
    let returned = back.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(returned.as_ref(), body.as_slice());
}

#[tokio::test]
async fn an_owner_that_hangs_up_mid_request_is_a_failure_not_a_retry() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; 64 * 1024];
        // Read the head and some of the body, then hang up without answering.
        let _ = stream.read(&mut buffer).await;
        drop(stream);
    });
    let forwarder = Forwarder::new(Seal::private("node-a")).unwrap();
    let outcome = forwarder
        .send(&node("node-b", &url), query(body_of(4 << 20)))
        .await;
    let Outcome::Failed(ForwardError::Interrupted { node }) = outcome else {
        panic!("the body had left: the request cannot be retried");
    };
    assert_eq!(node, "node-b");
}

/// A key that `owner` owns among `nodes` with one owner per key.
fn key_owned_by(owner: &str, nodes: &[NodeInfo]) -> String {
    let placement = super::super::Placement::new(1);
    (0..1000)
        .map(|i| format!("t/e@{i}"))
        .find(|key| placement.owners(key, nodes)[0].id == owner)
        .unwrap()
}

#[tokio::test]
async fn cluster_routes_to_the_owner_falls_back_when_it_is_gone_and_never_forwards_twice() {
    let live = node("node-b", &reporting_owner().await);
    let me = node("node-a", "http://127.0.0.1:1");
    let nodes = vec![me.clone(), live.clone()];
    let cluster = Cluster::new(
        Arc::new(Fixed {
            me: "node-a".into(),
            nodes: nodes.clone(),
        }),
        1,
    )
    .unwrap();
    let theirs = key_owned_by("node-b", &nodes);
    let mine = key_owned_by("node-a", &nodes);
    assert!(cluster.is_owner(&mine) && !cluster.is_owner(&theirs));

    // Not ours: forwarded, the owner's answer comes back.
    let Routed::Answered(answer) = cluster.route(&theirs, query(body_of(10))).await else {
        panic!("node-b owns the key and is up");
    };
    let (status, headers, report) = json_of(answer).await;
    assert_eq!(
        (status, &headers[&SERVED_BY]),
        (StatusCode::CREATED, &"node-b".parse().unwrap())
    );
    // Sealed by node-a for this method and path (as sent).
    let seal = HeaderValue::from_str(report["forwarded_by"].as_str().unwrap()).unwrap();
    assert_eq!(
        cluster
            .seal()
            .verify(&seal, &Method::POST, "/serving-endpoints/echo/invocations")
            .as_deref(),
        Some("node-a")
    );
    assert_eq!(
        cluster
            .seal()
            .verify(&seal, &Method::GET, "/serving-endpoints/echo/invocations"),
        None
    );
    assert_eq!((cluster.forwarded(), cluster.fallbacks()), (1, 0));

    // Ours: served here.
    assert!(matches!(
        cluster.route(&mine, query(body_of(10))).await,
        Routed::Local(_)
    ));
    // Forwarded by another node (its seal checked at the API's edge): served here
    // whoever owns it.
    let mut again = query(body_of(10));
    again.extensions_mut().insert(SealedBy("node-c".into()));
    assert!(matches!(
        cluster.route(&theirs, again).await,
        Routed::Local(_)
    ));
    assert_eq!((cluster.forwarded(), cluster.fallbacks()), (1, 0));
    // The bare header is nothing to the router: forwarded like any other.
    let mut forged = query(body_of(10));
    forged
        .headers_mut()
        .insert(FORWARDED_BY.clone(), HeaderValue::from_static("node-c"));
    assert!(matches!(
        cluster.route(&theirs, forged).await,
        Routed::Answered(_)
    ));
    assert_eq!((cluster.forwarded(), cluster.fallbacks()), (2, 0));

    // The owner is gone (its lease not yet expired): served here, and counted.
    let gone = Cluster::new(
        Arc::new(Fixed {
            me: "node-a".into(),
            nodes: vec![me, node("node-b", &dead_url().await)],
        }),
        1,
    )
    .unwrap();
    let Routed::Local(request) = gone.route(&theirs, query(body_of(1000))).await else {
        panic!("no owner reachable: the fallback serves here");
    };
    let body = request.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), body_of(1000).as_slice());
    assert_eq!((gone.forwarded(), gone.fallbacks()), (0, 1));
}
