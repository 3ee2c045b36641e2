//! Databricks' serving-endpoints API as its clients send it, end to end against the real
//! binary: every Databricks field sandserve does not implement is refused with a 400 that
//! names it (and the harmless values are accepted), `config.name`, trailing slashes on every
//! route, tags, opaque ids, epoch-millisecond timestamps, the permissions mapping onto
//! tokens, the OpenAPI document and the well-known config. (The Python suite in
//! tests/compat drives the same routes through databricks-sdk and MLflow.)

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::example_package;
use sandserve_tests::server::{Client, TenantServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ready(client: &Client, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = client.get(&format!("/api/2.0/serving-endpoints/{name}"));
        assert_eq!(status, 200, "{body}");
        if body["state"]["ready"] == "READY" && body["state"]["config_update"] == "NOT_UPDATING" {
            return body;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn echo_server() -> TenantServer {
    let s = TenantServer::start(&[]);
    assert_eq!(s.client.upload("echo", &example_package("echo")).0, 201);
    s
}

fn echo_config(extra: Value) -> Value {
    let mut entity = json!({"entity_name": "echo", "entity_version": "1"});
    for (k, v) in extra.as_object().unwrap() {
        entity[k] = v.clone();
    }
    json!({"served_entities": [entity]})
}

/// (path of the field in the body, the create body).
fn refused_creates() -> Vec<(&'static str, Value)> {
    let with = |field: &str, value: Value| {
        let mut body = json!({"name": "ep", "config": echo_config(json!({}))});
        body[field] = value;
        body
    };
    let entity = |field: &str, value: Value| json!({"name": "ep", "config": echo_config(json!({ field: value }))});
    let config = |field: &str, value: Value| {
        let mut body = json!({"name": "ep", "config": echo_config(json!({}))});
        body["config"][field] = value;
        body
    };
    let gateway = |field: &str, value: Value| with("ai_gateway", json!({ field: value }));
    vec![
        ("budget_policy_id", with("budget_policy_id", json!("p1"))),
        (
            "email_notifications",
            with(
                "email_notifications",
                json!({"on_update_failure": ["a@b.c"]}),
            ),
        ),
        (
            "telemetry_config",
            with("telemetry_config", json!({"telemetry_profile_id": "x"})),
        ),
        ("route_optimized", with("route_optimized", json!(true))),
        ("config.name", config("name", json!("not-ep"))),
        (
            "config.served_entities[0].burst_scaling_enabled",
            entity("burst_scaling_enabled", json!(true)),
        ),
        (
            "config.served_entities[0].environment_vars",
            entity("environment_vars", json!({"A": "1"})),
        ),
        (
            "config.served_entities[0].external_model",
            entity(
                "external_model",
                json!({"name": "gpt", "provider": "openai"}),
            ),
        ),
        (
            "config.served_entities[0].instance_profile_arn",
            entity("instance_profile_arn", json!("arn:x")),
        ),
        (
            "config.served_entities[0].max_provisioned_throughput",
            entity("max_provisioned_throughput", json!(100)),
        ),
        (
            "config.served_entities[0].min_provisioned_throughput",
            entity("min_provisioned_throughput", json!(0)),
        ),
        (
            "config.served_entities[0].provisioned_model_units",
            entity("provisioned_model_units", json!(1)),
        ),
        (
            "config.served_entities[0].scale_to_zero_enabled",
            entity("scale_to_zero_enabled", json!(true)),
        ),
        (
            "config.served_entities[0].workload_type",
            entity("workload_type", json!("GPU_SMALL")),
        ),
        (
            "config.served_entities[0].workload_size",
            entity("workload_size", json!("Huge")),
        ),
        (
            "config.served_entities[0].min_provisioned_concurrency",
            entity("min_provisioned_concurrency", json!(8))
                .tap(|b| b["config"]["served_entities"][0]["max_concurrency"] = json!(4)),
        ),
        (
            "ai_gateway.guardrails",
            gateway(
                "guardrails",
                json!({"input": {"pii": {"behavior": "BLOCK"}}}),
            ),
        ),
        (
            "config.served_models[0].environment_vars",
            json!({"name": "ep", "config": {"served_models": [
            {"model_name": "echo", "model_version": "1", "scale_to_zero_enabled": false, "environment_vars": {"A": "1"}}]}}),
        ),
    ]
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}
impl Tap for Value {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[test]
fn every_unimplemented_databricks_field_is_refused_by_name() {
    let s = echo_server();
    for (field, body) in refused_creates() {
        let (status, reply) = s.client.post("/api/2.0/serving-endpoints", &body);
        assert_eq!(status, 400, "{field}: {reply}");
        assert_eq!(
            reply["error_code"], "INVALID_PARAMETER_VALUE",
            "{field}: {reply}"
        );
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`")),
            "{field}: {message}"
        );
    }
    // Nothing was created by any of them.
    let (_, list) = s.client.get("/api/2.0/serving-endpoints");
    assert_eq!(list["endpoints"], json!([]));

    // The same fields on the update and AI gateway routes.
    let created = s.client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "ep", "config": echo_config(json!({}))}),
    );
    assert_eq!(created.0, 200, "{}", created.1);
    ready(&s.client, "ep");
    let (status, reply) = s.client.put(
        "/api/2.0/serving-endpoints/ep/config",
        &echo_config(json!({"environment_vars": {"A": "1"}})),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("`served_entities[0].environment_vars`"),
        "{reply}"
    );
    let (status, reply) = s.client.put(
        "/api/2.0/serving-endpoints/ep/ai-gateway",
        &json!({"guardrails": {"input": {"safety": true}}}),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("`guardrails`"),
        "{reply}"
    );
    // Rate limits by token count or by group are Databricks features sandserve lacks.
    for limit in [
        json!({"calls": 1, "key": "user_group", "renewal_period": "minute"}),
        json!({"tokens": 100, "renewal_period": "minute"}),
    ] {
        let (status, reply) = s.client.put(
            "/api/2.0/serving-endpoints/ep/rate-limits",
            &json!({ "rate_limits": [limit] }),
        );
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains("rate_limits"),
            "{reply}"
        );
    }
    let (status, reply) = s.client.patch(
        "/api/2.0/serving-endpoints/ep/notifications",
        &json!({"email_notifications": {"on_update_success": ["a@b.c"]}}),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("`email_notifications`"),
        "{reply}"
    );
    // Logs, build logs and metrics are served (tests/tests/observability.rs has the rest).
    for path in [
        "served-models/echo-1/logs",
        "served-models/echo-1/build-logs",
    ] {
        let (status, reply) = s
            .client
            .get(&format!("/api/2.0/serving-endpoints/ep/{path}"));
        assert_eq!(status, 200, "{path}: {reply}");
        assert!(reply["logs"].is_string(), "{path}: {reply}");
    }
    let metrics = s
        .client
        .get_raw("/api/2.0/serving-endpoints/ep/metrics", &[]);
    assert_eq!(metrics.status, 200);
}

#[test]
fn harmless_values_config_name_tags_ids_and_timestamps() {
    let s = echo_server();
    let before = sandserve_host::registry::unix_millis();
    let (status, created) = s.client.post(
        "/api/2.0/serving-endpoints/",
        &json!({
            "name": "ep",
            "route_optimized": false,
            "description": "echoes",
            "tags": [{"key": "team", "value": "ml"}, {"key": "flag"}],
            "config": {"name": "ep", "served_models": [{"model_name": "echo", "model_version": "1",
                "workload_size": "Medium", "scale_to_zero_enabled": false, "workload_type": "CPU",
                "min_provisioned_concurrency": 0, "burst_scaling_enabled": false,
                "environment_vars": {}}],
                "auto_capture_config": {"enabled": false}},
            "ai_gateway": {"usage_tracking_config": {"enabled": false}, "fallback_config": {"enabled": true}},
        }),
    );
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{created}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()) && !id.contains("ep"));
    let stamp = created["creation_timestamp"].as_u64().unwrap();
    assert!(
        stamp >= before && stamp <= sandserve_host::registry::unix_millis(),
        "{created}"
    );
    assert_eq!(
        created["tags"],
        json!([{"key": "team", "value": "ml"}, {"key": "flag"}])
    );
    assert_eq!(created["description"], "echoes");
    let got = ready(&s.client, "ep");
    assert_eq!(got["id"], id);
    let entity = &got["config"]["served_entities"][0];
    // Medium is up to 16 concurrent requests.
    assert_eq!(entity["max_concurrency"], 16, "{got}");
    assert_eq!(entity["workload_size"], "Medium");
    assert_eq!(entity["scale_to_zero_enabled"], false);
    assert_eq!(got["ai_gateway"]["fallback_config"]["enabled"], true);

    // Trailing slashes on every kind of route.
    for path in [
        "/api/2.0/serving-endpoints/",
        "/api/2.0/serving-endpoints/ep/",
        "/api/2.0/models/",
        "/v2/models/ep/",
    ] {
        let (status, body) = s.client.get(path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = s.client.get("/api/2.0/serving-endpoints/");
    assert_eq!(
        (status, body["endpoints"][0]["id"].as_str()),
        (200, Some(id))
    );

    // Tags: patch adds, overwrites and deletes at once.
    let (status, tags) = s.client.patch(
        "/api/2.0/serving-endpoints/ep/tags/",
        &json!({"add_tags": [{"key": "team", "value": "infra"}, {"key": "new", "value": "1"}], "delete_tags": ["flag"]}),
    );
    assert_eq!(status, 200, "{tags}");
    assert_eq!(
        tags["tags"],
        json!([{"key": "team", "value": "infra"}, {"key": "new", "value": "1"}])
    );
    let (_, listed) = s.client.get("/api/2.0/serving-endpoints");
    assert_eq!(listed["endpoints"][0]["tags"], tags["tags"]);
    let (status, reply) = s.client.patch(
        "/api/2.0/serving-endpoints/ep/tags",
        &json!({"add_tags": [{"key": "a"}, {"key": "a"}]}),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("tags[1].key"),
        "{reply}"
    );

    // Models and tenants answer epoch milliseconds too.
    let (_, versions) = s.client.get("/api/2.0/models/echo/versions");
    let model_stamp = versions["versions"][0]["creation_timestamp"]
        .as_u64()
        .unwrap();
    assert!(
        model_stamp > 1_600_000_000_000 && model_stamp % 1000 == 0,
        "{versions}"
    );
    let (_, tenant) = s.server.admin().get("/api/2.0/tenants/acme");
    assert!(
        tenant["creation_timestamp"].as_u64().unwrap() > 1_600_000_000_000,
        "{tenant}"
    );

    // The well-known config needs no token and names no OIDC.
    let (status, config) = Client::new(&s.server.url, "").get("/.well-known/databricks-config");
    assert_eq!(status, 200);
    assert_eq!(config["oidc_endpoint"], "");
}

#[test]
fn permissions_are_the_tokens_over_the_endpoint() {
    let s = echo_server();
    let admin = s.server.admin();
    let scoped = admin.token("acme", "CAN_QUERY", &["ep"], None);
    let other = admin.token("acme", "CAN_VIEW", &["elsewhere"], None);
    let (status, created) = s.client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "ep", "config": echo_config(json!({}))}),
    );
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/2.0/permissions/serving-endpoints/{id}");
    let (status, acl) = s.client.get(&path);
    assert_eq!(status, 200, "{acl}");
    assert_eq!(acl["object_id"], format!("/serving-endpoints/{id}"));
    let list = acl["access_control_list"].as_array().unwrap();
    assert_eq!(list[0]["group_name"], "admins");
    // The manager token (over `*`, inherited) and the CAN_QUERY token naming `ep` (direct);
    // not the token over another endpoint.
    assert_eq!(list.len(), 3, "{acl}");
    let direct: Vec<&Value> = list
        .iter()
        .filter(|e| e["all_permissions"][0]["inherited"] == false)
        .collect();
    assert_eq!(direct.len(), 1, "{acl}");
    assert_eq!(
        direct[0]["all_permissions"][0]["permission_level"],
        "CAN_QUERY"
    );
    let scoped_id = direct[0]["service_principal_name"].as_str().unwrap();
    assert!(scoped.contains(scoped_id), "token id is part of the token");
    assert!(!list
        .iter()
        .any(|e| other.contains(e["service_principal_name"].as_str().unwrap_or("-"))));

    // What holds is honoured; leaving out a direct grant on PUT, a changed level, users.
    let same = json!({"access_control_list": [{"service_principal_name": scoped_id, "permission_level": "CAN_QUERY"}]});
    assert_eq!(s.client.put(&path, &same).0, 200);
    assert_eq!(s.client.patch(&path, &same).0, 200);
    let cases = [
        (json!({"access_control_list": []}), "access_control_list"),
        (
            json!({"access_control_list": [{"service_principal_name": scoped_id, "permission_level": "CAN_MANAGE"}]}),
            "access_control_list[0].permission_level",
        ),
        (
            json!({"access_control_list": [{"user_name": "ada@example.com", "permission_level": "CAN_QUERY"}]}),
            "access_control_list[0].user_name",
        ),
        (
            json!({"access_control_list": [{"group_name": "users", "permission_level": "CAN_QUERY"}]}),
            "access_control_list[0].group_name",
        ),
    ];
    for (body, field) in cases {
        let (status, reply) = s.client.put(&path, &body);
        assert_eq!(status, 400, "{field}: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{reply}"
        );
    }
    // Levels; the CAN_QUERY token may read levels but not the list; the name is not the id.
    let query = s.server.client(&scoped);
    let (status, levels) = query.get(&format!("{path}/permissionLevels"));
    assert_eq!(status, 200, "{levels}");
    assert_eq!(levels["permission_levels"].as_array().unwrap().len(), 3);
    assert_eq!(query.get(&path).0, 403);
    assert_eq!(
        s.client.get("/api/2.0/permissions/serving-endpoints/ep").0,
        404
    );
    assert_eq!(s.server.client(&other).get(&path).0, 404);
}

#[test]
fn openapi_document_without_a_signature_is_open() {
    let s = echo_server();
    let (status, _) = s.client.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "ep", "config": echo_config(json!({}))}),
    );
    assert_eq!(status, 200);
    let (status, doc) = s.client.get("/api/2.0/serving-endpoints/ep/openapi");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    let schema = &doc["paths"]["/serving-endpoints/ep/invocations"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"];
    assert_eq!(schema["type"], "object", "{doc}");
    assert!(schema["description"]
        .as_str()
        .unwrap()
        .contains("no signature"));
}
