//! Authoring without a Rust handler, end to end against the real binary: the Python digits
//! handler (`examples/digits-py`, built by `sandserve package` with componentize-py) and a
//! model-only package of the digits ONNX model (`sandserve package --model`, served by the
//! built-in generic handler) answer exactly as the Rust digits handler does, and refuse
//! bad tensors with a 400 that says what is wrong.
//!
//! Building the Python handler needs componentize-py: `SANDSERVE_COMPONENTIZE_PY` (set by
//! `.engines/env.sh`) or, without it, the binary installs it from PyPI into
//! `examples/digits-py/.sandserve/venv`.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::example_package;
use sandserve_tests::server::{sandserve_bin, Client, TenantServer};
use sandserve_tests::{onnx_available, read_f32, repo_root};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Test images as raw intensities 0..=16, `n` rows of 64.
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

/// Runs `sandserve package ARGS` and returns the archive it wrote.
fn package(args: &[&str], out: &Path) -> Vec<u8> {
    let started = Instant::now();
    let result = Command::new(sandserve_bin())
        .arg("package")
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "sandserve package {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.starts_with(&format!("wrote {}", out.display())),
        "{stdout}"
    );
    eprintln!("sandserve package {args:?} took {:?}", started.elapsed());
    std::fs::read(out).unwrap()
}

fn serve(client: &Client, model: &str) {
    let body = json!({
        "name": model,
        "config": {"served_entities": [
            {"name": model, "entity_name": model, "entity_version": "1"}
        ]},
    });
    let (status, reply) = client.post("/api/2.0/serving-endpoints", &body);
    assert_eq!(status, 200, "{reply}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, body) = client.get(&format!("/api/2.0/serving-endpoints/{model}"));
        assert_eq!(status, 200, "{body}");
        if body["state"]["ready"] == "READY" && body["state"]["config_update"] != "IN_PROGRESS" {
            return;
        }
        assert_ne!(body["state"]["config_update"], "UPDATE_FAILED", "{body}");
        assert!(
            Instant::now() < deadline,
            "{model} never became ready: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn infer(client: &Client, model: &str, input: &str, rows: &[Vec<f32>]) -> (u16, Value) {
    let shape = [rows.len(), rows.first().map_or(0, Vec::len)];
    client.post(
        &format!("/v2/models/{model}/infer"),
        &json!({"inputs": [{"name": input, "shape": shape, "datatype": "FP32", "data": rows}]}),
    )
}

/// (labels, probabilities) of a V2 answer, by output name.
fn answer(reply: &Value) -> (Vec<i64>, Vec<f64>) {
    let output = |name: &str| {
        reply["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` in {reply}"))
            .clone()
    };
    let (label, probabilities) = (output("label"), output("probabilities"));
    assert_eq!(label["datatype"], "INT64");
    assert_eq!(probabilities["datatype"], "FP32");
    let labels = label["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let p = probabilities["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (labels, p)
}

fn error_of(status: u16, reply: &Value) -> String {
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error_code"].is_string(), "{reply}");
    reply["message"].as_str().unwrap().to_owned()
}

/// Median wall time of `n` sequential one-image V2 requests.
fn median_latency(client: &Client, model: &str, input: &str, row: &[f32], n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let started = Instant::now();
            let (status, reply) = infer(client, model, input, &[row.to_vec()]);
            assert_eq!(status, 200, "{reply}");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

#[test]
fn python_and_model_only_packages_answer_as_the_rust_handler_does() {
    if !onnx_available("python and model-only digits") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let python = package(
        &[repo_root().join("examples/digits-py").to_str().unwrap()],
        &work.path().join("digits-py.tar.gz"),
    );
    let signature = work.path().join("signature.toml");
    std::fs::write(
        &signature,
        "inputs = [{ name = \"input\", datatype = \"FP32\", shape = [-1, 64] }]\n\
         outputs = [\n  { name = \"label\", datatype = \"INT64\", shape = [-1] },\n  \
         { name = \"probabilities\", datatype = \"FP32\", shape = [-1, 10] },\n]\n",
    )
    .unwrap();
    let model = repo_root().join("examples/digits/model/digits.onnx");
    let model_only = package(
        &[
            "--model",
            model.to_str().unwrap(),
            "--signature",
            signature.to_str().unwrap(),
            "--name",
            "digits-onnx",
        ],
        &work.path().join("digits-onnx.tar.gz"),
    );

    let s = TenantServer::start(&[]);
    for (name, bytes) in [
        ("digits", example_package("digits")),
        ("digits-py", python),
        ("digits-onnx", model_only),
    ] {
        let (status, reply) = s.client.upload(name, &bytes);
        assert_eq!(status, 201, "{name}: {reply}");
        serve(&s.client, name);
    }

    let rows = digit_rows(32);
    let (status, reply) = infer(&s.client, "digits", "images", &rows);
    assert_eq!(status, 200, "{reply}");
    let rust = answer(&reply);
    let (status, reply) = infer(&s.client, "digits-py", "images", &rows);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        answer(&reply),
        rust,
        "the Python handler differs from the Rust one"
    );
    // The model takes intensities scaled to 0..=1; the generic handler passes tensors as is.
    let scaled: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| r.iter().map(|v| v / 16.0).collect())
        .collect();
    let (status, reply) = infer(&s.client, "digits-onnx", "input", &scaled);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        answer(&reply),
        rust,
        "the model-only package differs from the Rust handler"
    );
    let truth: Vec<i64> =
        sandserve_tests::read_i64(&repo_root().join("examples/digits/model/test_labels.i64"));
    let right = rust.0.iter().zip(&truth).filter(|(a, b)| a == b).count();
    assert!(right >= 30, "{right} of 32 right");

    // Hostile inputs: the Python handler's own checks, and the signature before the
    // generic handler runs.
    // The signature stops a wrong shape before the handler runs; the handler's own
    // checks see what the signature allows (an empty batch, a pixel out of range).
    let (status, reply) = infer(&s.client, "digits-py", "images", &[vec![1.0; 63]]);
    let message = error_of(status, &reply);
    assert!(
        message.contains("input `images`: expected shape [-1, 64], got [1, 63]"),
        "{message}"
    );
    let (status, reply) = s.client.post(
        "/v2/models/digits-py/infer",
        &json!({"inputs": [{"name": "images", "shape": [0, 64], "datatype": "FP32", "data": []}]}),
    );
    let message = error_of(status, &reply);
    assert!(
        message.contains("send between 1 and 4096 images, got 0"),
        "{message}"
    );
    let mut bright = rows[0].clone();
    bright[5] = 17.0;
    let (status, reply) = infer(&s.client, "digits-py", "images", &[bright]);
    let message = error_of(status, &reply);
    assert!(
        message.contains("pixel 5 of image 0 is 17; intensities must be within 0..=16"),
        "{message}"
    );
    let (status, reply) = infer(&s.client, "digits-onnx", "input", &[vec![0.5; 63]]);
    let message = error_of(status, &reply);
    assert!(
        message.contains("input") && message.contains("64"),
        "{message}"
    );
    let (status, reply) = infer(&s.client, "digits-onnx", "pixels", &scaled[..1]);
    let message = error_of(status, &reply);
    assert!(message.contains("pixels"), "{message}");

    // Per-request cost on one image (docs/benchmarks.md has a quieter measurement).
    let n = 20;
    for (model, input, row) in [
        ("digits", "images", &rows[0]),
        ("digits-py", "images", &rows[0]),
        ("digits-onnx", "input", &scaled[0]),
    ] {
        eprintln!(
            "{model}: median {:?} over {n} requests",
            median_latency(&s.client, model, input, row, n)
        );
    }
}
