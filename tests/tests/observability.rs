//! Observability end to end over HTTP against the real binary: `/metrics` (who may read
//! it, counters that move with the requests sent, `promtool check metrics`), a tenant's
//! own endpoint's metrics, request ids (kept when sane, generated otherwise, on every
//! response and in the access log, never a token there), the JSON log format, and the
//! per-entity handler and build logs (a tenant never reads another's lines).

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::{example_package, handler_package};
use sandserve_tests::server::{Client, TenantServer, TestServer};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Uploads echo and serves it as endpoint `name` (entity `echo-1`).
fn echo_endpoint(client: &Client, name: &str) {
    let (status, body) = client.upload("echo", &example_package("echo"));
    assert!(status == 201 || status == 200, "{status} {body}");
    let config = json!({"name": name, "config": {"served_entities": [
        {"name": "echo-1", "entity_name": "echo", "entity_version": "1"}
    ]}});
    let (status, body) = client.post("/api/2.0/serving-endpoints", &config);
    assert_eq!(status, 200, "{body}");
    wait_ready(client, name);
}

/// Queries `endpoint` with `n` input tensors under request id `id`; the reply.
fn query(client: &Client, endpoint: &str, n: usize, id: &str) -> sandserve_tests::server::RawReply {
    let inputs: serde_json::Map<String, Value> = (0..n)
        .map(|i| (format!("x{i}"), json!([1.0, 2.0])))
        .collect();
    let body = serde_json::to_vec(&json!({ "inputs": inputs })).unwrap();
    client.post_raw(
        &format!("/serving-endpoints/{endpoint}/invocations"),
        &[("content-type", "application/json"), ("x-request-id", id)],
        &body,
    )
}

/// The value of the one sample of `family` whose labels contain every one of `labels`.
fn sample(text: &str, family: &str, labels: &[&str]) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "one {family} {labels:?} sample in:\n{text}");
    found[0]
}

fn metrics_text(client: &Client, path: &str) -> String {
    let reply = client.get_raw(path, &[]);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    String::from_utf8(reply.body).unwrap()
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install -y prometheus; scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_move_with_requests_and_pass_promtool() {
    let s = TenantServer::start(&[]);
    let admin = s.server.admin();
    echo_endpoint(&s.client, "e");
    let labels = ["tenant=\"acme\"", "endpoint=\"e\"", "entity=\"echo-1\""];
    let before = metrics_text(&admin, "/metrics");
    assert_eq!(
        sample(&before, "nv_inference_request_success_total", &labels),
        0.0
    );
    for i in 0..3 {
        let reply = query(&s.client, "e", 2, &format!("ok-{i}"));
        assert_eq!(reply.status, 200);
    }
    // Not JSON: the handler never runs, the entity counts a client failure.
    let bad = s.client.post_raw(
        "/serving-endpoints/e/invocations",
        &[("content-type", "application/json")],
        b"{not json",
    );
    assert_eq!(bad.status, 400);
    let after = metrics_text(&admin, "/metrics");
    assert_eq!(
        sample(&after, "nv_inference_request_success_total", &labels),
        3.0
    );
    assert_eq!(sample(&after, "nv_inference_count_total", &labels), 3.0);
    let mut failed = labels.to_vec();
    failed.push("status_class=\"4xx\"");
    assert_eq!(
        sample(&after, "nv_inference_request_failure_total", &failed),
        1.0
    );
    assert!(sample(&after, "nv_inference_request_duration_seconds_sum", &labels) > 0.0);
    assert_eq!(
        sample(
            &after,
            "nv_inference_request_duration_seconds_count",
            &labels
        ),
        4.0
    );
    assert_eq!(
        sample(
            &after,
            "nv_inference_compute_infer_duration_seconds_count",
            &labels
        ),
        3.0
    );
    assert_eq!(
        sample(&after, "sandserve_instantiate_seconds_count", &labels),
        3.0
    );
    assert_eq!(
        sample(&after, "sandserve_instances_in_flight", &labels),
        0.0
    );
    assert!(
        sample(&after, "sandserve_upload_bytes_total", &["tenant=\"acme\""]) > 1000.0,
        "the echo package was counted"
    );
    let http_ok = |t: &str| {
        sample(
            t,
            "sandserve_http_requests_total",
            &["status_class=\"2xx\""],
        )
    };
    assert!(http_ok(&after) >= http_ok(&before) + 3.0);
    assert!(sample(&after, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(sample(&after, "process_open_fds", &[]) > 0.0);
    promtool_check(&after);

    // Who may read it: the admin; not a tenant, not anonymous (unless --public-metrics).
    assert_eq!(s.client.get_raw("/metrics", &[]).status, 403);
    let anonymous = Client::new(&s.server.url, "");
    assert_eq!(anonymous.get_raw("/metrics", &[]).status, 401);

    // The tenant's own endpoint: its samples only, in the same format.
    let other = admin.tenant_with_token("other", "CAN_MANAGE");
    let other = s.server.client(&other);
    echo_endpoint(&other, "e");
    assert_eq!(query(&other, "e", 1, "other-1").status, 200);
    let mine = metrics_text(&s.client, "/api/2.0/serving-endpoints/e/metrics");
    assert_eq!(
        sample(&mine, "nv_inference_request_success_total", &labels),
        3.0
    );
    assert!(!mine.contains("tenant=\"other\""), "{mine}");
    assert!(!mine.contains("process_"), "{mine}");
    promtool_check(&mine);
    let theirs = metrics_text(&other, "/api/2.0/serving-endpoints/e/metrics");
    assert!(theirs.contains("tenant=\"other\"") && !theirs.contains("tenant=\"acme\""));
    let (status, body) = s.client.get("/api/2.0/serving-endpoints/nope/metrics");
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
}

#[test]
fn public_metrics_need_no_token() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &["--public-metrics"]);
    let anonymous = Client::new(&server.url, "");
    let text = metrics_text(&anonymous, "/metrics");
    assert!(text.contains("# TYPE process_open_fds gauge"), "{text}");
}

#[test]
fn request_ids_round_trip_and_reach_the_access_log() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_logging(data.path(), &[], "access=info");
    let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let client = server.client(&token);
    // A sane client id comes back as sent.
    let reply = client.get_raw(
        "/api/2.0/serving-endpoints",
        &[("x-request-id", "client-id.1:a_b")],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some("client-id.1:a_b"));
    // None, or one that is not sane, gets a generated UUID.
    let generated = |reply: &sandserve_tests::server::RawReply| {
        let id = reply.header("x-request-id").unwrap().to_string();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.matches('-').count(), 4, "{id}");
        id
    };
    let a = generated(&client.get_raw("/health", &[]));
    let b = generated(&client.get_raw("/health", &[("x-request-id", "has space")]));
    let c = generated(&client.get_raw("/health", &[("x-request-id", &"x".repeat(129))]));
    assert!(a != b && b != c);
    // Errors carry it too.
    let missing = client.get_raw("/no/such/route", &[("x-request-id", "err-1")]);
    assert_eq!(
        (missing.status, missing.header("x-request-id")),
        (404, Some("err-1"))
    );
    // One access line per request, with the tenant and never the token.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = server.log();
        if log.contains("err-1") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let line = log
        .lines()
        .find(|l| l.contains("client-id.1:a_b"))
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    for want in [
        "GET",
        "/api/2.0/serving-endpoints",
        "status=200",
        "latency_us=",
        "tenant=\"acme\"",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("err-1") && l.contains("status=404")),
        "{log}"
    );
    assert!(!log.contains(&token), "a bearer token reached the log");
    assert!(
        !log.contains(sandserve_tests::server::ADMIN_TOKEN),
        "the admin token reached the log"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("answered")).count(),
        7,
        "{log}"
    );
}

#[test]
fn json_logs_have_one_object_per_line_and_no_colours() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_logging(data.path(), &["--log-format", "json"], "info");
    let reply = server
        .admin()
        .get_raw("/api/2.0/tenants", &[("x-request-id", "json-1")]);
    assert_eq!(reply.status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let raw = std::fs::read_to_string(data.path().with_extension("server.log")).unwrap();
    assert!(
        !raw.contains('\u{1b}'),
        "colour codes in a log that is not a terminal"
    );
    let lines: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "json-1")
        .unwrap_or_else(|| panic!("no access line in {raw}"));
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["span"]["tenant"], "admin");
    assert_eq!(access["span"]["path"], "/api/2.0/tenants");
}

#[test]
fn handler_logs_are_kept_per_entity_and_tenant() {
    let s = TenantServer::start(&[]);
    let admin = s.server.admin();
    echo_endpoint(&s.client, "e");
    let other = admin.tenant_with_token("other", "CAN_MANAGE");
    let other = s.server.client(&other);
    echo_endpoint(&other, "e");
    assert_eq!(query(&s.client, "e", 3, "acme-req-1").status, 200);
    assert_eq!(query(&other, "e", 1, "other-req-1").status, 200);

    let logs = |client: &Client, path: &str| {
        let (status, body) = client.get(path);
        assert_eq!(status, 200, "{body}");
        body["logs"].as_str().unwrap().to_string()
    };
    let mine = logs(
        &s.client,
        "/api/2.0/serving-endpoints/e/served-models/echo-1/logs",
    );
    let line = mine
        .lines()
        .find(|l| l.contains("[acme-req-1]"))
        .unwrap_or_else(|| panic!("no line of acme-req-1 in {mine:?}"));
    assert!(
        line.contains(" info [acme-req-1] echoing 3 tensor(s)"),
        "{line}"
    );
    assert!(
        !mine.contains("other-req-1") && !mine.contains("echoing 1 tensor"),
        "{mine}"
    );
    let theirs = logs(
        &other,
        "/api/2.0/serving-endpoints/e/served-models/echo-1/logs",
    );
    assert!(
        theirs.contains("[other-req-1]") && theirs.contains("echoing 1 tensor(s)"),
        "{theirs}"
    );
    assert!(
        !theirs.contains("acme-req-1") && !theirs.contains("echoing 3"),
        "{theirs}"
    );

    let build = logs(
        &s.client,
        "/api/2.0/serving-endpoints/e/served-models/echo-1/build-logs",
    );
    assert!(build.contains("loaded echo version 1"), "{build}");

    // Unknown entity or endpoint: 404; a token below CAN_MANAGE: 403.
    let (status, _) = s
        .client
        .get("/api/2.0/serving-endpoints/e/served-models/nope/logs");
    assert_eq!(status, 404);
    let (status, _) = s
        .client
        .get("/api/2.0/serving-endpoints/nope/served-models/echo-1/logs");
    assert_eq!(status, 404);
    let query_only = admin.token("acme", "CAN_QUERY", &["*"], None);
    let (status, _) = s
        .server
        .client(&query_only)
        .get("/api/2.0/serving-endpoints/e/served-models/echo-1/logs");
    assert_eq!(status, 403);
}

#[test]
fn a_failed_runs_cause_reaches_its_tenants_logs() {
    let s = TenantServer::start(&[]);
    let package = handler_package("broken", "panics", "", &[]);
    assert_eq!(s.client.upload("broken", &package).0, 201);
    let config = json!({"name": "b", "config": {"served_entities": [
        {"name": "broken-1", "entity_name": "broken", "entity_version": "1"}
    ]}});
    assert_eq!(s.client.post("/api/2.0/serving-endpoints", &config).0, 200);
    wait_ready(&s.client, "b");
    let reply = query(&s.client, "b", 1, "boom-1");
    assert_eq!(reply.status, 500);
    let (_, body) = s
        .client
        .get("/api/2.0/serving-endpoints/b/served-models/broken-1/logs");
    let logs = body["logs"].as_str().unwrap();
    assert!(
        logs.lines()
            .any(|l| l.contains(" error [boom-1] request failed: ")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains(" stderr [boom-1] ") && l.contains("panicked")),
        "{logs}"
    );
}

#[test]
fn graph_loads_and_wasi_nn_compute_are_counted() {
    if !sandserve_tests::onnx_available("graph_loads_and_wasi_nn_compute_are_counted") {
        return;
    }
    let s = TenantServer::start(&[]);
    let admin = s.server.admin();
    assert_eq!(s.client.upload("digits", &example_package("digits")).0, 201);
    let config = json!({"name": "d", "config": {"served_entities": [
        {"name": "digits-1", "entity_name": "digits", "entity_version": "1"}
    ]}});
    assert_eq!(s.client.post("/api/2.0/serving-endpoints", &config).0, 200);
    wait_ready(&s.client, "d");
    let before = metrics_text(&admin, "/metrics");
    let loads = sample(&before, "sandserve_graph_loads_total", &["engine=\"onnx\""]);
    assert!(loads >= 1.0, "{before}");
    let row: Vec<f32> = (0..64).map(|i| (i % 16) as f32).collect();
    let (status, reply) = s.client.post(
        "/serving-endpoints/d/invocations",
        &json!({"inputs": {"images": [row.clone(), row]}}),
    );
    assert_eq!(status, 200, "{reply}");
    let after = metrics_text(&admin, "/metrics");
    let computes = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("sandserve_wasi_nn_compute_seconds_count"))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    assert!(computes(&after) >= computes(&before) + 1.0, "{after}");
    promtool_check(&after);
}
