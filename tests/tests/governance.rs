//! Governance end to end over HTTP against the real binary: AI gateway rate limits (per
//! endpoint, per user, the stricter applying; 429 with Retry-After), usage (sums equal the
//! requests sent; fuel grows with the work asked for; CSV export), inference tables
//! (sampled at the configured fraction, payloads truncated and marked, JSONL export,
//! surviving a restart), the audit log of a scripted series of control-plane calls, and
//! tenant quotas (endpoints, image bytes, concurrent requests).

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::{example_package, handler_package};
use sandserve_tests::server::{Client, RawReply, TenantServer, TestServer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn ready(client: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = client.get(&format!("/api/2.0/serving-endpoints/{name}"));
        if body["state"]["ready"] == "READY" && body["state"]["config_update"] == "NOT_UPDATING" {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates endpoint `name` serving version 1 of `model`, with `extra` fields in the body.
fn endpoint(client: &Client, name: &str, model: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "config": {"served_entities": [
        {"name": format!("{model}-1"), "entity_name": model, "entity_version": "1"}]}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, reply) = client.post("/api/2.0/serving-endpoints", &body);
    assert_eq!(status, 200, "{reply}");
    ready(client, name);
    reply
}

fn invoke(client: &Client, name: &str, body: &Value, headers: &[(&str, &str)]) -> RawReply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    client.post_raw(
        &format!("/serving-endpoints/{name}/invocations"),
        &all,
        body.to_string().as_bytes(),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn small_query() -> Value {
    json!({"inputs": {"x": [1.0, 2.0, 3.0]}})
}

/// Asserts a refusal by a rate limit: 429, `Retry-After` in 1..=60, the JSON error body.
fn assert_rate_limited(reply: &RawReply, key: &str) {
    assert_eq!(
        reply.status,
        429,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body = reply.json();
    assert_eq!(body["error_code"], "REQUEST_LIMIT_EXCEEDED", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&format!("per {key}")), "{message}");
}

#[test]
fn rate_limits_admit_n_per_minute_per_endpoint_and_per_user() {
    let s = TenantServer::start(&[]);
    assert_eq!(s.client.upload("echo", &example_package("echo")).0, 201);
    endpoint(&s.client, "ep", "echo", json!({}));
    let (status, reply) = s.client.put(
        "/api/2.0/serving-endpoints/ep/ai-gateway",
        &json!({"rate_limits": [{"calls": 5, "key": "endpoint", "renewal_period": "minute"}]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["rate_limits"],
        json!([{"calls": 5, "key": "endpoint", "renewal_period": "minute"}])
    );
    assert_eq!(reply["fallback_config"]["enabled"], false, "{reply}");
    let (_, got) = s.client.get("/api/2.0/serving-endpoints/ep");
    assert_eq!(got["ai_gateway"]["rate_limits"][0]["calls"], 5, "{got}");

    let admin = s.server.admin();
    let other = s
        .server
        .client(&admin.token("acme", "CAN_QUERY", &["*"], None));
    for i in 0..5 {
        let who = if i % 2 == 0 { &s.client } else { &other };
        let reply = invoke(who, "ep", &small_query(), &[]);
        assert_eq!(reply.status, 200, "call {i}");
    }
    // The endpoint's five are used up, whoever calls.
    assert_rate_limited(&invoke(&s.client, "ep", &small_query(), &[]), "endpoint");
    assert_rate_limited(&invoke(&other, "ep", &small_query(), &[]), "endpoint");

    // Per user, through Databricks' older route: each token has its own three.
    let (status, reply) = s.client.put(
        "/api/2.0/serving-endpoints/ep/rate-limits",
        &json!({"rate_limits": [{"calls": 3, "key": "user", "renewal_period": "minute"}]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"rate_limits": [{"calls": 3, "key": "user", "renewal_period": "minute"}]})
    );
    for who in [&s.client, &other] {
        for _ in 0..3 {
            assert_eq!(invoke(who, "ep", &small_query(), &[]).status, 200);
        }
        assert_rate_limited(&invoke(who, "ep", &small_query(), &[]), "user");
    }

    // Both at once: the stricter applies (user 3, endpoint 4: the second token gets one;
    // a call refused by the caller's own limit does not spend the endpoint's).
    let (status, reply) = s.client.put(
        "/api/2.0/serving-endpoints/ep/ai-gateway",
        &json!({"rate_limits": [
            {"calls": 4, "key": "endpoint", "renewal_period": "minute"},
            {"calls": 3, "key": "user", "renewal_period": "minute"}]}),
    );
    assert_eq!(status, 200, "{reply}");
    for _ in 0..3 {
        assert_eq!(invoke(&s.client, "ep", &small_query(), &[]).status, 200);
    }
    assert_rate_limited(&invoke(&s.client, "ep", &small_query(), &[]), "user");
    assert_eq!(invoke(&other, "ep", &small_query(), &[]).status, 200);
    assert_rate_limited(&invoke(&other, "ep", &small_query(), &[]), "endpoint");

    // Turning the gateway off lifts the limits; bad limits are refused by name.
    let (status, _) = s
        .client
        .put("/api/2.0/serving-endpoints/ep/ai-gateway", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(invoke(&s.client, "ep", &small_query(), &[]).status, 200);
    let (status, reply) = s.client.put(
        "/api/2.0/serving-endpoints/ep/ai-gateway",
        &json!({"rate_limits": [{"calls": 1, "renewal_period": "hour"}]}),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("rate_limits"),
        "{reply}"
    );
    let (status, _) = s.client.put(
        "/api/2.0/serving-endpoints/nope/rate-limits",
        &json!({"rate_limits": []}),
    );
    assert_eq!(status, 404);
}

fn usage_rows(client: &Client, query: &str) -> Vec<Value> {
    let (status, body) = client.get(&format!("/api/2.0/usage{query}"));
    assert_eq!(status, 200, "{body}");
    body["usage"].as_array().unwrap().clone()
}

fn sum(rows: &[Value], field: &str) -> u64 {
    rows.iter().map(|r| r[field].as_u64().unwrap()).sum()
}

#[test]
fn usage_sums_equal_the_requests_sent_and_fuel_grows_with_work() {
    let s = TenantServer::start(&["--fuel-metering"]);
    let slow = handler_package(
        "slow",
        "slow-on-request",
        "[limits]\ntimeout_ms = 20000\n",
        &[],
    );
    assert_eq!(s.client.upload("slow", &slow).0, 201);
    let tracked = json!({"ai_gateway": {"usage_tracking_config": {"enabled": true}}});
    endpoint(&s.client, "light", "slow", tracked.clone());
    endpoint(&s.client, "heavy", "slow", tracked);
    endpoint(&s.client, "untracked", "slow", json!({}));

    let (mut sent_in, mut sent_out) = (0u64, 0u64);
    for i in 0..6 {
        let body = json!({"inputs": {"x": vec![1.0; i + 1]}});
        let reply = invoke(&s.client, "light", &body, &[]);
        assert_eq!(reply.status, 200);
        sent_in += body.to_string().len() as u64;
        sent_out += reply.body.len() as u64;
    }
    // Two errors: a body the codec refuses.
    for _ in 0..2 {
        let body = json!({"inputs": {"x": [1.0]}, "surprise": 1});
        assert_eq!(invoke(&s.client, "light", &body, &[]).status, 400);
        sent_in += body.to_string().len() as u64;
    }
    let heavy = json!({"inputs": {"x": [1.0]}, "params": {"spin_ms": 40}});
    for _ in 0..2 {
        assert_eq!(invoke(&s.client, "heavy", &heavy, &[]).status, 200);
    }
    assert_eq!(
        invoke(&s.client, "untracked", &small_query(), &[]).status,
        200
    );

    let light = usage_rows(&s.client, "?endpoint=light");
    assert_eq!(sum(&light, "requests"), 8, "{light:?}");
    assert_eq!(sum(&light, "errors"), 2);
    assert_eq!(sum(&light, "input_bytes"), sent_in);
    assert_eq!(sum(&light, "output_bytes"), sent_out);
    assert!(light
        .iter()
        .all(|r| r["served_entity"] == "slow-1" && r["tenant"] == "acme"));
    // Fuel was measured on the six answered tries (the refused bodies never ran).
    assert_eq!(sum(&light, "fuel_measured"), 6);
    let light_fuel = sum(&light, "fuel") / 6;
    let heavy_rows = usage_rows(&s.client, "?endpoint=heavy");
    assert_eq!(sum(&heavy_rows, "requests"), 2);
    let heavy_fuel = sum(&heavy_rows, "fuel") / 2;
    assert!(light_fuel > 0, "{light:?}");
    assert!(
        heavy_fuel > 10 * light_fuel,
        "heavy {heavy_fuel} vs light {light_fuel}"
    );
    assert!(sum(&heavy_rows, "wall_time_us") >= 2 * 40_000);
    assert!(usage_rows(&s.client, "?endpoint=untracked").is_empty());
    // The time range bounds the rows.
    assert!(usage_rows(&s.client, "?from=0&to=1000").is_empty());

    // CSV export, by Accept or by format=csv.
    for (path, headers) in [
        (
            "/api/2.0/usage?endpoint=light",
            vec![("accept", "text/csv")],
        ),
        ("/api/2.0/usage?endpoint=light&format=csv", vec![]),
    ] {
        let reply = s.client.get_raw(path, &headers);
        assert_eq!(reply.status, 200);
        assert!(reply
            .header("content-type")
            .unwrap()
            .starts_with("text/csv"));
        let text = String::from_utf8(reply.body).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let requests: u64 = lines
            .map(|l| {
                l.split(',')
                    .nth(at("requests"))
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(requests, 8, "{text}");
    }

    // Another tenant sees none of it; the admin sees it, for one tenant or all.
    let admin = s.server.admin();
    let other = s
        .server
        .client(&admin.tenant_with_token("globex", "CAN_MANAGE"));
    assert!(usage_rows(&other, "").is_empty());
    assert_eq!(other.get("/api/2.0/usage?tenant=acme").0, 403);
    assert_eq!(sum(&usage_rows(&admin, "?tenant=acme"), "requests"), 10);
    assert_eq!(sum(&usage_rows(&admin, "?tenant=globex"), "requests"), 0);
    assert_eq!(s.client.get("/api/2.0/usage?bogus=1").0, 400);
}

fn table_rows(client: &Client, name: &str) -> Vec<Value> {
    let reply = client.get_raw(
        &format!("/api/2.0/serving-endpoints/{name}/inference-table?format=jsonl&limit=10000"),
        &[],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let text = String::from_utf8(reply.body).unwrap();
    // Valid JSON Lines: every line one JSON object.
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

#[test]
fn inference_tables_sample_truncate_export_and_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let args = ["--inference-table-payload-kib", "1"];
    let server = TestServer::start(data.path(), &args);
    let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let client = server.client(&token);
    assert_eq!(client.upload("echo", &example_package("echo")).0, 201);
    endpoint(
        &client,
        "all",
        "echo",
        json!({"config": {"served_entities": [{"name": "echo-1", "entity_name": "echo",
            "entity_version": "1"}], "auto_capture_config": {"enabled": true,
            "catalog_name": "main", "schema_name": "logs"}}}),
    );
    let (_, got) = client.get("/api/2.0/serving-endpoints/all");
    assert_eq!(
        got["ai_gateway"]["inference_table_config"],
        json!({"enabled": true, "catalog_name": "main", "schema_name": "logs"}),
        "{got}"
    );
    endpoint(&client, "half", "echo", json!({}));
    let (status, reply) = client.put(
        "/api/2.0/serving-endpoints/half/ai-gateway",
        &json!({"inference_table_config": {"enabled": true, "sampling_fraction": 0.5}}),
    );
    assert_eq!(status, 200, "{reply}");

    // Every query of `all`: answered, refused, large; with request ids.
    let started = now_ms();
    let ok = json!({"inputs": {"x": [1.0, 2.0]}, "client_request_id": "c-ok"});
    let reply = invoke(&client, "all", &ok, &[("x-request-id", "r-ok")]);
    assert_eq!(reply.status, 200);
    let answer = String::from_utf8(reply.body).unwrap();
    let bad = json!({"inputs": {"x": [1.0]}, "nonsense": true});
    assert_eq!(invoke(&client, "all", &bad, &[]).status, 400);
    let big = json!({"inputs": {"x": vec![0.5; 2000]}, "client_request_id": "c-big"});
    assert_eq!(invoke(&client, "all", &big, &[]).status, 200);
    let rows = table_rows(&client, "all");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["client_request_id"], "c-ok");
    assert_eq!(rows[0]["request_id"], "r-ok");
    assert_eq!(rows[0]["status_code"], 200);
    assert_eq!(rows[0]["served_entity_name"], "echo-1");
    assert_eq!(rows[0]["request"], ok.to_string());
    assert_eq!(rows[0]["response"], answer);
    assert_eq!(rows[0]["request_truncated"], false);
    assert!(rows[0]["timestamp_ms"].as_u64().unwrap() >= started);
    assert!(rows[0]["execution_time_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(rows[1]["status_code"], 400);
    assert!(
        rows[1]["error"].as_str().unwrap().contains("nonsense"),
        "{}",
        rows[1]
    );
    assert_eq!(rows[1]["response"], Value::Null);
    // No `x-request-id` sent: the server made one (tower-http) and recorded it.
    assert!(
        rows[1]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{}",
        rows[1]
    );
    assert_eq!(rows[2]["request_truncated"], true);
    assert_eq!(rows[2]["request"].as_str().unwrap().len(), 1024);
    assert_eq!(rows[2]["response_truncated"], true);

    // 400 queries at 0.5: the count is Binomial(400, 0.5), mean 200, sd 10; 5 sd each way
    // (150..=250) fails by chance about once in 1.7 million runs.
    let mut sent = HashMap::new();
    for i in 0..400 {
        let body = json!({"inputs": {"x": [i as f64]}, "client_request_id": format!("q{i}")});
        assert_eq!(invoke(&client, "half", &body, &[]).status, 200);
        sent.insert(format!("q{i}"), body.to_string());
    }
    let rows = table_rows(&client, "half");
    assert!(
        (150..=250).contains(&rows.len()),
        "{} rows of 400",
        rows.len()
    );
    let mut seen = std::collections::HashSet::new();
    for row in &rows {
        let id = row["client_request_id"].as_str().unwrap();
        assert_eq!(
            row["request"].as_str(),
            sent.get(id).map(String::as_str),
            "{row}"
        );
        assert!(seen.insert(id.to_string()), "{id} twice");
    }
    // The JSON form and a time range.
    let (status, body) = client.get("/api/2.0/serving-endpoints/half/inference-table?limit=5");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"].as_array().unwrap().len(), 5);
    assert_eq!(body["truncated"], true);
    assert_eq!(body["dropped_rows"], 0);
    let (_, none) = client.get("/api/2.0/serving-endpoints/half/inference-table?from=0&to=1000");
    assert_eq!(none["rows"], json!([]));
    // Another tenant cannot read it.
    let other = server.client(&server.admin().tenant_with_token("globex", "CAN_MANAGE"));
    assert_eq!(
        other
            .get("/api/2.0/serving-endpoints/half/inference-table")
            .0,
        404
    );

    // After a restart: the rows are still there, and the tables still capture.
    server.stop();
    let server = TestServer::start(data.path(), &args);
    let client = server.client(&token);
    assert_eq!(table_rows(&client, "half"), rows);
    ready(&client, "all");
    assert_eq!(invoke(&client, "all", &ok, &[]).status, 200);
    assert_eq!(table_rows(&client, "all").len(), 4);

    // Deleting the endpoint deletes its table and gateway: created again, it has neither.
    assert_eq!(client.delete("/api/2.0/serving-endpoints/all").0, 200);
    endpoint(&client, "all", "echo", json!({}));
    assert!(table_rows(&client, "all").is_empty());
    let (_, got) = client.get("/api/2.0/serving-endpoints/all");
    assert_eq!(
        got["ai_gateway"],
        json!({"rate_limits": [], "fallback_config": {"enabled": false}})
    );
}

#[test]
fn the_audit_log_holds_each_control_plane_action() {
    let s = TenantServer::start(&[]);
    let admin = s.server.admin();
    std::thread::sleep(Duration::from_millis(5));
    let started = now_ms();
    // The scripted series: (client, method, path, body, expected status).
    assert_eq!(s.client.upload("echo", &example_package("echo")).0, 201);
    endpoint(&s.client, "ep", "echo", json!({}));
    assert_eq!(
        s.client
            .put(
                "/api/2.0/serving-endpoints/ep/ai-gateway",
                &json!({"usage_tracking_config": {"enabled": true}})
            )
            .0,
        200
    );
    assert_eq!(
        s.client
            .patch(
                "/api/2.0/serving-endpoints/ep/tags",
                &json!({"add_tags": [{"key": "a"}]})
            )
            .0,
        200
    );
    assert_eq!(
        admin
            .put("/api/2.0/tenants/acme/quotas", &json!({"max_endpoints": 5}))
            .0,
        200
    );
    assert_eq!(s.client.delete("/api/2.0/serving-endpoints/nope").0, 404);
    assert_eq!(s.client.delete("/api/2.0/serving-endpoints/ep").0, 200);
    // Queries and reads are not control-plane actions.
    assert_eq!(s.client.get("/api/2.0/serving-endpoints").0, 200);

    let (status, body) = admin.get(&format!("/api/2.0/audit?from={started}"));
    assert_eq!(status, 200, "{body}");
    let entries: Vec<(String, String, u64, String)> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The tenant's token id (the secret is `<prefix><token id>...`, never logged).
    let tenant_actor = body["entries"][0]["actor"].as_str().unwrap().to_string();
    assert_eq!(tenant_actor.len(), 16, "{body}");
    assert!(
        !body.to_string().contains(&s.token),
        "the audit log holds no secret"
    );
    let expected = [
        ("POST", "/api/2.0/models/echo/versions", 201),
        ("POST", "/api/2.0/serving-endpoints", 200),
        ("PUT", "/api/2.0/serving-endpoints/ep/ai-gateway", 200),
        ("PATCH", "/api/2.0/serving-endpoints/ep/tags", 200),
        ("PUT", "/api/2.0/tenants/acme/quotas", 200),
        ("DELETE", "/api/2.0/serving-endpoints/nope", 404),
        ("DELETE", "/api/2.0/serving-endpoints/ep", 200),
    ];
    let got: Vec<(&str, &str, u64)> = entries
        .iter()
        .map(|(m, p, st, _)| (m.as_str(), p.as_str(), *st))
        .collect();
    assert_eq!(got, expected, "{body}");
    for (i, (_, _, _, actor)) in entries.iter().enumerate() {
        let want = if i == 4 {
            "admin"
        } else {
            tenant_actor.as_str()
        };
        assert_eq!(actor, want, "{body}");
    }
    assert_eq!(body["entries"][0]["tenant"], "acme");
    // Only the admin reads it.
    assert_eq!(s.client.get("/api/2.0/audit").0, 403);
}

#[test]
fn tenant_quotas_limit_endpoints_image_bytes_and_concurrent_requests() {
    let s = TenantServer::start(&[]);
    let admin = s.server.admin();
    let slow = handler_package(
        "slow",
        "slow-on-request",
        "[limits]\ntimeout_ms = 20000\n",
        &[],
    );
    assert_eq!(s.client.upload("slow", &slow).0, 201);
    let (status, body) = admin.put(
        "/api/2.0/tenants/acme/quotas",
        &json!({"max_endpoints": 1, "max_image_bytes": slow.len() as u64 + 10,
            "max_concurrent_requests": 1}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        admin.get("/api/2.0/tenants/acme/quotas").1["max_endpoints"],
        1
    );
    assert_eq!(s.client.get("/api/2.0/tenants/acme/quotas").0, 403);
    assert_eq!(admin.put("/api/2.0/tenants/nope/quotas", &json!({})).0, 404);
    assert_eq!(
        admin
            .put("/api/2.0/tenants/acme/quotas", &json!({"max_cpus": 1}))
            .0,
        400
    );

    // Endpoints: one, not two.
    endpoint(&s.client, "one", "slow", json!({}));
    let (status, body) = s.client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "two", "config": {"served_entities": [
            {"entity_name": "slow", "entity_version": "1"}]}}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_code"], "RESOURCE_EXHAUSTED");

    // Image bytes: a second copy does not fit.
    let (status, body) = s.client.upload("slow2", &slow);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("quota"),
        "{body}"
    );

    // Concurrent requests: one runs, a second at the same time is 429 with Retry-After.
    let url = s.server.url.clone();
    let token = s.token.clone();
    let long = std::thread::spawn(move || {
        let c = Client::new(&url, &token);
        invoke(
            &c,
            "one",
            &json!({"inputs": {"x": [1.0]}, "params": {"sleep_ms": 1500}}),
            &[],
        )
        .status
    });
    std::thread::sleep(Duration::from_millis(500));
    let refused = invoke(&s.client, "one", &small_query(), &[]);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("concurrent"));
    assert_eq!(long.join().unwrap(), 200);
    assert_eq!(invoke(&s.client, "one", &small_query(), &[]).status, 200);

    // Lifting the quotas lifts the limits.
    assert_eq!(admin.put("/api/2.0/tenants/acme/quotas", &json!({})).0, 200);
    endpoint(&s.client, "two", "slow", json!({}));
}
