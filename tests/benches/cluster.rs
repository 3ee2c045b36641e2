//! Cluster mode: what forwarding costs, and how long a new node takes to be ready.
//!
//! **Forwarding.** Three nodes on one real PostgreSQL and one real S3 server (SeaweedFS),
//! each endpoint config owned by one node (`--owners 1`), and a single node on sled for
//! the baseline, all on this machine. The same endpoints (echo, and the digits classifier)
//! are queried by closed-loop clients, in alternating rounds of one run:
//! - `single`: the sled node (no cluster at all);
//! - `owner`: the endpoint's owner directly (served where it arrives);
//! - `forwarded`: a node that does not own it (every query takes one hop);
//! - `spread`: the clients split evenly over the three nodes (two queries in three hop).
//!
//! Three nodes on one machine share its cores, so this measures the hop's cost, not what
//! three machines would add.
//!
//! **Cold start.** 100 model versions (distinct packages of the digits classifier), each
//! behind its own endpoint; then the three nodes stop and a new node starts with an empty
//! data folder: it owns all 100, fetches their blobs from the bucket, compiles the handler
//! and loads 100 graphs. Measured from its process start to `/readyz` 200.
//!
//! Run: `scripts/bench-http.sh`, or after a release build `cargo bench -p sandserve-tests
//! --bench cluster`. `SANDSERVE_BENCH_CONCURRENCY` (default 32), `SANDSERVE_BENCH_ROUNDS`
//! (default 4), `SANDSERVE_BENCH_SECS` (default 1), `SANDSERVE_BENCH_COLD_VERSIONS`
//! (default 100). Results go in docs/benchmarks.md with the load average it prints.

use sandserve_host::cluster::{endpoint_key, NodeInfo, Placement};
use sandserve_tests::cluster::{start_on_s3, wait_for};
use sandserve_tests::load::{env_number, load, load_together, Samples, Stats};
use sandserve_tests::packages::{example_package, Tar};
use sandserve_tests::postgres::Postgres;
use sandserve_tests::s3::S3Server;
use sandserve_tests::server::{Client, TestServer};
use sandserve_tests::{guest_wasm, read_f32, repo_root};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn ready(client: &Client, endpoint: &str) -> bool {
    let (status, body) = client.get(&format!("/api/2.0/serving-endpoints/{endpoint}"));
    assert_eq!(status, 200, "{body}");
    body["state"]["ready"] == "READY" && body["state"]["config_update"] == "NOT_UPDATING"
}

fn owner_of(key: &str) -> usize {
    let nodes: Vec<NodeInfo> = IDS
        .iter()
        .map(|id| NodeInfo {
            id: id.to_string(),
            url: String::new(),
        })
        .collect();
    let owner = &Placement::new(1).owners(key, &nodes)[0].id;
    IDS.iter().position(|id| id == owner).expect("an owner")
}

/// Creates endpoint `name` serving `model` version 1 through `client`, and waits for it.
fn create(client: &Client, name: &str, model: &str) {
    let (status, body) = client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": name, "config": {"served_entities": [
            {"entity_name": model, "entity_version": "1", "max_concurrency": 64}]}}),
    );
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(120), "endpoint ready", || {
        ready(client, name)
    });
}

/// Version `revision` of the digits classifier: the example's files, with a description
/// that makes each version's archive (and blob) distinct.
fn digits_revision(revision: usize) -> Vec<u8> {
    let dir = repo_root().join("examples/digits");
    let manifest = std::fs::read_to_string(dir.join("sandserve.toml"))
        .expect("manifest")
        .replacen("name = \"digits\"", "name = \"many\"", 1)
        .replacen(
            "description = \"",
            &format!("description = \"Revision {revision}. "),
            1,
        );
    Tar::default()
        .file("sandserve.toml", manifest.as_bytes())
        .file("digits.wasm", &guest_wasm("digits"))
        .file(
            "model/digits.onnx",
            &std::fs::read(dir.join("model/digits.onnx")).expect("digits model"),
        )
        .gzip()
}

fn per_second(samples: Samples) -> Stats {
    let stats = samples.stats();
    assert_eq!(stats.errors, 0, "requests failed");
    stats
}

fn main() {
    let concurrency = env_number("SANDSERVE_BENCH_CONCURRENCY", 32) as usize;
    let rounds = env_number("SANDSERVE_BENCH_ROUNDS", 4);
    let cold_versions = env_number("SANDSERVE_BENCH_COLD_VERSIONS", 100) as usize;
    let pg = Postgres::start();
    let url = pg.create_database("bench");
    let s3 = S3Server::start("bench");
    let single_data = tempfile::tempdir().expect("temp dir");
    let single = TestServer::start(single_data.path(), &[]);
    let datas: Vec<tempfile::TempDir> = IDS
        .iter()
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let mut nodes: Vec<TestServer> = IDS
        .iter()
        .zip(&datas)
        .map(|(id, data)| start_on_s3(data.path(), &url, &s3, id))
        .collect();
    for node in &nodes {
        wait_for(Duration::from_secs(10), "three live nodes", || {
            let (_, body) = node.admin().get("/api/2.0/cluster/nodes");
            body["nodes"].as_array().map(Vec::len) == Some(3)
        });
    }
    let single_token = single.admin().tenant_with_token("acme", "CAN_MANAGE");
    let token = nodes[0].admin().tenant_with_token("acme", "CAN_MANAGE");

    let pixels: Vec<f32> = read_f32(&repo_root().join("examples/digits/model/test_inputs.f32"))
        [..64]
        .iter()
        .map(|v| v * 16.0)
        .collect();
    let cases: [(&str, &str, Value); 2] = [
        ("echo", "echo", json!({"inputs": {"x": [1.0, 2.0, 3.0]}})),
        (
            "digits",
            "digits",
            json!({"inputs": [{"name": "images", "shape": [1, 64], "datatype": "FP32", "data": pixels}]}),
        ),
    ];
    println!(
        "| endpoint | clients | single node (sled) req/s | owner | forwarded | spread over 3 | forwarded / owner | p50 single / owner / forwarded (us) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (endpoint, model, body) in &cases {
        let key = endpoint_key("acme", endpoint, 1);
        let owner = owner_of(&key);
        let other = (owner + 1) % 3;
        let on = |node: &TestServer| node.client(&token);
        assert_eq!(
            on(&nodes[owner]).upload(model, &example_package(model)).0,
            201
        );
        create(&on(&nodes[owner]), endpoint, model);
        let single_client = single.client(&single_token);
        assert_eq!(single_client.upload(model, &example_package(model)).0, 201);
        create(&single_client, endpoint, model);
        let path = if *endpoint == "digits" {
            format!("/v2/models/{endpoint}/infer")
        } else {
            format!("/serving-endpoints/{endpoint}/invocations")
        };
        let url_of = |node: &TestServer| format!("{}{path}", node.url);
        let spread: Vec<(String, String)> =
            nodes.iter().map(|n| (url_of(n), token.clone())).collect();
        let mut results: [Samples; 4] = Default::default();
        for round in 0..rounds {
            let mut order = [0, 1, 2, 3];
            if round % 2 == 1 {
                order.reverse();
            }
            for which in order {
                let samples = match which {
                    0 => load(&url_of(&single), &single_token, body, concurrency),
                    1 => load(&url_of(&nodes[owner]), &token, body, concurrency),
                    2 => load(&url_of(&nodes[other]), &token, body, concurrency),
                    _ => load_together(&spread, body, concurrency / 3),
                };
                results[which].add(samples);
            }
        }
        let [single_s, owner_s, forwarded_s, spread_s] = results.map(per_second);
        println!(
            "| {endpoint} | {concurrency} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.0} / {:.0} / {:.0} |",
            single_s.per_second,
            owner_s.per_second,
            forwarded_s.per_second,
            spread_s.per_second,
            forwarded_s.per_second / owner_s.per_second,
            single_s.p50.as_secs_f64() * 1e6,
            owner_s.p50.as_secs_f64() * 1e6,
            forwarded_s.p50.as_secs_f64() * 1e6,
        );
    }
    println!("load average after the forwarding runs: {}", load_average());
    drop(single);

    // Cold start: 100 distinct versions, each behind an endpoint, then a new node alone.
    let started = Instant::now();
    let client = nodes[0].client(&token);
    for revision in 0..cold_versions {
        let (status, reply) = client.upload("many", &digits_revision(revision));
        assert_eq!(status, 201, "{reply}");
        let (status, reply) = client.post(
            "/api/2.0/serving-endpoints",
            &json!({"name": format!("many-{revision}"), "config": {"served_entities": [
                {"entity_name": "many", "entity_version": (revision + 1).to_string()}]}}),
        );
        assert_eq!(status, 200, "{reply}");
    }
    for revision in 0..cold_versions {
        wait_for(Duration::from_secs(300), "endpoint ready", || {
            ready(&client, &format!("many-{revision}"))
        });
    }
    println!(
        "{cold_versions} versions uploaded and their endpoints ready in {:?}",
        started.elapsed()
    );
    for node in nodes.drain(..) {
        node.stop();
    }
    let fresh = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let node = start_on_s3(fresh.path(), &url, &s3, "node-new");
    let listening = started.elapsed();
    wait_for(Duration::from_secs(600), "the new node ready", || {
        node.admin().get("/readyz").0 == 200
    });
    let ready_after = started.elapsed();
    // Ready means loaded: every endpoint answers at once.
    let probe = node.client(&token);
    let answered = Instant::now();
    for revision in 0..cold_versions {
        let reply = probe.post_raw(
            &format!("/v2/models/many-{revision}/infer"),
            &[("content-type", "application/json")],
            cases[1].2.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 200, "many-{revision}: {}", reply.json());
    }
    println!(
        "cold start of a new node owning {cold_versions} versions: listening after {listening:?}, ready after {ready_after:?}; then one query to each took {:?} in all",
        answered.elapsed()
    );
    println!("load average: {}", load_average());
}
