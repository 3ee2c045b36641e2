//! Cluster mode, owners and their failures: three real `sandserve` nodes share a real
//! PostgreSQL (metadata, leases) and a real S3 server (SeaweedFS, the blobs), each endpoint
//! config owned by one node (`--owners 1`). A model uploaded on one node is served through
//! every node; its graph loads on its owner only; when the owner is killed (SIGKILL) the
//! other nodes keep answering (the fallback, then the next owner once the lease runs out);
//! when the next owner is frozen (SIGSTOP) its queries fail after the lease, a bounded
//! number, and move on; once it is thawed (SIGCONT) every node agrees on one owner again.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_host::cluster::{endpoint_key, NodeInfo, Placement};
use sandserve_tests::cluster::{start_on_s3, wait_for};
use sandserve_tests::packages::example_package;
use sandserve_tests::postgres::Postgres;
use sandserve_tests::s3::S3Server;
use sandserve_tests::server::{Client, TestServer};
use sandserve_tests::{onnx_available, read_f32, read_i64, repo_root};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// The node leases' length (`registry/postgres/nodes.rs`).
const LEASE: Duration = Duration::from_secs(5);

struct Node {
    id: &'static str,
    server: TestServer,
    _data: tempfile::TempDir,
}

fn start_node(pg: &str, s3: &S3Server, id: &'static str) -> Node {
    let data = tempfile::tempdir().unwrap();
    let server = start_on_s3(data.path(), pg, s3, id);
    Node {
        id,
        server,
        _data: data,
    }
}

fn signal(node: &Node, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &node.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

fn live_ids(node: &Node) -> Vec<String> {
    let (status, body) = node.server.admin().get("/api/2.0/cluster/nodes");
    assert_eq!(status, 200, "{body}");
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

/// The owner of `key` among the nodes with these ids.
fn owner_of(key: &str, ids: &[&str]) -> String {
    let nodes: Vec<NodeInfo> = ids
        .iter()
        .map(|id| NodeInfo {
            id: id.to_string(),
            url: String::new(),
        })
        .collect();
    Placement::new(1).owners(key, &nodes)[0].id.clone()
}

/// Graphs this node has loaded into an engine since it started (`/metrics`).
fn graph_loads(node: &Node) -> u64 {
    let reply = node.server.admin().get_raw("/metrics", &[]);
    assert_eq!(reply.status, 200);
    String::from_utf8_lossy(&reply.body)
        .lines()
        .filter(|l| l.starts_with("sandserve_graph_loads_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Classifies the first test digit through endpoint `classify`: the status and the node
/// that answered (`x-sandserve-served-by` when forwarded, else the node asked).
fn classify(client: &Client, asked: &str) -> (u16, String) {
    let dir = repo_root().join("examples/digits/model");
    let pixels: Vec<f32> = read_f32(&dir.join("test_inputs.f32"))[..64]
        .iter()
        .map(|v| v * 16.0)
        .collect();
    let body = json!({"inputs": [{"name": "images", "shape": [1, 64], "datatype": "FP32", "data": pixels}]});
    let reply = client.post_raw(
        "/v2/models/classify/infer",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    if reply.status == 200 {
        let answer = reply.json();
        let expected = read_i64(&dir.join("expected_labels.i64"))[0];
        assert_eq!(answer["outputs"][0]["data"][0], expected, "{answer}");
    } else {
        let answer = reply.json();
        assert!(
            answer["error_code"].is_string(),
            "{} {answer}",
            reply.status
        );
        println!("{}: {answer}", reply.status);
    }
    let by = reply.header("x-sandserve-served-by").unwrap_or(asked);
    (reply.status, by.to_string())
}

#[test]
fn owners_alone_load_and_traffic_survives_a_killed_and_a_frozen_owner() {
    if !onnx_available("cluster failover") {
        return;
    }
    let pg = Postgres::start();
    let url = pg.create_database("failover");
    let s3 = S3Server::start("models");
    let mut nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|id| start_node(&url, &s3, id))
        .collect();
    for node in &nodes {
        wait_for(Duration::from_secs(10), "three live nodes", || {
            live_ids(node) == ["node-a", "node-b", "node-c"]
        });
        let (status, body) = node.server.admin().get("/readyz");
        assert_eq!((status, &body), (200, &json!({"status": "ready"})));
    }

    // The model is uploaded and the endpoint created on the owner (an upload loads the
    // graphs to check them, and so does the node that accepts a config): no other node
    // has the model's blobs, which reach them through the bucket.
    let key = endpoint_key("acme", "classify", 1);
    let first = owner_of(&key, &["node-a", "node-b", "node-c"]);
    let find = |id: &str| nodes.iter().position(|n| n.id == id).unwrap();
    let owner = find(&first);
    let token = nodes[0]
        .server
        .admin()
        .tenant_with_token("acme", "CAN_MANAGE");
    let on = |node: &Node| node.server.client(&token);
    let (status, body) = on(&nodes[owner]).upload("digits", &example_package("digits"));
    assert_eq!(status, 201, "{body}");
    let create = json!({"name": "classify", "config": {"served_entities": [
        {"name": "digits-1", "entity_name": "digits", "entity_version": "1"}]}});
    let (status, body) = on(&nodes[owner]).post("/api/2.0/serving-endpoints", &create);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pending_config"]["config_version"], 1, "{body}");
    wait_for(Duration::from_secs(60), "endpoint ready", || {
        let (_, body) = on(&nodes[owner]).get("/api/2.0/serving-endpoints/classify");
        body["state"]["ready"] == "READY"
    });

    // Queries through every node are answered by the owner; only the owner loaded the graph.
    for node in &nodes {
        for _ in 0..5 {
            assert_eq!(classify(&on(node), node.id), (200, first.clone()));
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let loads = graph_loads(node);
        if i == owner {
            assert!(loads >= 1, "the owner loaded the graph");
        } else {
            assert_eq!(loads, 0, "{} does not own the endpoint", node.id);
        }
    }

    // SIGKILL of the owner: every query still answers (the asking node serves it while the
    // owner's lease runs; then the next owner does).
    let rest: Vec<&str> = nodes
        .iter()
        .filter(|n| n.id != first)
        .map(|n| n.id)
        .collect();
    let second = owner_of(&key, &rest);
    let asker = find(rest.iter().find(|id| **id != second).unwrap());
    signal(&nodes[owner], "KILL");
    let mut answered = 0;
    let moved = wait_for(LEASE * 4, "traffic moves to the next owner", || {
        let (status, by) = classify(&on(&nodes[asker]), nodes[asker].id);
        assert_eq!(status, 200, "a query failed after the owner was killed");
        answered += 1;
        by == second
    });
    println!("SIGKILL: {answered} queries all answered; the next owner took over after {moved:?}");
    wait_for(
        Duration::from_secs(10),
        "the next owner loaded the graph",
        || graph_loads(&nodes[find(&second)]) >= 1,
    );
    let dead = nodes.remove(owner);
    drop(dead);
    let second_at = nodes.iter().position(|n| n.id == second).unwrap();
    let asker = 1 - second_at;

    // SIGSTOP of the next owner: its queries fail with 503 once its lease runs out (not
    // after the forwarding timeout), a bounded number; then the asking node serves.
    signal(&nodes[second_at], "STOP");
    let stopped_at = Instant::now();
    let mut failed = 0;
    let mut sent = 0;
    wait_for(LEASE * 6, "queries served again after the freeze", || {
        let (status, by) = classify(&on(&nodes[asker]), nodes[asker].id);
        sent += 1;
        if status == 503 {
            failed += 1;
            return false;
        }
        assert_eq!(status, 200);
        by == nodes[asker].id
    });
    println!(
        "SIGSTOP: {failed} of {sent} queries failed (503); served again after {:?}",
        stopped_at.elapsed()
    );
    assert!(failed <= 2, "{failed} queries failed during the freeze");
    assert_eq!(live_ids(&nodes[asker]), [nodes[asker].id]);

    // SIGCONT: the thawed node renews its lease, and every node agrees again that it owns
    // the endpoint (its rendezvous weight is the higher): queries go to it, none fails.
    signal(&nodes[second_at], "CONT");
    let both: Vec<String> = {
        let mut ids = vec![nodes[0].id.to_string(), nodes[1].id.to_string()];
        ids.sort();
        ids
    };
    for node in &nodes {
        wait_for(LEASE * 2, "both nodes live again", || {
            live_ids(node) == both
        });
    }
    for node in &nodes {
        for _ in 0..5 {
            assert_eq!(classify(&on(node), node.id), (200, second.clone()));
        }
    }
    let (status, body) = nodes[second_at].server.admin().get("/readyz");
    assert_eq!((status, &body), (200, &json!({"status": "ready"})));
}
