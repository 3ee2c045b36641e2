//! Cluster mode under hostile clients and a metadata outage, on a real PostgreSQL and real
//! `sandserve` nodes on loopback:
//! - a client's `x-sandserve-forwarded-by` (forged, or a seal of the wrong shape) does not
//!   make a node serve a query it does not own: the query goes to its owner like any other,
//!   and the forgery is counted; the nodes' own forwards carry a seal the owner accepts;
//! - a flood of bogus bearers (well-formed unknown tokens, or garbage) costs no metadata
//!   calls beyond the first;
//! - PostgreSQL stopped: queries of live endpoints with cached tokens keep serving;
//!   control-plane calls and unknown tokens answer 503 `TEMPORARILY_UNAVAILABLE` with
//!   `Retry-After` and no detail of the database; everything works again after a restart;
//! - a model version unshared through one node stops the other tenants' endpoints on every
//!   node within the propagation bound, not only on the node that took the change;
//! - an endpoint update whose node is killed while it prepares (its handler's blob made a
//!   FIFO nobody writes, so the load hangs) is failed by another node once the lease runs out:
//!   the old config serves on and the endpoint takes updates again.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::cluster::{self, wait_for, Node};
use sandserve_tests::packages::{echo_manifest, example_package, Tar};
use sandserve_tests::postgres::Postgres;
use sandserve_tests::server::Client;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

/// The bound the docs state for a change to reach every node (operations.md).
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

/// Node `id`, each endpoint version owned by `owners` nodes, its log kept at debug level.
fn start_node_owning(url: &str, shared_blobs: &Path, id: &str, owners: &str) -> Node {
    cluster::start_node(url, shared_blobs, id, &["--owners", owners], Some("debug"))
}

/// Node `id`, each endpoint version owned by one node.
fn start_node(url: &str, shared_blobs: &Path, id: &str) -> Node {
    start_node_owning(url, shared_blobs, id, "1")
}

/// A counter's value in `/metrics` (0 when the node has not counted any yet).
fn counter(node: &Node, name: &str) -> u64 {
    counter_in(&metrics_text(node), name)
}

fn metrics_text(node: &Node) -> String {
    let reply = node.server.admin().get_raw("/metrics", &[]);
    assert_eq!(reply.status, 200);
    String::from_utf8_lossy(&reply.body).to_string()
}

fn counter_in(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const INPUTS: &str = r#"{"inputs": {"x": [1.0, 2.0, 3.0]}}"#;

/// Queries endpoint `echo` with extra headers; checks a 200's answer. The status and the
/// node that served it when it was forwarded.
fn query(client: &Client, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let reply = client.post_raw(
        "/serving-endpoints/echo/invocations",
        &all,
        INPUTS.as_bytes(),
    );
    if reply.status == 200 {
        assert_eq!(reply.json()["predictions"]["x"], json!([1.0, 2.0, 3.0]));
    }
    assert!(
        reply.header("x-sandserve-forwarded-by").is_none(),
        "the forwarding header never reaches a client"
    );
    (
        reply.status,
        reply.header("x-sandserve-served-by").map(str::to_string),
    )
}

/// Uploads echo and makes endpoint `echo` on `node`; waits until it is ready there.
fn echo_endpoint(node: &Node, token: &str) {
    let client = node.server.client(token);
    assert_eq!(client.upload("echo", &example_package("echo")).0, 201);
    endpoint_of(node, token, "echo");
}

/// Makes endpoint `echo` serving `entity` version 1 on `node`; waits until it is ready.
fn endpoint_of(node: &Node, token: &str, entity: &str) {
    let client = node.server.client(token);
    let create = json!({"name": "echo", "config": {"served_entities": [
        {"name": "echo-1", "entity_name": entity, "entity_version": "1"}]}});
    let (status, body) = client.post("/api/2.0/serving-endpoints", &create);
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(60), "endpoint ready", || {
        let (_, body) = client.get("/api/2.0/serving-endpoints/echo");
        body["state"]["ready"] == "READY" && body["state"]["config_update"] == "NOT_UPDATING"
    });
}

#[test]
fn a_forged_forwarding_header_is_routed_like_any_other_query() {
    let pg = Postgres::start();
    let url = pg.create_database("cluster");
    let blobs = tempfile::tempdir().unwrap();
    let a = start_node(&url, blobs.path(), "node-a");
    let b = start_node(&url, blobs.path(), "node-b");
    wait_for(Duration::from_secs(10), "two live nodes", || {
        let (_, body) = a.server.admin().get("/api/2.0/cluster/nodes");
        body["nodes"].as_array().map(Vec::len) == Some(2)
    });
    let token = a.server.admin().tenant_with_token("acme", "CAN_MANAGE");
    echo_endpoint(&a, &token);

    // One owner (`--owners 1`): a query on the other node is forwarded to it.
    let mut owner = None;
    wait_for(Duration::from_secs(60), "a forwarded answer", || {
        for (node, other) in [(&a, "node-b"), (&b, "node-a")] {
            if let (200, Some(by)) = query(&node.server.client(&token), &[]) {
                assert_eq!(by, other);
                owner = Some(by);
                return true;
            }
        }
        false
    });
    let owner = owner.unwrap();
    let (owning, other) = if owner == "node-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let other_client = other.server.client(&token);

    // A client's forwarding header, forged in every shape: the query still goes to the
    // owner (the node it reached does not serve it, so does not load the graph).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forgeries = [
        "node-c".to_string(),
        owner.clone(),
        format!("{owner}.{now}.{}", "0".repeat(64)),
        format!("node-c.{now}.{}", "ab".repeat(32)),
        String::new(),
    ];
    for forged in &forgeries {
        let (status, by) = query(
            &other_client,
            &[
                ("x-sandserve-forwarded-by", forged),
                ("x-sandserve-served-by", "node-z"),
            ],
        );
        assert_eq!(
            (status, by.as_deref()),
            (200, Some(owner.as_str())),
            "forged `{forged}` was served where it arrived"
        );
    }
    assert_eq!(
        counter(other, "sandserve_cluster_forged_forwards_total"),
        forgeries.len() as u64
    );
    // The owner accepted each real forward's seal (a rejected one would be counted).
    assert_eq!(
        counter(owning, "sandserve_cluster_forged_forwards_total"),
        0
    );
    // A forgery sent to the owner itself: served there (it owns it), still counted.
    let (status, by) = query(
        &owning.server.client(&token),
        &[("x-sandserve-forwarded-by", "node-c")],
    );
    assert_eq!((status, by), (200, None));
    assert_eq!(
        counter(owning, "sandserve_cluster_forged_forwards_total"),
        1
    );

    // The secret: made once, 32 bytes, in the database only (never in a node's log or
    // answers).
    let secret = pg.psql(
        "cluster",
        "SELECT count(*) || ':' || encode(secret, 'hex') FROM cluster_secret GROUP BY secret",
    );
    let (rows, hex) = secret.split_once(':').unwrap();
    assert_eq!((rows, hex.len()), ("1", 64), "{secret}");
    for node in [&a, &b] {
        let log = node.server.log();
        assert!(log.contains("joined the cluster"), "the log is captured");
        assert!(!log.to_lowercase().contains(hex), "the secret was logged");
        let metrics = node.server.admin().get_raw("/metrics", &[]);
        assert!(!String::from_utf8_lossy(&metrics.body).contains(hex));
    }
}

#[test]
fn bogus_bearers_cost_no_metadata_reads_and_an_outage_answers_503() {
    let pg = Postgres::start();
    let url = pg.create_database("cluster");
    let blobs = tempfile::tempdir().unwrap();
    let a = start_node(&url, blobs.path(), "node-a");
    let token = a.server.admin().tenant_with_token("acme", "CAN_MANAGE");
    echo_endpoint(&a, &token);
    let client = a.server.client(&token);
    assert_eq!(query(&client, &[]), (200, None));
    // Issued, never used on this node yet: not cached.
    let unused = a.server.admin().token("acme", "CAN_QUERY", &["*"], None);

    // The token issues above reach this node's follower too (each drops cached entries, and
    // a lookup racing with that is read again): let them land first.
    std::thread::sleep(PROPAGATION_BOUND);
    // A flood of bogus bearers: one well-formed unknown token, and garbage.
    let bogus = format!("ssv_{}_{}", "0123456789abcdef", "f".repeat(64));
    let text = metrics_text(&a);
    assert!(
        text.contains("sandserve_metadata_calls_total "),
        "the node counts its metadata calls"
    );
    let calls_before = counter_in(&text, "sandserve_metadata_calls_total");
    for bearer in [bogus.as_str(), "garbage-token"] {
        let flood = a.server.client(bearer);
        for _ in 0..200 {
            let (status, body) = flood.get("/api/2.0/serving-endpoints");
            assert_eq!(
                (status, &body["error_code"]),
                (401, &json!("UNAUTHENTICATED")),
                "{body}"
            );
        }
    }
    let calls = counter(&a, "sandserve_metadata_calls_total") - calls_before;
    println!("400 requests with bogus bearers made {calls} metadata calls");
    assert!(calls <= 2, "{calls} metadata calls for 400 bogus bearers");

    // PostgreSQL stops.
    pg.stop();
    std::thread::sleep(Duration::from_secs(1));
    // Queries of the live endpoint, with a cached token: served, promptly.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(query(&client, &[]), (200, None));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "a query took {took:?}");
    }
    // Control-plane calls and an unknown token: 503 with Retry-After, nothing of the
    // database in the answer.
    let unavailable = |client: &Client, path: &str| {
        let reply = client.get_raw(path, &[]);
        let body = reply.json();
        assert_eq!(
            (reply.status, &body["error_code"]),
            (503, &json!("TEMPORARILY_UNAVAILABLE")),
            "{path}: {body}"
        );
        assert_eq!(reply.header("retry-after"), Some("2"), "{path}");
        let message = body["message"].as_str().unwrap();
        for detail in [
            "127.0.0.1",
            &pg.port().to_string(),
            "postgres",
            "sqlx",
            "pool",
        ] {
            assert!(!message.to_lowercase().contains(detail), "{message}");
        }
    };
    unavailable(&client, "/api/2.0/serving-endpoints/echo");
    unavailable(&client, "/api/2.0/models/echo/versions");
    unavailable(&a.server.admin(), "/api/2.0/tenants");
    unavailable(&a.server.client(&unused), "/api/2.0/serving-endpoints");
    let (status, body) = client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "other", "config": {"served_entities": [
            {"name": "e", "entity_name": "echo", "entity_version": "1"}]}}),
    );
    assert_eq!(
        (status, &body["error_code"]),
        (503, &json!("TEMPORARILY_UNAVAILABLE"))
    );
    // Bogus bearers still get their 401 (nothing to read).
    assert_eq!(
        a.server.client(&bogus).get("/api/2.0/serving-endpoints").0,
        401
    );
    assert_eq!(
        a.server
            .client("garbage-token")
            .get("/api/2.0/serving-endpoints")
            .0,
        401
    );

    // Back: everything answers again.
    pg.restart();
    let took = wait_for(Duration::from_secs(15), "control plane back", || {
        client.get("/api/2.0/serving-endpoints/echo").0 == 200
    });
    println!("control plane answered again {took:?} after PostgreSQL restarted");
    let (status, body) = a.server.client(&unused).get("/api/2.0/serving-endpoints");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["endpoints"][0]["name"], "echo", "{body}");
    assert_eq!(query(&client, &[]), (200, None));
}

#[test]
fn unsharing_through_one_node_stops_other_tenants_endpoints_on_every_node() {
    let pg = Postgres::start();
    let url = pg.create_database("cluster");
    let blobs = tempfile::tempdir().unwrap();
    // Two owners of each version, two nodes: both serve every endpoint themselves.
    let a = start_node_owning(&url, blobs.path(), "node-a", "2");
    let b = start_node_owning(&url, blobs.path(), "node-b", "2");
    let acme = a.server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let globex = a.server.admin().tenant_with_token("globex", "CAN_MANAGE");
    assert_eq!(
        a.server
            .client(&acme)
            .upload("echo", &example_package("echo"))
            .0,
        201
    );
    let (status, body) = a
        .server
        .client(&acme)
        .patch("/api/2.0/models/echo/versions/1", &json!({"shared": true}));
    assert_eq!((status, &body["shared"]), (200, &json!(true)), "{body}");
    endpoint_of(&a, &globex, "acme/echo");
    for node in [&a, &b] {
        wait_for(Duration::from_secs(60), "served on each node", || {
            query(&node.server.client(&globex), &[]) == (200, None)
        });
    }

    // Unshared through A: A stops at once, B within the bound, and stays stopped.
    let (status, body) = a
        .server
        .client(&acme)
        .patch("/api/2.0/models/echo/versions/1", &json!({"shared": false}));
    assert_eq!((status, &body["shared"]), (200, &json!(false)), "{body}");
    assert_eq!(query(&a.server.client(&globex), &[]).0, 503);
    let took = wait_for(Duration::from_secs(10), "B stops serving", || {
        let (status, by) = query(&b.server.client(&globex), &[]);
        assert_eq!(by, None, "B serves it itself");
        status != 200
    });
    println!("an unshare on A stopped the endpoint on B after {took:?}");
    assert!(took <= PROPAGATION_BOUND, "took {took:?}");
    std::thread::sleep(PROPAGATION_BOUND);
    for node in [&a, &b] {
        let client = node.server.client(&globex);
        assert_eq!(query(&client, &[]).0, 503);
        let (status, endpoint) = client.get("/api/2.0/serving-endpoints/echo");
        assert_eq!(status, 200, "{endpoint}");
        assert_eq!(endpoint["state"]["ready"], "NOT_READY", "{endpoint}");
        let why = endpoint["state"]["update_error"].as_str().unwrap_or("");
        assert!(why.contains("no longer shared"), "{endpoint}");
    }
}

/// The node lease (operations.md): a node that stops renewing is gone after it.
const LEASE: Duration = Duration::from_secs(5);

#[test]
fn an_update_whose_node_dies_is_failed_by_another_node_after_the_lease() {
    let pg = Postgres::start();
    let url = pg.create_database("cluster");
    let blobs = tempfile::tempdir().unwrap();
    let mut a = start_node_owning(&url, blobs.path(), "node-a", "2");
    let b = start_node_owning(&url, blobs.path(), "node-b", "2");
    let token = a.server.admin().tenant_with_token("acme", "CAN_MANAGE");
    echo_endpoint(&a, &token);
    let on_b = b.server.client(&token);
    wait_for(Duration::from_secs(60), "B serves it", || {
        query(&on_b, &[]) == (200, None)
    });

    // Version 2: echo with a custom section of its own, so its handler is a blob no other
    // version shares. Uploaded on B (whatever B compiles stays in B's cache), then its blob
    // is made a FIFO nobody writes: A, preparing an update to it, hangs reading it.
    let mut handler = sandserve_tests::guest_wasm("echo");
    handler.extend_from_slice(&[0, 20, 3, b'p', b'a', b'd']);
    handler.extend_from_slice(&now_nanos().to_le_bytes());
    let manifest = echo_manifest();
    let handler_name = manifest
        .lines()
        .find_map(|l| l.strip_prefix("handler = \"")?.strip_suffix('"'))
        .unwrap()
        .to_string();
    let package = Tar::default()
        .file("sandserve.toml", manifest.as_bytes())
        .file(&handler_name, &handler)
        .gzip();
    let (status, body) = on_b.upload("echo", &package);
    assert_eq!((status, &body["version"]), (201, &json!(2)), "{body}");
    let blob = blobs
        .path()
        .join("sha256")
        .join(hex::encode(Sha256::digest(&handler)));
    assert!(blob.is_file(), "{} is the handler's blob", blob.display());
    std::fs::remove_file(&blob).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&blob)
        .status()
        .unwrap();
    assert!(made.success());

    let on_a = a.server.client(&token);
    let update = json!({"served_entities": [
        {"name": "echo-2", "entity_name": "echo", "entity_version": "2"}]});
    let (status, body) = on_a.put("/api/2.0/serving-endpoints/echo/config", &update);
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_secs(1));
    let (_, running) = on_b.get("/api/2.0/serving-endpoints/echo");
    assert_eq!(
        running["state"]["config_update"], "IN_PROGRESS",
        "{running}"
    );
    // Nobody else may update it meanwhile.
    let (status, body) = on_b.put("/api/2.0/serving-endpoints/echo/config", &update);
    assert_eq!(status, 409, "{body}");

    // A dies mid-update.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &a.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(a.server.wait_exit(Duration::from_secs(10)).is_some());
    let took = wait_for(Duration::from_secs(30), "the orphaned update fails", || {
        let (_, body) = on_b.get("/api/2.0/serving-endpoints/echo");
        body["state"]["config_update"] != "IN_PROGRESS"
    });
    println!("an update whose node was killed failed after {took:?}");
    assert!(took <= LEASE + Duration::from_secs(3), "took {took:?}");
    let (status, endpoint) = on_b.get("/api/2.0/serving-endpoints/echo");
    assert_eq!(status, 200, "{endpoint}");
    assert_eq!(
        endpoint["state"]["config_update"], "UPDATE_FAILED",
        "{endpoint}"
    );
    assert_eq!(endpoint["state"]["ready"], "READY", "{endpoint}");
    assert!(endpoint.get("pending_config").is_none(), "{endpoint}");
    assert_eq!(endpoint["config"]["config_version"], 1, "{endpoint}");
    let why = endpoint["state"]["update_error"].as_str().unwrap_or("");
    assert!(
        why.contains("`node-a`") && why.contains("stopped"),
        "{endpoint}"
    );
    // The old config serves on, and the endpoint takes an update again.
    assert_eq!(query(&on_b, &[]), (200, None));
    let renamed = json!({"served_entities": [
        {"name": "renamed", "entity_name": "echo", "entity_version": "1"}]});
    let (status, body) = on_b.put("/api/2.0/serving-endpoints/echo/config", &renamed);
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(60), "the next update settles", || {
        let (_, body) = on_b.get("/api/2.0/serving-endpoints/echo");
        body["state"]["config_update"] == "NOT_UPDATING"
            && body["config"]["served_entities"][0]["name"] == "renamed"
    });
    std::fs::remove_file(&blob).unwrap();
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
