//! HTTP benchmark: requests/s and p50 / p99 latency of the echo and digits serving endpoints
//! of the real (release) `sandserve` binary, at concurrency 1 and 32, next to a bare axum
//! route in this process that does the same JSON parse and encoding (Databricks query ->
//! tensors -> predictions) with no auth, routing or sandbox, measured in the same run with
//! the same client.
//!
//! Run: `scripts/bench-http.sh` (builds the release binary first). Results go in
//! docs/benchmarks.md.
//!
//! One more row, for reference and outside the goal: `digits+model`, where the bare route
//! also runs the digits model through native ONNX Runtime (one session per async worker,
//! one intra-op thread), so the ratio shows what the platform adds to the model itself.
//! A second table, the floor, compares the two bare routes with each other (parse only
//! against parse + native model, no sandserve at all): what running the model costs.
//!
//! Each row alternates the two servers in rounds (bare then sandserve, then the other way
//! round, ...), each side measured for a second after a short warm-up, and pools each
//! side's samples: a slow spell of this shared machine then hits both sides alike.
//!
//! `SANDSERVE_BENCH_GOVERNANCE=1` turns usage tracking and an inference table at fraction
//! 1.0 on for both endpoints (the server's metrics are always on).
//!
//! A third table drives the echo and digits rows with `wrk` (an external C client; skipped
//! when it is not installed, or with `SANDSERVE_BENCH_WRK=0`; `SANDSERVE_BENCH_WRK_SECS`
//! per side and round, default 3) and reports each server's CPU time per request from
//! `/proc`, so the platform's own cost shows apart from the client's. A fourth, the sandbox
//! floor, rotates the echo row over three servers with wrk: the bare route, the bare route
//! plus a fresh sandbox per request (sandserve's runtime, inline, nothing else of the
//! platform) and sandserve (`SANDSERVE_BENCH_ONLY=wrk-sandbox-floor:32`).
//! `SANDSERVE_BENCH_ROUNDS` (default 6) and `SANDSERVE_BENCH_SECS` (per side and round,
//! default 1) change that; `SANDSERVE_BENCH_ONLY=digits:1` (or `floor:32`) runs one row (for profiling: the
//! server's pid is printed).

use axum::body::Bytes;
use axum::routing::post;
use sandserve_host::codec::databricks;
use sandserve_host::codec::signature::check_request;
use sandserve_host::package::Manifest;
use sandserve_host::runtime::{
    empty_nn, ElementType, LoadedHandler, RequestLimits, Response, Runtime, RuntimeConfig, Tensor,
};
use sandserve_tests::load::{compare, print_row};
use sandserve_tests::native;
use sandserve_tests::packages::{digits_model, example_package};
use sandserve_tests::server::TestServer;
use sandserve_tests::wrk::Target;
use sandserve_tests::{guest_wasm, read_f32, repo_root};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The bare baseline: the same Databricks parse and predictions encoding, nothing else.
/// Its `/bare-sandbox/echo` route adds only the fresh sandbox per request (see
/// [`sandboxed_echo`]).
fn bare_server(signatures: Vec<(String, Option<sandserve_host::package::Signature>)>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio");
        let sandbox = Runtime::new(RuntimeConfig::default()).expect("wasmtime runtime starts");
        let echo = Arc::new(
            sandbox
                .load("bench/echo@1", &guest_wasm("echo"))
                .expect("the echo handler loads"),
        );
        runtime.block_on(async move {
            let mut app = axum::Router::new();
            for (name, signature) in signatures {
                let signature = Arc::new(signature);
                if name == "echo" {
                    let (signature, echo) = (signature.clone(), echo.clone());
                    app = app.route(
                        "/bare-sandbox/echo/invocations",
                        post(move |body: Bytes| {
                            let (signature, echo) = (signature.clone(), echo.clone());
                            async move { sandboxed_echo(&echo, &body, signature.as_ref().as_ref()) }
                        }),
                    );
                }
                if name == "digits" {
                    let signature = signature.clone();
                    app = app.route(
                        "/bare-model/digits/invocations",
                        post(move |body: Bytes| {
                            let signature = signature.clone();
                            async move {
                                axum::Json(bare_digits_with_model(
                                    &body,
                                    signature.as_ref().as_ref(),
                                ))
                            }
                        }),
                    );
                }
                app = app.route(
                    &format!("/bare/{name}/invocations"),
                    post(move |body: Bytes| {
                        let signature = signature.clone();
                        async move {
                            let request = parse_checked(&body, signature.as_ref().as_ref());
                            let response = Response {
                                outputs: request.inputs,
                                parameters: None,
                            };
                            let predictions = databricks::predictions(&response).expect("encodes");
                            (
                                [(axum::http::header::CONTENT_TYPE, "application/json")],
                                serde_json::to_vec(&predictions).expect("encodes"),
                            )
                        }
                    }),
                );
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(format!("http://{}", listener.local_addr().expect("addr")))
                .expect("send");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("bare server address")
}

thread_local! {
    /// Each bare-route worker's own native session of the digits model.
    static DIGITS: std::cell::RefCell<Option<ort::session::Session>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs the digits model natively on `pixels` (0..=16, `n` rows of 64), scaled as the
/// handler scales them; returns the handler's two outputs.
fn native_digits(pixels: &[f32], n: usize) -> Vec<Tensor> {
    let scaled: Vec<f32> = pixels.iter().map(|p| p / 16.0).collect();
    DIGITS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let session = slot.get_or_insert_with(|| native::session(&digits_model()));
        let (labels, probabilities) = native::digits(session, &scaled, n);
        vec![
            Tensor {
                name: "label".into(),
                shape: vec![n as u64],
                element_type: ElementType::I64,
                data: labels.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
            Tensor {
                name: "probabilities".into(),
                shape: vec![n as u64, 10],
                element_type: ElementType::F32,
                data: probabilities.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        ]
    })
}

/// The `bare-sandbox/echo` route: the bare echo route plus a fresh sandbox per request,
/// run inline on the async worker with sandserve's runtime (pooling allocator, the echo
/// example's component and limits): store, instantiate, call, drop, and nothing else of
/// the platform. It is the floor of what any server that gives every request a fresh
/// wasmtime sandbox pays.
fn sandboxed_echo(
    echo: &LoadedHandler,
    body: &[u8],
    signature: Option<&sandserve_host::package::Signature>,
) -> ([(axum::http::HeaderName, &'static str); 1], Vec<u8>) {
    let request = parse_checked(body, signature);
    let limits = RequestLimits {
        timeout: Duration::from_secs(5),
        max_memory_bytes: 64 << 20,
        ..RequestLimits::default()
    };
    let invocation = echo
        .invoke(&request, &limits, empty_nn())
        .expect("the echo handler answers");
    let predictions = databricks::predictions(&invocation.response).expect("encodes");
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&predictions).expect("encodes"),
    )
}

/// What the server does to a Databricks body before a handler runs: parse it, then check
/// it against the signature.
fn parse_checked(
    body: &[u8],
    signature: Option<&sandserve_host::package::Signature>,
) -> sandserve_host::runtime::Request {
    let (_, request) = databricks::parse_query(body, signature).expect("bench bodies are valid");
    if let Some(signature) = signature {
        check_request(&request, signature).expect("bench bodies fit the signature");
    }
    request
}

/// The `digits+model` bare route: parse, the model natively, encode.
fn bare_digits_with_model(
    body: &[u8],
    signature: Option<&sandserve_host::package::Signature>,
) -> serde_json::Value {
    let request = parse_checked(body, signature);
    let input = &request.inputs[0];
    let pixels: Vec<f32> = input
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let response = Response {
        outputs: native_digits(&pixels, pixels.len() / 64),
        parameters: None,
    };
    serde_json::to_value(databricks::predictions(&response).expect("encodes")).expect("encodes")
}

fn main() {
    let data = tempfile::tempdir().expect("temp dir");
    let extra: Vec<String> = std::env::var("SANDSERVE_BENCH_ARGS")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    sandserve_tests::engines()
        .require_onnx()
        .expect("ONNX Runtime (scripts/setup-engines.sh, then source .engines/env.sh)");
    let server = TestServer::start(data.path(), &extra);
    eprintln!("sandserve pid {}", server.pid());
    let only = std::env::var("SANDSERVE_BENCH_ONLY").ok();
    let token = server.admin().tenant_with_token("bench", "CAN_MANAGE");
    let client = server.client(&token);
    let mut signatures = Vec::new();
    for model in ["echo", "digits"] {
        let package = example_package(model);
        let (status, reply) = client.upload(model, &package);
        assert_eq!(status, 201, "{reply}");
        let manifest = Manifest::parse(
            &std::fs::read_to_string(repo_root().join(format!("examples/{model}/sandserve.toml")))
                .expect("manifest"),
        )
        .expect("manifest parses");
        signatures.push((model.to_string(), manifest.signature));
        let (status, reply) = client.post(
            "/api/2.0/serving-endpoints",
            &json!({"name": model, "config": {"served_entities": [
                {"entity_name": model, "entity_version": "1", "max_concurrency": 64, "max_queue": 256}
            ]}}),
        );
        assert_eq!(status, 200, "{reply}");
        if std::env::var("SANDSERVE_BENCH_GOVERNANCE").as_deref() == Ok("1") {
            // Governance on: usage tracking and an inference table capturing every query.
            let (status, reply) = client.put(
                &format!("/api/2.0/serving-endpoints/{model}/ai-gateway"),
                &json!({
                    "usage_tracking_config": {"enabled": true},
                    "inference_table_config": {"enabled": true, "sampling_fraction": 1.0}
                }),
            );
            assert_eq!(status, 200, "{reply}");
        }
        loop {
            let (_, state) = client.get(&format!("/api/2.0/serving-endpoints/{model}"));
            if state["state"]["ready"] == "READY" {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let bare = bare_server(signatures);
    let pixels: Vec<f32> = read_f32(&repo_root().join("examples/digits/model/test_inputs.f32"))
        [..64]
        .iter()
        .map(|v| v * 16.0)
        .collect();
    // (row, endpoint, bare route, body)
    let digits_body = json!({"instances": [pixels.clone()]});
    let rows = [
        (
            "echo",
            "echo",
            "bare/echo",
            json!({"inputs": {"x": [pixels]}}),
        ),
        ("digits", "digits", "bare/digits", digits_body.clone()),
        ("digits+model", "digits", "bare-model/digits", digits_body),
    ];
    println!("| endpoint | concurrency | bare axum req/s | sandserve req/s | throughput ratio | bare p50 / p99 (us) | sandserve p50 / p99 (us) | p50 ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    // The reference row is only fair if both sides compute the same answer (checked when a
    // digits row runs; a binary built with `bench-without-sandbox` answers with its inputs).
    if only.as_deref().is_none_or(|o| o.contains("digits")) {
        check_digits_answers(&bare, &client, &rows[2].3);
    }
    let selected = |row: &str, concurrency: usize| {
        only.as_deref()
            .is_none_or(|o| o == format!("{row}:{concurrency}"))
    };
    for (row, endpoint, bare_route, body) in &rows {
        for concurrency in [1, 32] {
            if !selected(row, concurrency) {
                continue;
            }
            let (base, real) = compare(
                &format!("{bare}/{bare_route}/invocations"),
                &format!("{}/serving-endpoints/{endpoint}/invocations", server.url),
                &token,
                body,
                concurrency,
            );
            print_row(row, concurrency, &base, &real);
        }
    }
    external_client_rows(&rows, &bare, &server, &token, selected);
    // The floor: what running the model at all costs against the parse-only route, with no
    // platform in the way (both sides are bare routes of this process).
    let floor: Vec<usize> = [1, 32]
        .into_iter()
        .filter(|c| selected("floor", *c))
        .collect();
    if !floor.is_empty() {
        println!();
        println!("| floor | concurrency | parse-only req/s | parse + native model req/s | throughput ratio | parse-only p50 / p99 (us) | parse + native model p50 / p99 (us) | p50 ratio |");
        println!("|---|---|---|---|---|---|---|---|");
    }
    for concurrency in floor {
        let (base, model) = compare(
            &format!("{bare}/bare/digits/invocations"),
            &format!("{bare}/bare-model/digits/invocations"),
            &token,
            &rows[2].3,
            concurrency,
        );
        print_row("digits", concurrency, &base, &model);
    }
}

/// The same rows driven by `wrk` (an external C client), with each server's CPU time per
/// request from `/proc`: the bare routes live in this process, so its CPU time over a run
/// against them is theirs (the client is another process).
fn external_client_rows(
    rows: &[(&str, &str, &str, Value)],
    bare: &str,
    server: &TestServer,
    token: &str,
    selected: impl Fn(&str, usize) -> bool,
) {
    if !sandserve_tests::wrk::enabled() {
        return;
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let (seconds, rounds) = (
        sandserve_tests::wrk::seconds(),
        sandserve_tests::wrk::rounds(),
    );
    println!();
    println!("| wrk | connections | bare axum req/s | sandserve req/s | throughput ratio | bare p50 / p99 (us) | sandserve p50 / p99 (us) | bare CPU us/req | sandserve CPU us/req | CPU above bare (us/req) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (row, endpoint, bare_route, body) in rows.iter().take(2) {
        for connections in [1, 32] {
            if !selected(&format!("wrk-{row}"), connections) {
                continue;
            }
            let body = serde_json::to_vec(body).expect("body");
            let base_url = format!("{bare}/{bare_route}/invocations");
            let real_url = format!("{}/serving-endpoints/{endpoint}/invocations", server.url);
            let (base, real) = sandserve_tests::wrk::alternate(
                scratch.path(),
                Target {
                    url: &base_url,
                    pid: std::process::id(),
                },
                Target {
                    url: &real_url,
                    pid: server.pid(),
                },
                token,
                &body,
                connections,
                seconds,
                rounds,
            );
            assert_eq!(
                base.errors + real.errors,
                0,
                "wrk {row} at {connections}: requests failed"
            );
            println!(
                "| {row} | {connections} | {:.0} | {:.0} | {:.2}x | {:.0} / {:.0} | {:.0} / {:.0} | {:.1} | {:.1} | {:.1} |",
                base.per_second,
                real.per_second,
                real.per_second / base.per_second,
                base.p50_us,
                base.p99_us,
                real.p50_us,
                real.p99_us,
                base.cpu_us_per_request(),
                real.cpu_us_per_request(),
                real.cpu_us_per_request() - base.cpu_us_per_request(),
            );
        }
    }
    let echo_body = serde_json::to_vec(&rows[0].3).expect("body");
    sandbox_floor_rows(bare, server, token, &echo_body, &selected, scratch.path());
}

/// The echo row three ways with wrk, rotated in the same rounds: the bare route, the bare
/// route plus a fresh sandbox per request (`bare-sandbox/echo`), and sandserve. What the
/// sandbox alone costs above the bare route is the floor under sandserve's own cost;
/// what sandserve costs above the sandboxed route is the rest of the platform.
fn sandbox_floor_rows(
    bare: &str,
    server: &TestServer,
    token: &str,
    body: &[u8],
    selected: impl Fn(&str, usize) -> bool,
    scratch: &std::path::Path,
) {
    let urls = [
        format!("{bare}/bare/echo/invocations"),
        format!("{bare}/bare-sandbox/echo/invocations"),
        format!("{}/serving-endpoints/echo/invocations", server.url),
    ];
    let pids = [std::process::id(), std::process::id(), server.pid()];
    let mut header = false;
    for connections in [1, 32] {
        if !selected("wrk-sandbox-floor", connections) {
            continue;
        }
        if !header {
            header = true;
            println!();
            println!("| wrk, echo | connections | bare req/s | bare + sandbox req/s | sandserve req/s | sandserve / bare | sandserve / bare + sandbox | p99 bare / bare + sandbox / sandserve (us) | CPU us/req bare / bare + sandbox / sandserve | the sandbox above bare (us/req) | sandserve above bare + sandbox (us/req) | per request, bare; bare + sandbox; sandserve: kernel CPU us / minor faults / context switches / IPIs (TLB, rescheduling, function call) |");
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        }
        let targets: Vec<Target<'_>> = urls
            .iter()
            .zip(pids)
            .map(|(url, pid)| Target { url, pid })
            .collect();
        let runs = sandserve_tests::wrk::rotate(
            scratch,
            &targets,
            token,
            body,
            connections,
            sandserve_tests::wrk::seconds(),
            sandserve_tests::wrk::rounds(),
        );
        let failed: u64 = runs.iter().map(|r| r.errors).sum();
        assert_eq!(
            failed, 0,
            "wrk sandbox floor at {connections}: requests failed"
        );
        let [bare_run, sandboxed, real] = [runs[0], runs[1], runs[2]];
        let cpu = |r: &sandserve_tests::wrk::WrkRun| r.cpu_us_per_request();
        let kernel = |r: &sandserve_tests::wrk::WrkRun| {
            let [tlb, reschedule, call] = r.ipis_per_request();
            format!(
                "{:.1} / {:.2} / {:.2} / {tlb:.2}, {reschedule:.2}, {call:.2}",
                r.system_us_per_request(),
                r.minor_faults_per_request(),
                r.context_switches_per_request()
            )
        };
        println!(
            "| echo | {connections} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x | {:.0} / {:.0} / {:.0} | {:.1} / {:.1} / {:.1} | {:.1} | {:.1} | {}; {}; {} |",
            bare_run.per_second,
            sandboxed.per_second,
            real.per_second,
            real.per_second / bare_run.per_second,
            real.per_second / sandboxed.per_second,
            bare_run.p99_us,
            sandboxed.p99_us,
            real.p99_us,
            cpu(&bare_run),
            cpu(&sandboxed),
            cpu(&real),
            cpu(&sandboxed) - cpu(&bare_run),
            cpu(&real) - cpu(&sandboxed),
            kernel(&bare_run),
            kernel(&sandboxed),
            kernel(&real),
        );
    }
}

/// Asserts that the bare-model route and the digits endpoint give the same predictions.
fn check_digits_answers(bare: &str, client: &sandserve_tests::server::Client, body: &Value) {
    let bare_answer: Value = ureq::post(format!("{bare}/bare-model/digits/invocations"))
        .send_json(body)
        .expect("bare-model route answers")
        .body_mut()
        .read_json()
        .expect("bare-model JSON");
    let (status, real_answer) = client.post("/serving-endpoints/digits/invocations", body);
    assert_eq!(status, 200, "{real_answer}");
    assert_eq!(
        bare_answer["predictions"], real_answer["predictions"],
        "the bare-model route and the digits endpoint disagree"
    );
}
