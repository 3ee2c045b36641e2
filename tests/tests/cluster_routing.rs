//! Cluster routing through the server's own router (in-process, `oneshot`), with a fixed
//! membership of this node and one other: a real HTTP server on loopback stands in for the
//! other node and reports what it received. A query for an endpoint the other node owns is
//! forwarded to it with its `Authorization`, `x-request-id` and body, and its answer comes
//! back; a query this node owns, one already forwarded once, and one whose owner is gone
//! are served here by the real echo handler (the last counted as a fallback); a query that
//! does not authenticate is answered here, never forwarded. `/readyz` follows start-up and
//! draining.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use axum::body::Body;
use axum::http::{Method, Request, Response};
use axum::Router;
use http_body_util::BodyExt;
use sandserve_host::cluster::{endpoint_key, model_key, Cluster, Membership, NodeInfo, Placement};
use sandserve_host::server::App;
use sandserve_tests::packages::example_package;
use sandserve_tests::server::ADMIN_TOKEN;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// This node ("node-a") and whoever the test says is live.
struct Nodes {
    live: Mutex<Vec<NodeInfo>>,
}

impl Membership for Nodes {
    fn self_id(&self) -> &str {
        "node-a"
    }
    fn live_nodes(&self) -> Vec<NodeInfo> {
        self.live.lock().unwrap().clone()
    }
}

struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-request-id", "cluster-test-1")
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// The other node: answers 200 with what it received.
async fn reporting_node() -> String {
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
            "node": "node-b",
            "path": parts.uri.path(),
            "authorization": header("authorization"),
            "request_id": header("x-request-id"),
            "forwarded_by": header("x-sandserve-forwarded-by"),
            "body": serde_json::from_slice::<Value>(&body).unwrap(),
        });
        Response::new(Body::from(report.to_string()))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(report))
            .await
            .unwrap();
    });
    url
}

async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn run<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(sandserve_host::runtime::HOST_THREAD_STACK_BYTES)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

/// A node id that, next to "node-a", owns `key` (one owner per key) or does not.
fn other_node(key: &str, owns: bool, url: &str) -> NodeInfo {
    let me = NodeInfo {
        id: "node-a".into(),
        url: "http://127.0.0.1:1".into(),
    };
    (0..100)
        .map(|i| NodeInfo {
            id: format!("node-b{i}"),
            url: url.into(),
        })
        .find(|other| {
            let nodes = [me.clone(), other.clone()];
            (Placement::new(1).owners(key, &nodes)[0].id == other.id) == owns
        })
        .unwrap()
}

#[test]
fn queries_go_to_their_owner_and_fall_back_here_when_it_is_gone() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut app = App::open(&sandserve_tests::in_process::config(dir.path())).unwrap();
        let nodes = Arc::new(Nodes {
            live: Mutex::new(Vec::new()),
        });
        let cluster: Arc<Cluster> = app.join_cluster(nodes.clone(), 1).unwrap();
        let router = app.router();
        // Not started yet: not ready.
        let early = send(&router, Method::GET, "/readyz", None, &Value::Null).await;
        assert_eq!(early.status, 503, "{}", early.body);
        assert_eq!(early.body["error_code"], "TEMPORARILY_UNAVAILABLE");
        assert_eq!(
            early.body["details"][0]["reason"], "starting",
            "{}",
            early.body
        );
        app.start().unwrap();
        // Ready once the endpoint configs this node owns are warm (none yet: at once).
        let mut ready = send(&router, Method::GET, "/readyz", None, &Value::Null).await;
        for _ in 0..100 {
            if ready.status == 200 {
                break;
            }
            let message = ready.body["message"].as_str().unwrap_or_default();
            assert!(message.ends_with("owned_versions_warm"), "{}", ready.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
            ready = send(&router, Method::GET, "/readyz", None, &Value::Null).await;
        }
        assert_eq!(
            (ready.status, &ready.body),
            (200, &json!({"status": "ready"}))
        );

        // A tenant, the echo model and an endpoint, all on this node.
        let admin = Some(ADMIN_TOKEN);
        let created = send(
            &router,
            Method::POST,
            "/api/2.0/tenants",
            admin,
            &json!({"name": "acme"}),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let issued = send(
            &router,
            Method::POST,
            "/api/2.0/tokens",
            admin,
            &json!({"tenant": "acme", "permissions": ["CAN_MANAGE"], "endpoints": ["*"]}),
        )
        .await;
        let token = issued.body["token"].as_str().unwrap().to_string();
        let upload = router
            .clone()
            .oneshot(
                Request::post("/api/2.0/models/echo/versions")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/gzip")
                    .body(Body::from(example_package("echo")))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(upload.status(), 201);
        let endpoint = send(
            &router,
            Method::POST,
            "/api/2.0/serving-endpoints",
            Some(&token),
            &json!({"name": "ep", "config": {"served_entities": [
                {"name": "echo-1", "entity_name": "echo", "entity_version": "1"}]}}),
        )
        .await;
        assert_eq!(endpoint.status, 200, "{}", endpoint.body);
        let deadline = Instant::now() + Duration::from_secs(60);
        let config_version = loop {
            let state = send(
                &router,
                Method::GET,
                "/api/2.0/serving-endpoints/ep",
                Some(&token),
                &Value::Null,
            )
            .await;
            if state.body["state"]["ready"] == "READY"
                && state.body["state"]["config_update"] == "NOT_UPDATING"
            {
                break state.body["config"]["config_version"].as_u64().unwrap();
            }
            assert!(Instant::now() < deadline, "never ready: {}", state.body);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let key = endpoint_key("acme", "ep", config_version);
        let me = NodeInfo {
            id: "node-a".into(),
            url: "http://127.0.0.1:1".into(),
        };
        let query = json!({"inputs": {"x": [1.0, 2.0, 3.0]}});
        let path = "/serving-endpoints/ep/invocations";

        // The other node owns the endpoint: the query goes there, as it came.
        let owner_url = reporting_node().await;
        *nodes.live.lock().unwrap() = vec![me.clone(), other_node(&key, true, &owner_url)];
        let there = send(&router, Method::POST, path, Some(&token), &query).await;
        assert_eq!(there.status, 200, "{}", there.body);
        assert_eq!(there.body["node"], "node-b");
        assert_eq!(there.body["path"], path);
        assert_eq!(there.body["authorization"], format!("Bearer {token}"));
        assert_eq!(there.body["request_id"], "cluster-test-1");
        // Sealed with this node's key, for this method and path.
        let seal = there.body["forwarded_by"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            cluster.seal().verify(&seal, &Method::POST, path).as_deref(),
            Some("node-a")
        );
        assert_eq!(there.body["body"], query);
        assert!(there.headers["x-sandserve-served-by"]
            .to_str()
            .unwrap()
            .starts_with("node-b"));
        assert_eq!((cluster.forwarded(), cluster.fallbacks()), (1, 0));
        // The same for KServe V2 by endpoint name.
        let v2 = send(&router, Method::POST, "/v2/models/ep/infer", Some(&token),
            &json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]})).await;
        assert_eq!(
            (v2.status, &v2.body["node"]),
            (200, &json!("node-b")),
            "{}",
            v2.body
        );
        assert_eq!(cluster.forwarded(), 2);
        // A model version queried directly is placed by its own key.
        let model_path = "/v2/models/echo/versions/1/infer";
        let v2_query = json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]});
        let model = model_key("acme", "echo", 1);
        *nodes.live.lock().unwrap() = vec![me.clone(), other_node(&model, true, &owner_url)];
        let direct = send(&router, Method::POST, model_path, Some(&token), &v2_query).await;
        assert_eq!(
            (direct.status, &direct.body["path"]),
            (200, &json!(model_path)),
            "{}",
            direct.body
        );
        assert_eq!(cluster.forwarded(), 3);
        *nodes.live.lock().unwrap() = vec![me.clone(), other_node(&model, false, &owner_url)];
        let direct = send(&router, Method::POST, model_path, Some(&token), &v2_query).await;
        assert_eq!(direct.status, 200, "{}", direct.body);
        let x = direct.body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "x")
            .unwrap();
        assert_eq!(
            x["data"],
            json!([1.0, 2.0, 3.0]),
            "served here: {}",
            direct.body
        );
        assert_eq!(cluster.forwarded(), 3);
        *nodes.live.lock().unwrap() = vec![me.clone(), other_node(&key, true, &owner_url)];

        // A forwarding header without a valid seal (a client's): dropped, the query goes
        // to its owner like any other.
        let forged = Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("x-sandserve-forwarded-by", "node-c")
            .header("x-sandserve-served-by", "node-z")
            .body(Body::from(query.to_string()))
            .unwrap();
        let forged = router.clone().oneshot(forged).await.unwrap();
        assert_eq!(forged.status(), 200);
        assert!(forged.headers()["x-sandserve-served-by"]
            .to_str()
            .unwrap()
            .starts_with("node-b"));
        let forged: Value =
            serde_json::from_slice(&forged.into_body().collect().await.unwrap().to_bytes())
                .unwrap();
        assert_eq!(forged["node"], "node-b", "{forged}");
        let seal = forged["forwarded_by"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            cluster.seal().verify(&seal, &Method::POST, path).as_deref(),
            Some("node-a"),
            "the client's header was replaced by this node's seal"
        );
        assert_eq!(cluster.forwarded(), 4);

        // Already forwarded once by a node of the cluster (sealed): served here (the real
        // echo), never sent on.
        let mut again = Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header(
                "x-sandserve-forwarded-by",
                cluster.seal().stamp(&Method::POST, path),
            )
            .body(Body::from(query.to_string()))
            .unwrap();
        again
            .headers_mut()
            .insert("x-request-id", "cluster-test-2".parse().unwrap());
        let here = router.clone().oneshot(again).await.unwrap();
        assert_eq!(here.status(), 200);
        assert_eq!(here.headers()["served-model-name"], "echo-1");
        let here: Value =
            serde_json::from_slice(&here.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(here["predictions"]["x"], json!([1.0, 2.0, 3.0]), "{here}");
        assert_eq!(cluster.forwarded(), 4);

        // Without valid credentials: answered here (401), not forwarded.
        let anonymous = send(&router, Method::POST, path, None, &query).await;
        assert_eq!(
            (anonymous.status, &anonymous.body["error_code"]),
            (401, &json!("UNAUTHENTICATED")),
            "{}",
            anonymous.body
        );
        let forged = send(
            &router,
            Method::POST,
            path,
            Some("not-a-token-at-all"),
            &query,
        )
        .await;
        assert_eq!(forged.status, 401, "{}", forged.body);
        assert_eq!(cluster.forwarded(), 4);

        // This node owns it: served here.
        *nodes.live.lock().unwrap() = vec![me.clone(), other_node(&key, false, &owner_url)];
        let mine = send(&router, Method::POST, path, Some(&token), &query).await;
        assert_eq!(mine.status, 200, "{}", mine.body);
        assert_eq!(mine.body["predictions"]["x"], json!([1.0, 2.0, 3.0]));
        assert_eq!((cluster.forwarded(), cluster.fallbacks()), (4, 0));

        // The owner is gone (its lease not yet expired): served here, counted.
        *nodes.live.lock().unwrap() = vec![me, other_node(&key, true, &dead_url().await)];
        let fallback = send(&router, Method::POST, path, Some(&token), &query).await;
        assert_eq!(fallback.status, 200, "{}", fallback.body);
        assert_eq!(fallback.body["predictions"]["x"], json!([1.0, 2.0, 3.0]));
        assert!(!fallback.headers.contains_key("x-sandserve-served-by"));
        assert_eq!((cluster.forwarded(), cluster.fallbacks()), (4, 1));

        // Draining: not ready, at once.
        app.readiness().start_draining();
        let draining = send(&router, Method::GET, "/readyz", None, &Value::Null).await;
        assert_eq!(draining.status, 503);
        assert_eq!(
            draining.body["details"][0]["reason"], "draining",
            "{}",
            draining.body
        );
        let v2_ready = send(&router, Method::GET, "/v2/health/ready", None, &Value::Null).await;
        assert_eq!(v2_ready.status, 503);
        // Still alive.
        let alive = send(&router, Method::GET, "/health", None, &Value::Null).await;
        assert_eq!((alive.status, &alive.body["status"]), (200, &json!("ok")));
    });
}
