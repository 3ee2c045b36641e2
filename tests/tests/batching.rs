//! Dynamic batching end to end against the real binary: a model whose graph declares
//! `[graphs.batching]` answers concurrent requests exactly as the same model without it
//! (within float tolerance), the server really ran them as batches (its log says so), a
//! request with a bad tensor inside a burst gets its own 400 while the rest are answered,
//! and a graph that cannot batch is refused at upload with the reason.
//!
//! The model is `models/test_mlp.onnx` (`scripts/make_mlp_model.py`, run by
//! `scripts/setup-engines.sh`): 4 layers of 256, batch dimension free. The handler is the
//! `nn-proxy` fixture, which knows nothing of batching.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::handler_package;
use sandserve_tests::server::{Client, TenantServer};
use sandserve_tests::{onnx_available, openvino_available, read, repo_root};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};

const WIDTH: usize = 256;
const CLASSES: usize = 16;

fn package(name: &str, model: &[u8], batching: &str) -> Vec<u8> {
    package_on("onnx", name, model, batching)
}

fn package_on(encoding: &str, name: &str, model: &[u8], batching: &str) -> Vec<u8> {
    handler_package(
        name,
        "nn-proxy",
        &format!(
            "[limits]\ntimeout_ms = 60000\nmax_concurrency = 64\n\
             [[graphs]]\nname = \"mlp\"\nencoding = \"{encoding}\"\nfiles = [\"model/mlp.onnx\"]\n\
             {batching}"
        ),
        &[("model/mlp.onnx", model.to_vec())],
    )
}

/// A request of `rows` rows of deterministic values seeded by `seed`.
fn request(rows: usize, seed: u64) -> Value {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..rows * WIDTH)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    json!({"inputs": [
        {"name": "graph", "shape": [1], "datatype": "BYTES", "data": ["mlp"]},
        {"name": "x", "shape": [rows, WIDTH], "datatype": "FP32", "data": data},
    ]})
}

/// `y`'s values from an answer, checking its name and shape.
fn outputs(body: &Value, rows: usize) -> Vec<f32> {
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

fn infer(client: &Client, model: &str, body: &Value) -> (u16, Value) {
    client.post(&format!("/v2/models/{model}/versions/1/infer"), body)
}

/// Sends every body at once, one thread each; the answers in order.
fn burst(s: &TenantServer, model: &str, bodies: &[Value]) -> Vec<(u16, Value)> {
    let start = Arc::new(Barrier::new(bodies.len()));
    let threads: Vec<_> = bodies
        .iter()
        .map(|body| {
            let (client, start, body, model) = (
                s.server.client(&s.token),
                start.clone(),
                body.clone(),
                model.to_string(),
            );
            std::thread::spawn(move || {
                start.wait();
                infer(&client, &model, &body)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Sizes of the batches the server's log reports.
fn batch_sizes(log: &str) -> Vec<usize> {
    log.lines()
        .filter_map(|l| l.split("batch of ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

fn mlp_model() -> Vec<u8> {
    let path = repo_root().join("models/test_mlp.onnx");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-engines.sh",
        path.display()
    );
    read(&path)
}

#[test]
fn batched_and_unbatched_answers_agree_under_concurrent_requests() {
    if !onnx_available("dynamic batching") {
        return;
    }
    let model = mlp_model();
    // A share of guest threads as large as the burst, so the requests can wait together.
    let s = TenantServer::start_logging(
        &["--tenant-guest-threads", "24"],
        "info,sandserve_host::inference=debug",
    );
    let (status, body) = s.client.upload("plain", &package("plain", &model, ""));
    assert_eq!(status, 201, "{body}");
    let batching = "[graphs.batching]\nmax_batch_size = 16\nmax_delay_us = 50000\n";
    let (status, body) = s
        .client
        .upload("batched", &package("batched", &model, batching));
    assert_eq!(status, 201, "{body}");

    // 24 requests of 1 to 3 rows; the reference answers come one at a time, unbatched.
    let bodies: Vec<Value> = (0..24).map(|i| request(1 + i % 3, i as u64)).collect();
    let rows = |i: usize| 1 + i % 3;
    let expected: Vec<Vec<f32>> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (status, reply) = infer(&s.client, "plain", body);
            assert_eq!(status, 200, "{reply}");
            outputs(&reply, rows(i))
        })
        .collect();
    // Different inputs give different answers (so a mixed-up slice cannot pass).
    assert_ne!(expected[0], expected[3]);

    // OpenVINO batches too (its graphs take a free batch dimension as well); its sums
    // differ from ONNX Runtime's in the last bits, hence its looser tolerance.
    let mut models = vec![("batched", 1e-4f32)];
    if openvino_available("dynamic batching on OpenVINO") {
        let ov = package_on("openvino", "batched-ov", &model, batching);
        let (status, body) = s.client.upload("batched-ov", &ov);
        assert_eq!(status, 201, "{body}");
        models.push(("batched-ov", 1e-3));
    }
    for (name, tolerance) in models {
        let seen = batch_sizes(&s.server.log()).len();
        for round in 0..2 {
            for (i, (status, reply)) in burst(&s, name, &bodies).into_iter().enumerate() {
                assert_eq!(status, 200, "{name} round {round}, request {i}: {reply}");
                let got = outputs(&reply, rows(i));
                for (g, e) in got.iter().zip(&expected[i]) {
                    assert!(
                        (g - e).abs() <= tolerance * (1.0 + e.abs()),
                        "{name} round {round}, request {i}: {g} against {e}"
                    );
                }
            }
        }
        let sizes = batch_sizes(&s.server.log())[seen..].to_vec();
        println!("{name}: batches the server ran, in requests: {sizes:?}");
        assert!(
            sizes.iter().any(|&n| n >= 2),
            "{name}: no batch of two or more requests ran: {sizes:?}"
        );
        // At most 16 rows a batch, each request holding at least one.
        assert!(sizes.iter().all(|&n| n <= 16), "{sizes:?}");
        executions_add_up(
            &s.client,
            name,
            &sizes,
            2 * bodies.len(),
            2 * (0..24).map(rows).sum::<usize>(),
        );
    }
    // The unbatched version: one execution a request, no batch statistics.
    let (status, plain) = s.client.get("/v2/models/plain/versions/1/stats");
    assert_eq!(status, 200, "{plain}");
    let plain = &plain["model_stats"][0];
    assert_eq!(plain["inference_count"], 24, "{plain}");
    assert_eq!(plain["execution_count"], 24, "{plain}");
    assert_eq!(plain["batch_stats"], json!([]), "{plain}");
}

/// Triton's statistics of `model` after `requests` requests (of `rows` rows in all) ran in
/// batches of `sizes` requests (the server's log) and alone: one execution for each batch
/// and each request that ran alone, and `batch_stats` counting those executions by rows.
fn executions_add_up(client: &Client, model: &str, sizes: &[usize], requests: usize, rows: usize) {
    let (status, body) = client.get(&format!("/v2/models/{model}/versions/1/stats"));
    assert_eq!(status, 200, "{body}");
    let stats = &body["model_stats"][0];
    assert_eq!(stats["inference_count"], requests, "{stats}");
    let shared: usize = sizes.iter().map(|n| n - 1).sum();
    assert_eq!(stats["execution_count"], requests - shared, "{stats}");
    let by_size = stats["batch_stats"].as_array().unwrap();
    let count = |b: &Value, stage: &str| b[stage]["count"].as_u64().unwrap() as usize;
    let executions: usize = by_size.iter().map(|b| count(b, "compute_infer")).sum();
    assert_eq!(executions, requests - shared, "{stats}");
    let counted_rows: usize = by_size
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap() as usize * count(b, "compute_infer"))
        .sum();
    assert_eq!(counted_rows, rows, "{stats}");
    for b in by_size {
        assert_eq!(count(b, "compute_input"), count(b, "compute_infer"), "{b}");
        assert!(b["compute_infer"]["ns"].as_u64().unwrap() > 0, "{b}");
    }
    assert!(
        by_size
            .iter()
            .any(|b| b["batch_size"].as_u64().unwrap() >= 2),
        "{stats}"
    );
}

#[test]
fn a_bad_request_inside_a_burst_gets_its_own_error() {
    if !onnx_available("dynamic batching errors") {
        return;
    }
    let model = mlp_model();
    let s = TenantServer::start(&["--tenant-guest-threads", "16"]);
    let batching = "batching = \"auto\"\n";
    let (status, body) = s
        .client
        .upload("batched", &package("batched", &model, batching));
    assert_eq!(status, 201, "{body}");
    let mut bodies: Vec<Value> = (0..8).map(|i| request(1, i)).collect();
    // Wrong width: the graph refuses it before it could join a batch.
    bodies[3]["inputs"][1]["shape"] = json!([1, WIDTH + 1]);
    bodies[3]["inputs"][1]["data"] = json!(vec![0.5f32; WIDTH + 1]);
    let answers = burst(&s, "batched", &bodies);
    for (i, (status, reply)) in answers.iter().enumerate() {
        if i == 3 {
            assert_eq!(*status, 400, "{reply}");
            assert!(reply["error_code"].is_string(), "{reply}");
            let message = reply["message"].as_str().unwrap();
            assert!(message.contains("input `x` must have shape"), "{message}");
        } else {
            assert_eq!(*status, 200, "request {i}: {reply}");
            assert_eq!(outputs(reply, 1).len(), CLASSES);
        }
    }
}

#[test]
fn a_graph_that_cannot_batch_is_refused_at_upload() {
    if !onnx_available("dynamic batching refusal") {
        return;
    }
    let model = mlp_model();
    let s = TenantServer::start(&[]);
    // Dimension 1 of `x` is fixed at 256: nothing to join requests along.
    let batching = "[graphs.batching]\nbatch_dimension = 1\n";
    let (status, body) = s.client.upload("odd", &package("odd", &model, batching));
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("dimension 1 (batch_dimension) must be free"),
        "{message}"
    );
    assert!(!message.contains("/tmp"), "{message}");
    // Nonsense settings are refused naming the field.
    let (status, body) = s.client.upload(
        "odd",
        &package("odd", &model, "[graphs.batching]\nmax_delay_us = 0\n"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error_code"].is_string(), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("graphs[0].batching.max_delay_us"),
        "{message}"
    );
}
