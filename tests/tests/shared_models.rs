//! Model versions shared across tenants, end to end against the real binary: tenant
//! `acme` publishes an MLP whose graph batches and marks the version shared; tenant
//! `globex` serves it from its own endpoint as `acme/mlp`. Concurrent queries of both
//! tenants (different inputs) run in batches that hold both tenants' rows (the admin's
//! `sandserve_batches_total{cross_tenant="true"}`), and each answer equals the unbatched
//! answer of the caller's own input. Neither tenant sees the other's endpoint, logs,
//! inference table, usage or statistics; globex never sees acme's files. Unsharing stops
//! globex's endpoint at once and refuses new ones; a shared version served by another
//! tenant cannot be deleted. Identical models that are not shared never batch across
//! tenants.
//!
//! The model is `models/test_mlp.onnx` (`scripts/make_mlp_model.py`); the handler is the
//! `nn-proxy` fixture, which knows nothing of batching or tenants.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::handler_package;
use sandserve_tests::server::{Client, TestServer};
use sandserve_tests::{onnx_available, read, repo_root};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const WIDTH: usize = 256;
const CLASSES: usize = 16;
/// A long delay: on a loaded machine most guests run on background threads, so the
/// requests of one burst reach the graph spread out in time.
const BATCHING: &str = "[graphs.batching]\nmax_batch_size = 32\nmax_delay_us = 100000\n";

fn package(name: &str, batching: &str) -> Vec<u8> {
    let path = repo_root().join("models/test_mlp.onnx");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-engines.sh",
        path.display()
    );
    handler_package(
        name,
        "nn-proxy",
        &format!(
            "[limits]\ntimeout_ms = 60000\nmax_concurrency = 64\n\
             [[graphs]]\nname = \"mlp\"\nencoding = \"onnx\"\nfiles = [\"model/mlp.onnx\"]\n\
             {batching}"
        ),
        &[("model/mlp.onnx", read(&path))],
    )
}

/// A V2 request of `rows` rows of values seeded by `seed`, with id `id`.
fn request(id: &str, rows: usize, seed: u64) -> Value {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(99);
    let data: Vec<f32> = (0..rows * WIDTH)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    json!({"id": id, "inputs": [
        {"name": "graph", "shape": [1], "datatype": "BYTES", "data": ["mlp"]},
        {"name": "x", "shape": [rows, WIDTH], "datatype": "FP32", "data": data},
    ]})
}

fn rows_of(i: usize) -> usize {
    1 + i % 2
}

/// `y`'s values, checking the answer's id, name and shape.
fn outputs(body: &Value, id: &str, rows: usize) -> Vec<f32> {
    assert_eq!(body["id"], id, "{body}");
    let y = &body["outputs"][0];
    assert_eq!(y["name"], "y", "{body}");
    assert_eq!(y["shape"], json!([rows, CLASSES]), "{body}");
    y["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn close(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, e)| (g - e).abs() <= 1e-4 * (1.0 + e.abs()))
}

fn wait_ready(client: &Client, endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = client.get(&format!("/api/2.0/serving-endpoints/{endpoint}"));
        assert_eq!(status, 200, "{body}");
        if body["state"]["ready"] == "READY" && body["state"]["config_update"] == "NOT_UPDATING" {
            return;
        }
        assert!(
            body["state"]["config_update"] != "UPDATE_FAILED",
            "endpoint failed: {body}"
        );
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn endpoint_body(name: &str, model: &str) -> Value {
    json!({
        "name": name,
        "config": {"served_entities": [{"name": "mlp", "entity_name": model, "entity_version": "1"}]},
        "ai_gateway": {"inference_table_config": {"enabled": true},
                       "usage_tracking_config": {"enabled": true}},
    })
}

/// One tenant's requests: its client, endpoint and bodies.
struct Side {
    client: Client,
    endpoint: String,
    ids: Vec<String>,
    bodies: Vec<Value>,
}

/// Sends every body of every side at once, one thread each; the answers per side, in order.
fn burst(sides: &[&Side]) -> Vec<Vec<(u16, Value)>> {
    let total: usize = sides.iter().map(|s| s.bodies.len()).sum();
    let start = Arc::new(Barrier::new(total));
    let threads: Vec<Vec<_>> = sides
        .iter()
        .map(|side| {
            side.bodies
                .iter()
                .map(|body| {
                    let (client, start, body) = (side.client.clone(), start.clone(), body.clone());
                    let path = format!("/v2/models/{}/infer", side.endpoint);
                    std::thread::spawn(move || {
                        start.wait();
                        client.post(&path, &body)
                    })
                })
                .collect()
        })
        .collect();
    threads
        .into_iter()
        .map(|side| side.into_iter().map(|t| t.join().unwrap()).collect())
        .collect()
}

/// The admin's `sandserve_batches_total` of image `image` with `cross_tenant` = `cross`.
fn batches(admin: &Client, image: &str, cross: bool) -> u64 {
    admin.batches_total(image, Some(cross))
}

/// The rows of an endpoint's inference table, once it holds at least `at_least`.
fn table_rows(client: &Client, endpoint: &str, at_least: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = client.get(&format!(
            "/api/2.0/serving-endpoints/{endpoint}/inference-table?limit=10000"
        ));
        assert_eq!(status, 200, "{body}");
        let rows = body["rows"].as_array().unwrap().clone();
        if rows.len() >= at_least || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_tenants_batch_together_on_a_shared_version_and_see_only_their_own() {
    if !onnx_available("shared model versions") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    // A debug build's run of this model takes over the default 1 ms that proves an entity
    // fast enough to run inline; the sequential requests below must be able to.
    let server = TestServer::start_logging(
        data.path(),
        &[
            "--tenant-guest-threads",
            "24",
            "--inline-max-run-us",
            "10000",
        ],
        "info,sandserve_host::inference=debug",
    );
    let admin = server.admin();
    let acme = server.client(&admin.tenant_with_token("acme", "CAN_MANAGE"));
    let globex = server.client(&admin.tenant_with_token("globex", "CAN_MANAGE"));

    let (status, body) = acme.upload("mlp", &package("mlp", BATCHING));
    assert_eq!(status, 201, "{body}");
    let (status, body) = acme.upload("plain", &package("plain", ""));
    assert_eq!(status, 201, "{body}");
    let (status, body) = acme.get("/api/2.0/models/mlp/versions/1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shared"], false, "{body}");

    // Not shared yet: globex gets the same 404 as for a model that does not exist.
    let (status, refused) = globex.post(
        "/api/2.0/serving-endpoints",
        &endpoint_body("b-mlp", "acme/mlp"),
    );
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["error_code"], "RESOURCE_DOES_NOT_EXIST");
    let (_, absent) = globex.post(
        "/api/2.0/serving-endpoints",
        &endpoint_body("b-mlp", "acme/nothing"),
    );
    assert_eq!(
        absent["message"]
            .as_str()
            .unwrap()
            .replace("nothing", "mlp"),
        refused["message"].as_str().unwrap(),
        "not shared and absent must read alike"
    );
    // Only the owner (or the admin) shares: globex has no model `mlp`.
    let (status, body) = globex.patch("/api/2.0/models/mlp/versions/1", &json!({"shared": true}));
    assert_eq!(status, 404, "{body}");
    // Bodies and parameters that are not understood are refused, naming the field.
    let (status, body) = acme.patch("/api/2.0/models/mlp/versions/1", &json!({"shared": "yes"}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("shared"),
        "{body}"
    );
    let (status, body) = acme.patch(
        "/api/2.0/models/mlp/versions/1",
        &json!({"shared": true, "public": true}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("public"),
        "{body}"
    );
    let (status, body) = acme.patch(
        "/api/2.0/models/mlp/versions/1?tenant=acme",
        &json!({"shared": true}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("tenant"),
        "{body}"
    );
    let (status, body) = admin.patch("/api/2.0/models/mlp/versions/1", &json!({"shared": true}));
    assert_eq!(status, 400, "{body}");

    // The owner shares it; the record says who and when.
    let (status, body) = acme.patch("/api/2.0/models/mlp/versions/1", &json!({"shared": true}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shared"], true, "{body}");
    let by = body["sharing"]["changed_by"].as_str().unwrap();
    assert!(!by.is_empty() && by != "admin", "{body}");
    assert!(body["sharing"]["changed_at"].as_u64().unwrap() > 1_600_000_000_000);
    let (_, listed) = acme.get("/api/2.0/models/mlp/versions/1");
    assert_eq!(listed["shared"], true, "{listed}");

    let (status, body) = acme.post("/api/2.0/serving-endpoints", &endpoint_body("a-mlp", "mlp"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = globex.post(
        "/api/2.0/serving-endpoints",
        &endpoint_body("b-mlp", "acme/mlp"),
    );
    assert_eq!(status, 200, "{body}");
    wait_ready(&acme, "a-mlp");
    wait_ready(&globex, "b-mlp");

    // Distinct inputs per tenant; the reference answers run one at a time, unbatched.
    let side = |client: &Client, endpoint: &str, tenant: &str, seed: u64| {
        let ids: Vec<String> = (0..12).map(|i| format!("{tenant}-{i}")).collect();
        let bodies = ids
            .iter()
            .enumerate()
            .map(|(i, id)| request(id, rows_of(i), seed + i as u64))
            .collect();
        Side {
            client: client.clone(),
            endpoint: endpoint.into(),
            ids,
            bodies,
        }
    };
    let a = side(&acme, "a-mlp", "acme", 0);
    let b = side(&globex, "b-mlp", "globex", 1000);
    let reference = |s: &Side| -> Vec<Vec<f32>> {
        s.bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let (status, reply) = acme.post("/v2/models/plain/versions/1/infer", body);
                assert_eq!(status, 200, "{reply}");
                outputs(&reply, &s.ids[i], rows_of(i))
            })
            .collect()
    };
    let (a_expected, b_expected) = (reference(&a), reference(&b));
    assert!(!close(&a_expected[0], &b_expected[0]), "inputs must differ");

    let mut rounds = 0;
    while batches(&admin, "acme/mlp@1", true) == 0 {
        rounds += 1;
        if rounds > 5 {
            let log = server.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("batch of")).collect();
            panic!("no batch mixed the two tenants in 5 rounds; batches: {lines:#?}");
        }
        let answers = burst(&[&a, &b]);
        for ((s, expected), answers) in [(&a, &a_expected), (&b, &b_expected)].iter().zip(&answers)
        {
            for (i, (status, reply)) in answers.iter().enumerate() {
                assert_eq!(*status, 200, "{} request {i}: {reply}", s.endpoint);
                let got = outputs(reply, &s.ids[i], rows_of(i));
                assert!(
                    close(&got, &expected[i]),
                    "{} request {i}: its answer is not the answer of its own input",
                    s.endpoint
                );
            }
        }
    }
    let cross = batches(&admin, "acme/mlp@1", true);
    println!("cross-tenant batches after {rounds} round(s): {cross}");

    // Statistics are each tenant's own: the owner's endpoint counts only its requests.
    let sent = 12 * rounds as u64;
    for (client, endpoint) in [(&acme, "a-mlp"), (&globex, "b-mlp")] {
        let (status, stats) = client.get(&format!("/v2/models/{endpoint}/stats"));
        assert_eq!(status, 200, "{stats}");
        let success = &stats["model_stats"][0]["inference_stats"]["success"]["count"];
        assert_eq!(success.as_u64(), Some(sent), "{endpoint}: {stats}");
        // Its batch statistics count its own rows only, though batches mixed both tenants.
        let own_rows = rounds as u64 * (0..12).map(|i| rows_of(i) as u64).sum::<u64>();
        let counted: u64 = stats["model_stats"][0]["batch_stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap()
            })
            .sum();
        assert_eq!(counted, own_rows, "{endpoint}: {stats}");
    }
    // Inference tables hold only the tenant's own requests (inputs and outputs).
    for (client, endpoint, mine, theirs) in [
        (&acme, "a-mlp", "\"acme-", "\"globex-"),
        (&globex, "b-mlp", "\"globex-", "\"acme-"),
    ] {
        let rows = table_rows(client, endpoint, sent as usize);
        assert_eq!(rows.len(), sent as usize, "{endpoint}");
        for row in &rows {
            let request = row["request"].as_str().unwrap();
            let response = row["response"].as_str().unwrap();
            assert!(request.contains(mine), "{endpoint}: {request:.80}");
            assert!(!request.contains(theirs) && !response.contains(theirs));
        }
    }
    // Usage: each tenant reads its own rows only, and not the other's at all.
    for (client, tenant, endpoint, other) in [
        (&acme, "acme", "a-mlp", "globex"),
        (&globex, "globex", "b-mlp", "acme"),
    ] {
        let (status, usage) = client.get("/api/2.0/usage");
        assert_eq!(status, 200, "{usage}");
        let rows = usage["usage"].as_array().unwrap();
        assert!(!rows.is_empty(), "{usage}");
        assert!(rows.iter().all(|r| r["tenant"] == tenant), "{usage}");
        let requests: u64 = rows
            .iter()
            .filter(|r| r["endpoint"] == endpoint)
            .map(|r| r["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(requests, sent, "{tenant}: {usage}");
        let (status, _) = client.get(&format!("/api/2.0/usage?tenant={other}"));
        assert_eq!(status, 403);
    }
    // Nothing of the other tenant's is there: endpoints, logs, tables, metrics, files.
    for (client, endpoint) in [(&globex, "a-mlp"), (&acme, "b-mlp")] {
        for path in [
            format!("/api/2.0/serving-endpoints/{endpoint}"),
            format!("/api/2.0/serving-endpoints/{endpoint}/served-models/mlp/logs"),
            format!("/api/2.0/serving-endpoints/{endpoint}/served-models/mlp/build-logs"),
            format!("/api/2.0/serving-endpoints/{endpoint}/inference-table"),
            format!("/api/2.0/serving-endpoints/{endpoint}/metrics"),
            format!("/v2/models/{endpoint}/stats"),
        ] {
            let (status, body) = client.get(&path);
            assert_eq!(status, 404, "{path}: {body}");
        }
        let (_, list) = client.get("/api/2.0/serving-endpoints");
        let names: Vec<&str> = list["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(!names.contains(&endpoint), "{list}");
    }
    let (_, models) = globex.get("/api/2.0/models");
    assert_eq!(models["models"], json!([]), "{models}");
    for path in [
        "/api/2.0/models/mlp/versions",
        "/api/2.0/models/mlp/versions/1",
    ] {
        assert_eq!(globex.get(path).0, 404, "{path}");
    }
    assert_eq!(globex.delete("/api/2.0/models/mlp/versions/1").0, 404);
    // globex's metrics are its own endpoint's; the batch counter is the admin's alone.
    let metrics = String::from_utf8(
        globex
            .get_raw("/api/2.0/serving-endpoints/b-mlp/metrics", &[])
            .body,
    )
    .unwrap();
    assert!(metrics.contains("endpoint=\"b-mlp\""), "{metrics}");
    assert!(!metrics.contains("a-mlp") && !metrics.contains("sandserve_batches_total"));

    // globex's requests one at a time on an otherwise idle server (those of an entity that
    // has proven fast run inline on an async worker, off the guest threads): the batch
    // statistics still count them as globex's runs, none as the owner's.
    let batch_rows = |client: &Client, endpoint: &str| -> u64 {
        let (status, stats) = client.get(&format!("/v2/models/{endpoint}/stats"));
        assert_eq!(status, 200, "{stats}");
        stats["model_stats"][0]["batch_stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap()
            })
            .sum()
    };
    let (acme_rows, globex_rows) = (batch_rows(&acme, "a-mlp"), batch_rows(&globex, "b-mlp"));
    let mut extra = 0;
    for i in 0..24 {
        let (status, body) = globex.post("/v2/models/b-mlp/infer", &b.bodies[i % 12]);
        assert_eq!(status, 200, "{body}");
        extra += rows_of(i % 12) as u64;
    }
    assert_eq!(
        batch_rows(&acme, "a-mlp"),
        acme_rows,
        "globex's runs went to acme"
    );
    assert_eq!(batch_rows(&globex, "b-mlp"), globex_rows + extra);

    // A shared version another tenant serves cannot be deleted; the answer names no one.
    let (status, body) = acme.delete("/api/2.0/models/mlp/versions/1");
    assert_eq!(status, 409, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("unshare"), "{message}");
    assert!(
        !message.contains("globex") && !message.contains("b-mlp"),
        "{message}"
    );

    // Unsharing stops globex's endpoint at once; acme's serves on.
    let (status, body) = acme.patch("/api/2.0/models/mlp/versions/1", &json!({"shared": false}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shared"], false, "{body}");
    let (status, endpoint) = globex.get("/api/2.0/serving-endpoints/b-mlp");
    assert_eq!(status, 200, "{endpoint}");
    assert_eq!(endpoint["state"]["ready"], "NOT_READY", "{endpoint}");
    let why = endpoint["state"]["update_error"].as_str().unwrap();
    assert!(why.contains("no longer shared"), "{why}");
    let (status, body) = globex.post("/v2/models/b-mlp/infer", &b.bodies[0]);
    assert_eq!(status, 503, "{body}");
    let (status, body) = acme.post("/v2/models/a-mlp/infer", &a.bodies[0]);
    assert_eq!(status, 200, "{body}");
    // ... and no new endpoint or config of globex's may serve it.
    let (status, body) = globex.post(
        "/api/2.0/serving-endpoints",
        &endpoint_body("b-mlp2", "acme/mlp"),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = globex.put(
        "/api/2.0/serving-endpoints/b-mlp/config",
        &json!({"served_entities": [{"entity_name": "acme/mlp", "entity_version": "1"}]}),
    );
    assert_eq!(status, 404, "{body}");
    // Unshared, the owner deletes it once its own endpoint no longer serves it.
    assert_eq!(acme.delete("/api/2.0/serving-endpoints/a-mlp").0, 200);
    let (status, body) = acme.delete("/api/2.0/models/mlp/versions/1");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn identical_models_of_two_tenants_never_batch_together() {
    if !onnx_available("unshared identical models") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &["--tenant-guest-threads", "24"]);
    let admin = server.admin();
    let acme = server.client(&admin.tenant_with_token("acme", "CAN_MANAGE"));
    let globex = server.client(&admin.tenant_with_token("globex", "CAN_MANAGE"));
    // The same package, byte for byte, uploaded by both; neither shares it.
    let same = package("mlp", BATCHING);
    for client in [&acme, &globex] {
        let (status, body) = client.upload("mlp", &same);
        assert_eq!(status, 201, "{body}");
        let (status, body) = client.post("/api/2.0/serving-endpoints", &endpoint_body("ep", "mlp"));
        assert_eq!(status, 200, "{body}");
        wait_ready(client, "ep");
    }
    // globex cannot reach acme's copy either.
    let (status, body) = globex.post(
        "/api/2.0/serving-endpoints",
        &endpoint_body("other", "acme/mlp"),
    );
    assert_eq!(status, 404, "{body}");
    let side = |client: &Client, tenant: &str| Side {
        client: client.clone(),
        endpoint: "ep".into(),
        ids: (0..12).map(|i| format!("{tenant}-{i}")).collect(),
        bodies: (0..12)
            .map(|i| request(&format!("{tenant}-{i}"), rows_of(i), i as u64))
            .collect(),
    };
    let (a, b) = (side(&acme, "acme"), side(&globex, "globex"));
    for _ in 0..2 {
        for (s, answers) in [&a, &b].iter().zip(burst(&[&a, &b])) {
            for (i, (status, reply)) in answers.iter().enumerate() {
                assert_eq!(*status, 200, "{reply}");
                outputs(reply, &s.ids[i], rows_of(i));
            }
        }
    }
    // Each tenant's requests batched among themselves, never with the other's.
    let own = batches(&admin, "acme/mlp@1", false) + batches(&admin, "globex/mlp@1", false);
    assert!(own > 0, "no batch ran at all");
    assert_eq!(batches(&admin, "acme/mlp@1", true), 0);
    assert_eq!(batches(&admin, "globex/mlp@1", true), 0);
}
