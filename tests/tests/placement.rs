//! Where requests run, against the real binary: every request gets a fresh sandbox
//! (instantiated ahead or not); small requests of a proven-fast entity run inline on an
//! idle server; one that passes the inline budget runs again on a guest thread
//! and still answers correctly, without holding up other requests; its entity is then
//! demoted; large inputs never run inline. The server's debug log names each request's
//! placement.

#![allow(clippy::unwrap_used)]

use sandserve_tests::packages::handler_package;
use sandserve_tests::server::{Client, TenantServer, TestServer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOG_FILTER: &str = "error,sandserve_host::serving=debug";
/// Counts any run under 10 ms as fast, so that a slow (debug) build on a busy machine
/// places requests the same way as a release build does with the 1 ms default.
const FLAGS: [&str; 2] = ["--inline-max-run-us", "10000"];

fn wait_ready(client: &Client, endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = client.get(&format!("/api/2.0/serving-endpoints/{endpoint}"));
        assert_eq!(status, 200, "{body}");
        if body["state"]["ready"] == "READY" && body["state"]["config_update"] == "NOT_UPDATING" {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Placements of the `request served` log lines, in order.
fn placements(server: &TestServer) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains("request served"))
        .filter_map(|l| {
            let rest = &l[l.find("placement=\"")? + "placement=\"".len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// Waits until the server has logged `n` served requests (the line follows the reply).
fn served(server: &TestServer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = placements(server);
        if seen.len() >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server (with `flags`, logging placements) serving the `slow-on-request` fixture,
/// with `manifest_extra` in its manifest, behind endpoint `slow`.
fn setup(flags: &[&str], manifest_extra: &str) -> TenantServer {
    let setup = TenantServer::start_logging(flags, LOG_FILTER);
    let client = &setup.client;
    let package = handler_package("slow", "slow-on-request", manifest_extra, &[]);
    assert_eq!(client.upload("slow", &package).0, 201);
    let (status, reply) = client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "slow", "config": {"served_entities": [
            {"entity_name": "slow", "entity_version": "1"}
        ]}}),
    );
    assert_eq!(status, 200, "{reply}");
    wait_ready(client, "slow");
    setup
}

#[test]
fn placement_follows_speed_load_and_size() {
    let TenantServer {
        server,
        token,
        client,
        ..
    } = setup(&FLAGS, "[limits]\ntimeout_ms = 5000\n");
    let path = "/serving-endpoints/slow/invocations";
    let small = json!({"inputs": {"x": [[1.0, 2.0, 3.0]]}});
    // Every request gets a fresh sandbox (spare or not): the instance's call count is 1.
    let expect_echo = |reply: &Value, row: &Value| {
        assert_eq!(
            reply["predictions"],
            json!([{"x": row, "calls": 1}]),
            "{reply}"
        );
    };

    // The first request proves the entity fast (it runs on a guest thread); the next
    // ones, sent one at a time, run inline.
    for _ in 0..3 {
        let (status, reply) = client.post(path, &small);
        assert_eq!(status, 200, "{reply}");
        expect_echo(&reply, &json!([1.0, 2.0, 3.0]));
    }
    let seen = served(&server, 3);
    assert_eq!(seen, ["guest-thread", "inline", "inline"], "{seen:?}");

    // A request that spins past the inline budget is stopped and run again on a guest
    // thread; meanwhile the server answers other requests.
    let finished = Arc::new(AtomicBool::new(false));
    let slow = {
        let (client, finished) = (server.client(&token), finished.clone());
        std::thread::spawn(move || {
            let reply = client.post(
                path,
                &json!({"inputs": {"x": [[4.0, 5.0]]}, "params": {"spin_ms": 1500}}),
            );
            finished.store(true, Ordering::SeqCst);
            reply
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (status, health) = server.admin().get("/health");
    assert_eq!(status, 200, "{health}");
    let (status, reply) = client.post(path, &small);
    assert_eq!(status, 200, "{reply}");
    expect_echo(&reply, &json!([1.0, 2.0, 3.0]));
    assert!(
        !finished.load(Ordering::SeqCst),
        "the other requests should have been answered while the slow one ran"
    );
    let (status, reply) = slow.join().unwrap();
    assert_eq!(status, 200, "{reply}");
    expect_echo(&reply, &json!([4.0, 5.0]));
    let seen = served(&server, 5);
    assert_eq!(seen.len(), 5, "{seen:?}");
    // The concurrent small request saw another request in a sandbox: guest thread.
    assert_eq!(seen[3], "guest-thread", "{seen:?}");
    assert_eq!(seen[4], "inline-then-guest-thread", "{seen:?}");

    // The entity is demoted: even alone and fast, its requests stay on guest threads.
    let (status, reply) = client.post(path, &small);
    assert_eq!(status, 200, "{reply}");
    expect_echo(&reply, &json!([1.0, 2.0, 3.0]));
    assert_eq!(served(&server, 6)[5], "guest-thread");
}

#[test]
fn large_inputs_never_run_inline() {
    let TenantServer { server, client, .. } = setup(&FLAGS, "");
    let path = "/serving-endpoints/slow/invocations";
    for _ in 0..2 {
        let (status, reply) = client.post(path, &json!({"inputs": {"x": [[1.0]]}}));
        assert_eq!(status, 200, "{reply}");
    }
    // 20,000 FP32 values = 80,000 bytes, past the 64 KiB inline limit.
    let row: Vec<f32> = (0..20_000).map(|i| i as f32).collect();
    let (status, reply) = client.post(path, &json!({"inputs": {"x": [row]}}));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["predictions"][0]["x"].as_array().map(Vec::len),
        Some(20_000)
    );
    assert_eq!(reply["predictions"][0]["calls"], 1, "a fresh sandbox");
    let seen = served(&server, 3);
    assert_eq!(seen, ["guest-thread", "inline", "guest-thread"], "{seen:?}");
}

#[test]
fn inline_runs_can_be_turned_off() {
    let TenantServer { server, client, .. } = setup(&["--inline-max-run-us", "0"], "");
    for _ in 0..3 {
        let (status, reply) = client.post(
            "/serving-endpoints/slow/invocations",
            &json!({"inputs": {"x": [[1.0]]}}),
        );
        assert_eq!(status, 200, "{reply}");
    }
    let seen = served(&server, 3);
    assert_eq!(seen, ["guest-thread"; 3], "{seen:?}");
}

/// KServe V2 on a model name that no endpoint has runs the model version through a served
/// entity of its own: the same placement, fresh sandboxes, the manifest's concurrency limit
/// with fast refusals past it, and deleting the version releases it.
#[test]
fn a_model_queried_directly_gets_placement_admission_and_release() {
    let setup = TenantServer::start_logging(&FLAGS, LOG_FILTER);
    let TenantServer { server, client, .. } = &setup;
    let package = handler_package(
        "slow",
        "slow-on-request",
        "[limits]\nmax_concurrency = 1\ntimeout_ms = 5000\n",
        &[],
    );
    assert_eq!(client.upload("slow", &package).0, 201);
    let path = "/v2/models/slow/infer";
    let request = |spin_ms: u64| {
        json!({
            "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}],
            "parameters": {"spin_ms": spin_ms},
        })
    };
    for _ in 0..3 {
        let (status, reply) = client.post(path, &request(0));
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["model_version"], "1", "{reply}");
        let calls = reply["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "calls")
            .unwrap();
        assert_eq!(calls["data"], json!([1]), "a fresh sandbox: {reply}");
    }
    let seen = served(server, 3);
    // The first run proves the entity fast; the next ones start inline. On a loaded machine
    // an inline run of even this handler can pass the 10 ms inline budget and finish on a
    // guest thread ("inline-then-guest-thread"): still the inline path, taken as designed.
    assert_eq!(seen[0], "guest-thread", "{seen:?}");
    assert!(
        seen[1..].iter().all(|p| p.starts_with("inline")),
        "{seen:?}"
    );

    // max_concurrency 1 and a queue of 2: of 8 requests sent at once, those past the
    // three that fit are refused at once with 429 and Retry-After.
    let results: Vec<(u16, Duration, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let started = Instant::now();
                    let response = ureq::post(format!("{}{path}", server.url))
                        .header("Authorization", &format!("Bearer {}", setup.token))
                        .config()
                        .http_status_as_error(false)
                        .build()
                        .send_json(request(400))
                        .unwrap();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (response.status().as_u16(), started.elapsed(), retry_after)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served_ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(served_ok >= 1, "{results:?}");
    assert!(refused.len() >= 4, "{results:?}");
    assert_eq!(served_ok + refused.len(), 8, "{results:?}");
    for (_, took, retry_after) in &refused {
        assert!(retry_after.is_some(), "{results:?}");
        assert!(
            *took < Duration::from_millis(350),
            "refused fast: {results:?}"
        );
    }

    // Deleting the version releases it: the next direct query of that version (which the
    // server holds loaded) finds no model.
    assert_eq!(client.delete("/api/2.0/models/slow/versions/1").0, 200);
    let (status, reply) = client.post("/v2/models/slow/versions/1/infer", &request(0));
    assert_eq!(
        (status, reply["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST")),
        "{reply}"
    );
}

/// A handler that writes to stdout / stderr (blocking WASI calls, which cannot run on an
/// async worker) while the server would run it inline: the request is answered from a
/// guest thread, and the entity stays on guest threads.
#[test]
fn a_handler_that_prints_is_answered_and_stays_on_guest_threads() {
    let TenantServer { server, client, .. } = setup(&FLAGS, "");
    let path = "/serving-endpoints/slow/invocations";
    let plain = json!({"inputs": {"x": [[1.0, 2.0]]}});
    let printing = json!({"inputs": {"x": [[1.0, 2.0]]}, "params": {"print": true}});
    let answered = |body: &serde_json::Value| {
        let (status, reply) = client.post(path, body);
        assert_eq!(status, 200, "{reply}");
        assert_eq!(
            reply["predictions"],
            json!([{"x": [1.0, 2.0], "calls": 1}]),
            "{reply}"
        );
    };
    // The first run proves the entity fast; on a loaded machine a debug build's first runs
    // can take longer than the proof allows (CI saw it once), so plain requests go until
    // one runs inline.
    let mut sent = 0;
    loop {
        answered(&plain);
        sent += 1;
        let seen = served(&server, sent);
        if seen.last().map(String::as_str) == Some("inline") {
            break;
        }
        assert!(sent < 6, "no plain request ran inline: {seen:?}");
    }
    answered(&printing);
    answered(&plain);
    let seen = served(&server, sent + 2);
    assert_eq!(
        seen[sent..],
        ["inline-then-guest-thread", "guest-thread"],
        "{seen:?}"
    );
}
