//! Serving endpoints end to end over HTTP against the real binary: traffic split, the four
//! Databricks query formats and KServe V2 agreeing, zero-downtime config updates under load,
//! failed updates, restart, fallback, overload, every error class's status and code, and
//! the memory a large query or answer costs the server (a small multiple of its size).

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::{example_package, handler_package};
use sandserve_tests::server::{reason, Client, Reply, TenantServer, TestServer};
use sandserve_tests::{onnx_available, read, read_f32, repo_root};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn digit_rows(n: usize) -> Vec<Vec<f32>> {
    let pixels = read_f32(&repo_root().join("examples/digits/model/test_inputs.f32"));
    (0..n)
        .map(|i| {
            pixels[i * 64..(i + 1) * 64]
                .iter()
                .map(|v| v * 16.0)
                .collect()
        })
        .collect()
}

fn entity(model: &str, version: u64) -> Value {
    json!({"name": format!("{model}-{version}"), "entity_name": model, "entity_version": version.to_string()})
}

fn wait_ready(client: &Client, endpoint: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = client.get(&format!("/api/2.0/serving-endpoints/{endpoint}"));
        assert_eq!(status, 200, "{body}");
        if body["state"]["config_update"] != "IN_PROGRESS" && body["state"]["ready"] == "READY" {
            return body;
        }
        if body["state"]["config_update"] == "UPDATE_FAILED" && body["state"]["ready"] != "READY" {
            panic!("endpoint failed: {body}");
        }
        assert!(
            Instant::now() < deadline,
            "endpoint never became ready: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_update_done(client: &Client, endpoint: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = client.get(&format!("/api/2.0/serving-endpoints/{endpoint}"));
        if body["state"]["config_update"] != "IN_PROGRESS" {
            return body;
        }
        assert!(Instant::now() < deadline, "update never finished: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn create(client: &Client, body: Value) -> Value {
    let (status, reply) = client.post("/api/2.0/serving-endpoints", &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["state"]["config_update"], "IN_PROGRESS");
    wait_ready(client, body["name"].as_str().unwrap())
}

/// Sends a query and returns (status, body, served-model-name).
fn query(
    client: &Client,
    server: &TestServer,
    endpoint: &str,
    body: &Value,
    token: &str,
) -> (u16, Value, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!(
            "{}/serving-endpoints/{endpoint}/invocations",
            server.url
        ))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(body)
        .expect("query");
    let _ = client;
    let served = response
        .headers()
        .get("served-model-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let status = response.status().as_u16();
    let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
    (status, body, served)
}

/// The benchmark CNN behind the `nn-proxy` handler, as model `cnn`.
fn cnn_package() -> Vec<u8> {
    handler_package(
        "cnn",
        "nn-proxy",
        "[[graphs]]\nname = \"bench\"\nencoding = \"onnx\"\nfiles = [\"model/bench.onnx\"]\n",
        &[(
            "model/bench.onnx",
            read(&repo_root().join("models/bench_cnn.onnx")),
        )],
    )
}

type Setup = TenantServer;

fn setup(extra_args: &[&str]) -> Setup {
    TenantServer::start(extra_args)
}

#[test]
fn split_traffic_and_every_query_format_agree() {
    if !onnx_available("endpoint formats") {
        return;
    }
    let s = setup(&[]);
    let digits = example_package("digits");
    assert_eq!(s.client.upload("digits", &digits).0, 201);
    assert_eq!(s.client.upload("digits", &digits).0, 201);
    create(
        &s.client,
        json!({
            "name": "digits",
            "config": {
                "served_entities": [entity("digits", 1), entity("digits", 2)],
                "traffic_config": {"routes": [
                    {"served_entity_name": "digits-1", "traffic_percentage": 80},
                    {"served_entity_name": "digits-2", "traffic_percentage": 20},
                ]},
            },
        }),
    );

    let rows = digit_rows(3);
    let columns: Vec<String> = (0..64).map(|i| format!("pixel_{i}")).collect();
    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Object(
                columns
                    .iter()
                    .cloned()
                    .zip(r.iter().map(|v| json!(v)))
                    .collect(),
            )
        })
        .collect();
    let bodies = [
        (
            "dataframe_split",
            json!({"dataframe_split": {"columns": columns, "data": rows}}),
        ),
        ("dataframe_records", json!({"dataframe_records": records})),
        ("instances", json!({"instances": rows})),
        ("inputs", json!({"inputs": {"images": rows}})),
    ];
    let mut answers = Vec::new();
    for (format, body) in &bodies {
        let (status, reply, served) = query(&s.client, &s.server, "digits", body, &s.token);
        assert_eq!(status, 200, "{format}: {reply}");
        assert!(
            served == "digits-1" || served == "digits-2",
            "{format}: served by `{served}`"
        );
        let predictions = reply["predictions"]
            .as_array()
            .expect("predictions list")
            .clone();
        assert_eq!(predictions.len(), 3, "{format}: {reply}");
        answers.push((format, predictions));
    }
    for (format, predictions) in &answers[1..] {
        assert_eq!(
            predictions, &answers[0].1,
            "{format} differs from dataframe_split"
        );
    }
    // KServe V2 gives the same labels and probabilities.
    let (status, v2) = s.client.post(
        "/v2/models/digits/infer",
        &json!({"inputs": [{"name": "images", "shape": [3, 64], "datatype": "FP32", "data": rows}]}),
    );
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["model_name"], "digits");
    for (i, prediction) in answers[0].1.iter().enumerate() {
        assert_eq!(prediction["label"], v2["outputs"][0]["data"][i]);
        let p = prediction["probabilities"].as_array().unwrap();
        for (j, value) in p.iter().enumerate() {
            let other = &v2["outputs"][1]["data"][i * 10 + j];
            assert!((value.as_f64().unwrap() - other.as_f64().unwrap()).abs() < 1e-6);
        }
    }
    let (status, meta) = s.client.get("/v2/models/digits");
    assert_eq!(status, 200);
    assert_eq!(meta["inputs"][0]["name"], "images");
    assert_eq!(s.client.get("/v2/models/digits/ready").0, 200);
    let (status, pinned) = s.client.post(
        "/v2/models/digits/versions/2/infer",
        &json!({"inputs": [{"name": "images", "shape": [1, 64], "datatype": "FP32", "data": rows[0]}]}),
    );
    assert_eq!(
        (status, pinned["model_version"].as_str()),
        (200, Some("2")),
        "{pinned}"
    );

    // The split over 1,000 requests.
    let one = json!({"instances": [rows[0]]});
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..1000 {
        let (status, _, served) = query(&s.client, &s.server, "digits", &one, &s.token);
        assert_eq!(status, 200);
        *counts.entry(served).or_default() += 1;
    }
    let first = counts.get("digits-1").copied().unwrap_or(0);
    println!("traffic split over 1000 requests: {counts:?}");
    assert!(
        (750..=850).contains(&first),
        "80/20 split came out as {counts:?}"
    );

    // A served entity queried directly bypasses the split.
    for _ in 0..20 {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent
            .post(format!(
                "{}/serving-endpoints/digits/served-models/digits-2/invocations",
                s.server.url
            ))
            .header("Authorization", &format!("Bearer {}", s.token))
            .send_json(&one)
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers().get("served-model-name").unwrap(),
            "digits-2"
        );
    }
    // An image version an endpoint serves cannot be deleted.
    let (status, body) = s.client.delete("/api/2.0/models/digits/versions/1");
    assert_eq!(
        (status, body["error_code"].as_str()),
        (409, Some("RESOURCE_CONFLICT"))
    );
}

#[test]
fn a_config_update_under_load_loses_no_request_and_a_failed_one_keeps_serving() {
    if !onnx_available("endpoint update") {
        return;
    }
    let s = setup(&[]);
    let digits = example_package("digits");
    for _ in 0..3 {
        assert_eq!(s.client.upload("digits", &digits).0, 201);
    }
    create(
        &s.client,
        json!({"name": "live", "config": {"served_entities": [entity("digits", 1)]}}),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let body = json!({"instances": [digit_rows(1)[0]]});
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, total, seen) =
                (stop.clone(), failures.clone(), total.clone(), seen.clone());
            let (url, token, body) = (s.server.url.clone(), s.token.clone(), body.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                while !stop.load(Ordering::SeqCst) {
                    let response = agent
                        .post(format!("{url}/serving-endpoints/live/invocations"))
                        .header("Authorization", &format!("Bearer {token}"))
                        .send_json(&body);
                    total.fetch_add(1, Ordering::SeqCst);
                    match response {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let served = r
                                .headers()
                                .get("served-model-name")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            *seen.lock().unwrap().entry(served).or_default() += 1;
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, reply) = s.client.put(
        "/api/2.0/serving-endpoints/live/config",
        &json!({"served_entities": [entity("digits", 2)]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["state"]["config_update"], "IN_PROGRESS");
    assert!(reply["pending_config"].is_object(), "{reply}");
    let done = wait_update_done(&s.client, "live");
    assert_eq!(done["state"]["config_update"], "NOT_UPDATING", "{done}");
    assert_eq!(done["config"]["served_entities"][0]["entity_version"], "2");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    println!(
        "update under load: {} requests, {} failed, served by {seen:?}",
        total.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst)
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during the update"
    );
    assert!(
        seen.contains_key("digits-1") && seen.contains_key("digits-2"),
        "{seen:?}"
    );

    // A failed update (a version that does not exist) leaves the old config serving.
    let (status, _) = s.client.put(
        "/api/2.0/serving-endpoints/live/config",
        &json!({"served_entities": [entity("digits", 99)]}),
    );
    assert_eq!(status, 200);
    let failed = wait_update_done(&s.client, "live");
    assert_eq!(
        failed["state"]["config_update"], "UPDATE_FAILED",
        "{failed}"
    );
    assert_eq!(failed["state"]["ready"], "READY");
    assert!(
        failed["state"]["update_error"]
            .as_str()
            .unwrap()
            .contains("99"),
        "{failed}"
    );
    let (status, _, served) = query(&s.client, &s.server, "live", &body, &s.token);
    assert_eq!((status, served.as_str()), (200, "digits-2"));

    // A second update while one runs is refused.
    let cnn = cnn_package();
    assert_eq!(s.client.upload("cnn", &cnn).0, 201);
    let slow = json!({"served_entities": [entity("digits", 2), entity("cnn", 1)], "traffic_config": {"routes": [
        {"served_entity_name": "digits-2", "traffic_percentage": 100},
        {"served_entity_name": "cnn-1", "traffic_percentage": 0},
    ]}});
    let (status, _) = s
        .client
        .put("/api/2.0/serving-endpoints/live/config", &slow);
    assert_eq!(status, 200);
    let (status, body) = s
        .client
        .put("/api/2.0/serving-endpoints/live/config", &slow);
    assert_eq!(
        (status, body["error_code"].as_str()),
        (409, Some("RESOURCE_CONFLICT")),
        "{body}"
    );
    wait_update_done(&s.client, "live");
}

#[test]
fn a_restart_keeps_endpoints_serving() {
    if !onnx_available("endpoint restart") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let token;
    {
        let server = TestServer::start(data.path(), &[]);
        token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
        let client = server.client(&token);
        assert_eq!(client.upload("digits", &example_package("digits")).0, 201);
        create(
            &client,
            json!({"name": "digits", "config": {"served_entities": [entity("digits", 1)]}}),
        );
        server.stop();
    }
    let server = TestServer::start(data.path(), &[]);
    let client = server.client(&token);
    wait_ready(&client, "digits");
    let (status, reply, served) = query(
        &client,
        &server,
        "digits",
        &json!({"instances": [digit_rows(1)[0]]}),
        &token,
    );
    assert_eq!((status, served.as_str()), (200, "digits-1"), "{reply}");
}

#[test]
fn fallback_retries_a_failing_entity_on_another() {
    if !onnx_available("fallback") {
        return;
    }
    let s = setup(&[]);
    assert_eq!(
        s.client
            .upload("broken", &handler_package("broken", "panics", "", &[]))
            .0,
        201
    );
    assert_eq!(s.client.upload("echo", &example_package("echo")).0, 201);
    let config = |fallback: bool| {
        json!({
            "name": if fallback { "with-fallback" } else { "without" },
            "config": {
                "served_entities": [entity("broken", 1), entity("echo", 1)],
                "traffic_config": {"routes": [
                    {"served_entity_name": "broken-1", "traffic_percentage": 50},
                    {"served_entity_name": "echo-1", "traffic_percentage": 50},
                ]},
            },
            "ai_gateway": {"fallback_config": {"enabled": fallback}},
        })
    };
    create(&s.client, config(true));
    create(&s.client, config(false));
    let body = json!({"inputs": {"x": [1.0, 2.0]}});
    let mut failures_without = 0;
    for _ in 0..40 {
        let (status, reply, served) = query(&s.client, &s.server, "with-fallback", &body, &s.token);
        assert_eq!((status, served.as_str()), (200, "echo-1"), "{reply}");
        let (status, reply, _) = query(&s.client, &s.server, "without", &body, &s.token);
        if status == 500 {
            failures_without += 1;
            assert_eq!(reply["error_code"], "INTERNAL_ERROR");
            let text = reply.to_string();
            assert!(
                !text.contains("panicked") && !text.contains("wasm"),
                "host internals leak: {text}"
            );
        }
    }
    assert!(
        failures_without > 0,
        "without fallback the broken entity must fail some requests"
    );
}

#[test]
fn every_error_class_has_its_status_and_code() {
    if !onnx_available("error classes") {
        return;
    }
    let s = setup(&[]);
    assert_eq!(s.client.upload("digits", &example_package("digits")).0, 201);
    assert_eq!(
        s.client
            .upload(
                "spin",
                &handler_package("spin", "infinite-loop", "[limits]\ntimeout_ms = 200\n", &[])
            )
            .0,
        201
    );
    create(
        &s.client,
        json!({"name": "digits", "config": {"served_entities": [entity("digits", 1)]}}),
    );
    create(
        &s.client,
        json!({"name": "spin", "config": {"served_entities": [entity("spin", 1)]}}),
    );
    let row = digit_rows(1)[0].clone();
    let check = |what: &str, reply: (u16, Value, String), status: u16, code: &str| {
        assert_eq!(reply.0, status, "{what}: {}", reply.1);
        assert_eq!(reply.1["error_code"], code, "{what}: {}", reply.1);
        assert!(
            reply.1["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    };
    check(
        "two formats",
        query(
            &s.client,
            &s.server,
            "digits",
            &json!({"instances": [row], "inputs": [row]}),
            &s.token,
        ),
        400,
        "INVALID_PARAMETER_VALUE",
    );
    check(
        "no format",
        query(
            &s.client,
            &s.server,
            "digits",
            &json!({"params": {}}),
            &s.token,
        ),
        400,
        "INVALID_PARAMETER_VALUE",
    );
    check(
        "wrong shape",
        query(
            &s.client,
            &s.server,
            "digits",
            &json!({"instances": [[1.0, 2.0]]}),
            &s.token,
        ),
        400,
        "INVALID_PARAMETER_VALUE",
    );
    let mut bright = row.clone();
    bright[5] = 17.0;
    let handler_refused = query(
        &s.client,
        &s.server,
        "digits",
        &json!({"instances": [bright]}),
        &s.token,
    );
    check(
        "handler invalid-input",
        handler_refused.clone(),
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert!(
        handler_refused.1["message"]
            .as_str()
            .unwrap()
            .contains("0..=16"),
        "{}",
        handler_refused.1
    );
    check(
        "unknown endpoint",
        query(
            &s.client,
            &s.server,
            "nope",
            &json!({"instances": [row]}),
            &s.token,
        ),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    check(
        "timeout",
        query(
            &s.client,
            &s.server,
            "spin",
            &json!({"inputs": {"x": [1.0]}}),
            &s.token,
        ),
        504,
        "DEADLINE_EXCEEDED",
    );
    let (status, body): Reply = s.client.post(
        "/serving-endpoints/digits/served-models/nope/invocations",
        &json!({"instances": [row]}),
    );
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let (status, body) = s.client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "digits", "config": {"served_entities": [entity("digits", 1)]}}),
    );
    assert_eq!(
        (status, body["error_code"].as_str()),
        (409, Some("RESOURCE_ALREADY_EXISTS"))
    );
    let (status, body) = s.client.post("/api/2.0/serving-endpoints", &json!({"name": "split", "config": {
        "served_entities": [entity("digits", 1)],
        "traffic_config": {"routes": [{"served_entity_name": "digits-1", "traffic_percentage": 90}]},
    }}));
    assert_eq!((status, reason(&body)), (400, "invalid_config"), "{body}");
    assert!(body["message"].as_str().unwrap().contains("sum to 90"));
    let viewer = s
        .server
        .client(&s.server.admin().token("acme", "CAN_VIEW", &["*"], None));
    let (status, _) = viewer.post(
        "/serving-endpoints/digits/invocations",
        &json!({"instances": [row]}),
    );
    assert_eq!(status, 403);
    let other = s
        .server
        .client(&s.server.admin().tenant_with_token("other", "CAN_MANAGE"));
    let (status, _) = other.post(
        "/serving-endpoints/digits/invocations",
        &json!({"instances": [row]}),
    );
    assert_eq!(
        status, 404,
        "another tenant's endpoint does not exist for you"
    );
    assert_eq!(other.get("/api/2.0/serving-endpoints/digits").0, 404);

    // Errors of the router and extractors themselves have the same JSON shape.
    let (status, body) = s.client.get("/serving-endpoints/digits/invocations");
    assert_eq!(
        (status, body["error_code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("GET"), "{body}");
    let (status, body) = s.client.get("/api/2.0/serving-endpoints/%FF");
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE")),
        "{body}"
    );
    // KServe V2 clients read an error's `error` field.
    let (status, body) = s
        .client
        .post("/v2/models/digits/infer", &json!({"inputs": "nope"}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["error"], body["message"], "{body}");
}

#[test]
fn overload_at_ten_times_the_limit_gets_fast_refusals_and_bounded_memory() {
    if !onnx_available("overload") {
        return;
    }
    let s = setup(&[]);
    let cnn = cnn_package();
    assert_eq!(s.client.upload("cnn", &cnn).0, 201);
    let mut limited = entity("cnn", 1);
    limited["max_concurrency"] = json!(2);
    limited["max_queue"] = json!(2);
    create(
        &s.client,
        json!({"name": "cnn", "config": {"served_entities": [limited]}}),
    );
    let input = read_f32(&repo_root().join("models/bench_input.f32"));
    let body = json!({"inputs": {"graph": ["bench"], "input": [input.chunks(64 * 64).map(|plane| plane.chunks(64).map(|r| r.to_vec()).collect::<Vec<_>>()).collect::<Vec<_>>()]}});
    s.server.reset_peak_memory();
    let before = s.server.memory_kib("VmRSS");
    let results: Vec<(u16, Duration, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn(|| {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    (0..5)
                        .map(|_| {
                            let started = Instant::now();
                            let response = agent
                                .post(format!(
                                    "{}/serving-endpoints/cnn/invocations",
                                    s.server.url
                                ))
                                .header("Authorization", &format!("Bearer {}", s.token))
                                .send_json(&body)
                                .unwrap();
                            let retry_after = response.headers().get("retry-after").is_some();
                            (response.status().as_u16(), started.elapsed(), retry_after)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let peak = s.server.memory_kib("VmHWM");
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<&(u16, Duration, bool)> = results
        .iter()
        .filter(|r| r.0 == 429 || r.0 == 503)
        .collect();
    let slowest_refusal = refused.iter().map(|r| r.1).max().unwrap_or_default();
    let slowest_success = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| r.1)
        .max()
        .unwrap_or_default();
    println!(
        "overload: {ok} served, {} refused (slowest refusal {slowest_refusal:?}, slowest success {slowest_success:?}), RSS {} -> peak {} MiB",
        refused.len(),
        before / 1024,
        peak / 1024
    );
    // A request admitted to the queue may still run out of its timeout when the machine
    // is loaded well beyond the test (other jobs on its cores): 504, also an answer.
    let timed_out = results.iter().filter(|r| r.0 == 504).count();
    assert_eq!(
        ok + refused.len() + timed_out,
        results.len(),
        "every request is served, refused or timed out: {results:?}"
    );
    assert!(ok > 0 && !refused.is_empty(), "{results:?}");
    assert!(refused.iter().all(|r| r.2), "refusals carry Retry-After");
    assert!(
        peak.saturating_sub(before) / 1024 < 128,
        "memory grew by {} MiB under overload",
        peak.saturating_sub(before) / 1024
    );
}

#[test]
fn gpu_graphs_are_refused_without_a_gpu_and_gpu_or_cpu_says_where_it_runs() {
    if !onnx_available("gpu policy over http") {
        return;
    }
    let s = setup(&[]);
    let with_target = |target: &str| {
        handler_package(
            "digits",
            "digits",
            &format!(
                "[[graphs]]\nname = \"digits\"\nencoding = \"onnx\"\nfiles = [\"model/digits.onnx\"]\ntarget = \"{target}\"\n"
            ),
            &[("model/digits.onnx", read(&repo_root().join("examples/digits/model/digits.onnx")))],
        )
    };
    let (_, health) = s.server.admin().get("/health");
    if health["engines"]["cuda"]["loaded"] == true {
        eprintln!(
            "SKIPPED gpu refusal: this host has a CUDA device ({})",
            health["engines"]["cuda"]["version"]
        );
        return;
    }
    assert!(health["engines"]["cuda"]["error"].is_string(), "{health}");
    let (status, body) = s.client.upload("digits", &with_target("gpu"));
    assert_eq!(
        (status, reason(&body)),
        (400, "target_unavailable"),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("gpu-or-cpu"),
        "the error says what to do: {body}"
    );
    let (status, body) = s.client.upload("digits", &with_target("gpu-or-cpu"));
    assert_eq!(status, 201, "{body}");
    let ready = create(
        &s.client,
        json!({"name": "digits", "config": {"served_entities": [entity("digits", 1)]}}),
    );
    let message = ready["config"]["served_entities"][0]["state"]["deployment_state_message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("cpu") && message.contains("gpu-or-cpu"),
        "{ready}"
    );
    let (status, _, _) = query(
        &s.client,
        &s.server,
        "digits",
        &json!({"instances": [digit_rows(1)[0]]}),
        &s.token,
    );
    assert_eq!(status, 200);
}

/// How far the server's peak RSS rose above its RSS while `work` ran, in bytes.
fn peak_rise(server: &TestServer, work: impl FnOnce()) -> u64 {
    server.reset_peak_memory();
    let before = server.memory_kib("VmRSS");
    work();
    server.memory_kib("VmHWM").saturating_sub(before) * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// POSTs JSON text (too large to build as a `Value` cheaply).
fn post_text(s: &Setup, path: &str, body: &str) -> Reply {
    s.client
        .post_bytes(path, "application/json", &[], body.as_bytes())
}

#[test]
fn a_large_query_costs_the_server_a_small_multiple_of_its_size() {
    let s = setup(&[]);
    assert_eq!(s.client.upload("echo", &example_package("echo")).0, 201);
    create(
        &s.client,
        json!({"name": "echo", "config": {"served_entities": [entity("echo", 1)]}}),
    );
    let v2 = |n: usize, shape: usize| {
        let data = vec!["0"; n].join(",");
        format!(
            r#"{{"inputs":[{{"name":"x","shape":[{shape}],"datatype":"FP32","data":[{data}]}}]}}"#
        )
    };
    // Warm up: the first query sets up what every later one shares.
    let (status, reply) = post_text(&s, "/v2/models/echo/infer", &v2(4, 4));
    assert_eq!(status, 200, "{reply}");

    // 48 MiB of zeros, one element short of its shape: every element is read before the
    // count is known to be wrong. (A tree of JSON values cost ~45 times the body.)
    let n = 24 << 20;
    let body = v2(n, n + 1);
    let rise = peak_rise(&s.server, || {
        let (status, reply) = post_text(&s, "/v2/models/echo/infer", &body);
        assert_eq!(status, 400, "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains("inputs[0].data"), "{message}");
        assert!(message.contains(&format!("data has {n}")), "{message}");
    });
    println!(
        "V2 wrong-shape body of {:.0} MiB: server peak rose {:.0} MiB ({:.1}x)",
        mib(body.len() as u64),
        mib(rise),
        rise as f64 / body.len() as f64
    );
    assert!(
        rise < 8 * body.len() as u64,
        "parsing a {:.0} MiB V2 body raised the server's peak memory by {:.0} MiB",
        mib(body.len() as u64),
        mib(rise)
    );

    // The same zeros as Databricks `inputs`, refused at the last element: each zero is an
    // INT64 (8 bytes for 2 of text) until a string shows the tensor is mixed.
    let body = format!(r#"{{"inputs":{{"x":[{},"a"]}}}}"#, vec!["0"; n].join(","));
    let rise = peak_rise(&s.server, || {
        let (status, reply) = post_text(&s, "/serving-endpoints/echo/invocations", &body);
        assert_eq!(status, 400, "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(&format!("inputs.x[{n}]")), "{message}");
    });
    println!(
        "Databricks inputs body of {:.0} MiB: server peak rose {:.0} MiB ({:.1}x)",
        mib(body.len() as u64),
        mib(rise),
        rise as f64 / body.len() as f64
    );
    assert!(
        rise < 8 * body.len() as u64,
        "parsing a {:.0} MiB Databricks body raised the server's peak memory by {:.0} MiB",
        mib(body.len() as u64),
        mib(rise)
    );

    // A `dataframe_split` table of zeros in two columns (six bytes a row), refused at
    // its last cell.
    let rows = n / 3;
    let body = format!(
        r#"{{"dataframe_split":{{"columns":["a","b"],"data":[{}[0,"a"]]}}}}"#,
        "[0,0],".repeat(rows)
    );
    let rise = peak_rise(&s.server, || {
        let (status, reply) = post_text(&s, "/serving-endpoints/echo/invocations", &body);
        assert_eq!(status, 400, "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(&format!("data[{rows}][1]")), "{message}");
    });
    println!(
        "Databricks dataframe_split body of {:.0} MiB: server peak rose {:.0} MiB ({:.1}x)",
        mib(body.len() as u64),
        mib(rise),
        rise as f64 / body.len() as f64
    );
    assert!(
        rise < 8 * body.len() as u64,
        "parsing a {:.0} MiB dataframe_split body raised the server's peak memory by {:.0} MiB",
        mib(body.len() as u64),
        mib(rise)
    );
}

#[test]
fn a_large_answer_costs_the_server_a_small_multiple_of_its_size() {
    let s = setup(&[]);
    let huge = handler_package(
        "huge",
        "huge-output",
        "[limits]\nmax_output_mib = 64\n",
        &[],
    );
    assert_eq!(s.client.upload("huge", &huge).0, 201);
    create(
        &s.client,
        json!({"name": "huge", "config": {"served_entities": [entity("huge", 1)]}}),
    );
    let ask = |bytes: u64| json!({"inputs": [{"name": "bytes", "shape": [], "datatype": "INT64", "data": bytes}]});
    let (status, reply) = s.client.post("/v2/models/huge/infer", &ask(4));
    assert_eq!(
        (status, &reply["outputs"][0]["data"]),
        (200, &json!([7, 7, 7, 7])),
        "{reply}"
    );

    // 16 MiB of output: `7,` per element, so a 32 MiB answer. (JSON trees cost ~145x.)
    let bytes: u64 = 16 << 20;
    let answer = 2 * bytes;
    let rise = peak_rise(&s.server, || {
        let (status, reply) = s.client.post("/v2/models/huge/infer", &ask(bytes));
        assert_eq!(status, 200, "{}", reply["message"]);
        assert_eq!(
            reply["outputs"][0]["data"].as_array().unwrap().len() as u64,
            bytes
        );
    });
    println!(
        "V2 answer of {:.0} MiB: server peak rose {:.0} MiB ({:.1}x)",
        mib(answer),
        mib(rise),
        rise as f64 / answer as f64
    );
    assert!(
        rise < 8 * answer,
        "a {:.0} MiB V2 answer raised the server's peak memory by {:.0} MiB",
        mib(answer),
        mib(rise)
    );

    let rise = peak_rise(&s.server, || {
        let (status, reply) = s.client.post(
            "/serving-endpoints/huge/invocations",
            &json!({"inputs": {"bytes": bytes}}),
        );
        assert_eq!(status, 200, "{}", reply["message"]);
        assert_eq!(reply["predictions"].as_array().unwrap().len() as u64, bytes);
    });
    println!(
        "Databricks answer of {:.0} MiB: server peak rose {:.0} MiB ({:.1}x)",
        mib(answer),
        mib(rise),
        rise as f64 / answer as f64
    );
    assert!(
        rise < 8 * answer,
        "a {:.0} MiB predictions answer raised the server's peak memory by {:.0} MiB",
        mib(answer),
        mib(rise)
    );
}

#[test]
fn a_query_of_many_empty_rows_is_answered_not_a_server_error() {
    let s = setup(&[]);
    assert_eq!(s.client.upload("echo", &example_package("echo")).0, 201);
    create(
        &s.client,
        json!({"name": "echo", "config": {"served_entities": [entity("echo", 1)]}}),
    );
    // `{"inputs": {"x": [[]] * 100000}}`: a [100000, 0] tensor, echoed back.
    let rows = vec!["[]"; 100_000].join(",");
    let body = format!(r#"{{"inputs":{{"x":[{rows}]}}}}"#);
    let (status, reply) = post_text(&s, "/serving-endpoints/echo/invocations", &body);
    assert_eq!(status, 200, "{reply}");
    let x = reply["predictions"]["x"].as_array().unwrap();
    assert_eq!(x.len(), 100_000);
    assert!(x.iter().all(|row| row == &json!([])), "{}", x[0]);
    assert_eq!(reply["predictions"]["element_counts"], json!([0]));
}
