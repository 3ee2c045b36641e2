//! The HTTP API called in-process: the server's own router, built by the composition root
//! (`sandserve_host::server::app`) over a fresh data folder, driven with
//! `tower::ServiceExt::oneshot` (no socket, no listener). One test per route family checks
//! authorization (no token, an unknown token, a level too low, another tenant's), routing
//! (which handler answers, trailing slashes, methods) and every error class the family
//! answers: each error's status, `error_code`, message, and that no message carries a host
//! path (the data folder, the repository, the temporary folder).

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use http_body_util::BodyExt;
use sandserve_tests::packages::example_package;
use sandserve_tests::repo_root;
use sandserve_tests::server::ADMIN_TOKEN;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// One in-process server: its router and its data folder.
struct Api {
    router: Router,
    dir: tempfile::TempDir,
}

/// An answer: status, headers and body (JSON when it parses, else `Null`).
struct Answer {
    status: u16,
    body: Value,
    text: String,
    headers: axum::http::HeaderMap,
}

impl Answer {
    /// Asserts an error answer of `status` and `code` with a message and no host path;
    /// returns the message.
    fn error(&self, status: u16, code: &str, forbidden: &[String]) -> String {
        assert_eq!(
            (self.status, self.body["error_code"].as_str()),
            (status, Some(code)),
            "{}",
            self.text
        );
        let message = self.body["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "an error says why: {}", self.text);
        assert_eq!(self.body["error"], self.body["message"], "{}", self.text);
        for path in forbidden {
            assert!(
                !self.text.contains(path.as_str()),
                "the answer leaks the host path {path}: {}",
                self.text
            );
        }
        message.to_string()
    }

    /// The reason in the error's details, if any.
    fn reason(&self) -> &str {
        self.body["details"][0]["reason"].as_str().unwrap_or("")
    }
}

impl Api {
    /// A server over a fresh data folder, with few guest threads and sandbox slots (several
    /// run in one test process).
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = sandserve_tests::in_process::config(dir.path());
        let router = sandserve_host::server::app(&config).unwrap();
        Self { router, dir }
    }

    /// Paths no answer may show.
    fn host_paths(&self) -> Vec<String> {
        vec![
            self.dir.path().display().to_string(),
            repo_root().display().to_string(),
            std::env::temp_dir().display().to_string(),
        ]
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header("Content-Type", content_type);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            text,
            headers,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(Method::GET, path, token, "", Vec::new()).await
    }

    async fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(Method::DELETE, path, token, "", Vec::new()).await
    }

    async fn json(&self, method: Method, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send(method, path, token, "application/json", bytes)
            .await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.json(Method::POST, path, token, body).await
    }

    /// Creates `tenant` and returns a token of `permission` on every name.
    async fn tenant_with_token(&self, tenant: &str, permission: &str) -> String {
        let created = self
            .post(
                "/api/2.0/tenants",
                Some(ADMIN_TOKEN),
                &json!({ "name": tenant }),
            )
            .await;
        assert!(
            created.status == 201 || created.status == 409,
            "{}",
            created.text
        );
        self.token(ADMIN_TOKEN, tenant, permission).await
    }

    /// A token of `permission` for `tenant`, issued with `issuer`.
    async fn token(&self, issuer: &str, tenant: &str, permission: &str) -> String {
        let body = json!({"tenant": tenant, "permissions": [permission], "endpoints": ["*"]});
        let issued = self.post("/api/2.0/tokens", Some(issuer), &body).await;
        assert_eq!(issued.status, 201, "{}", issued.text);
        issued.body["token"].as_str().unwrap().to_string()
    }

    /// Uploads the echo example as model `echo` with `token`.
    async fn upload_echo(&self, token: &str) -> Answer {
        self.send(
            Method::POST,
            "/api/2.0/models/echo/versions",
            Some(token),
            "application/gzip",
            example_package("echo"),
        )
        .await
    }

    /// Creates endpoint `name` serving echo version 1 and waits until it is ready.
    async fn echo_endpoint(&self, token: &str, name: &str) -> Value {
        let body = json!({"name": name, "config": {"served_entities": [
            {"name": "echo-1", "entity_name": "echo", "entity_version": "1"}]}});
        let created = self
            .post("/api/2.0/serving-endpoints", Some(token), &body)
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        assert_eq!(created.body["name"], name, "{}", created.text);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = self
                .get(&format!("/api/2.0/serving-endpoints/{name}"), Some(token))
                .await;
            assert_eq!(state.status, 200, "{}", state.text);
            if state.body["state"]["ready"] == "READY"
                && state.body["state"]["config_update"] == "NOT_UPDATING"
            {
                return state.body;
            }
            assert!(Instant::now() < deadline, "never ready: {}", state.text);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs `test` on a runtime like the binary's (workers with the stack inline runs need).
fn run<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(sandserve_host::runtime::HOST_THREAD_STACK_BYTES)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

/// The paths of `api` no answer may show (a short name for the assertions).
fn paths(api: &Api) -> Vec<String> {
    api.host_paths()
}

#[test]
fn health_routes_answer_anyone_and_unknown_routes_and_methods_are_json_errors() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let health = api.get("/health", None).await;
        assert_eq!(health.status, 200, "{}", health.text);
        assert_eq!(health.body["status"], "ok", "{}", health.text);
        assert!(
            health.body["engines"].is_object() || health.body["engines"].is_array(),
            "{}",
            health.text
        );
        for path in ["/v2/health/live", "/v2/health/ready", "/v2/health/live/"] {
            let answer = api.get(path, None).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        }
        let metadata = api.get("/v2", None).await;
        assert_eq!(metadata.status, 200, "{}", metadata.text);
        assert_eq!(metadata.body["name"], "sandserve", "{}", metadata.text);
        let databricks = api.get("/.well-known/databricks-config", None).await;
        assert_eq!(databricks.status, 200, "{}", databricks.text);
        assert_eq!(databricks.body["oidc_endpoint"], "", "{}", databricks.text);

        let missing = api.get("/api/2.0/nothing-here", Some(ADMIN_TOKEN)).await;
        let message = missing.error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        assert!(message.contains("no such route"), "{message}");
        let wrong_method = api.delete("/health", None).await;
        wrong_method.error(405, "METHOD_NOT_ALLOWED", &hidden);
        let undecodable = api
            .get("/api/2.0/serving-endpoints/%FF", Some(ADMIN_TOKEN))
            .await;
        undecodable.error(400, "INVALID_PARAMETER_VALUE", &hidden);
    });
}

#[test]
fn tenants_are_the_admins_alone() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let body = json!({"name": "acme"});
        api.post("/api/2.0/tenants", None, &body)
            .await
            .error(401, "UNAUTHENTICATED", &hidden);
        api.post("/api/2.0/tenants", Some("not-a-token"), &body)
            .await
            .error(401, "UNAUTHENTICATED", &hidden);
        api.post(
            "/api/2.0/tenants",
            Some("ss_0123456789abcdef_0123456789abcdef0123456789abcdef"),
            &body,
        )
        .await
        .error(401, "UNAUTHENTICATED", &hidden);

        let created = api.post("/api/2.0/tenants", Some(ADMIN_TOKEN), &body).await;
        assert_eq!(created.status, 201, "{}", created.text);
        assert_eq!(created.body["name"], "acme");
        assert!(created.body["creation_timestamp"].as_u64().unwrap() > 0);
        api.post("/api/2.0/tenants", Some(ADMIN_TOKEN), &body)
            .await
            .error(409, "RESOURCE_ALREADY_EXISTS", &hidden);
        let bad = api
            .post(
                "/api/2.0/tenants",
                Some(ADMIN_TOKEN),
                &json!({"name": "../etc"}),
            )
            .await;
        bad.error(400, "INVALID_PARAMETER_VALUE", &hidden);
        let unknown_field = api
            .post(
                "/api/2.0/tenants",
                Some(ADMIN_TOKEN),
                &json!({"name": "b", "colour": "red"}),
            )
            .await;
        let message = unknown_field.error(400, "INVALID_PARAMETER_VALUE", &hidden);
        assert!(message.contains("colour"), "{message}");
        let not_json = api
            .send(
                Method::POST,
                "/api/2.0/tenants",
                Some(ADMIN_TOKEN),
                "application/json",
                b"{".to_vec(),
            )
            .await;
        not_json.error(400, "INVALID_PARAMETER_VALUE", &hidden);

        let manager = api.token(ADMIN_TOKEN, "acme", "CAN_MANAGE").await;
        api.get("/api/2.0/tenants", Some(&manager))
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        api.post("/api/2.0/tenants", Some(&manager), &json!({"name": "b"}))
            .await
            .error(403, "PERMISSION_DENIED", &hidden);

        let listed = api.get("/api/2.0/tenants/", Some(ADMIN_TOKEN)).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let names: Vec<&str> = listed.body["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(names, ["acme"], "{}", listed.text);
        let one = api.get("/api/2.0/tenants/acme", Some(ADMIN_TOKEN)).await;
        assert_eq!((one.status, &one.body["name"]), (200, &json!("acme")));
        api.get("/api/2.0/tenants/nobody", Some(ADMIN_TOKEN))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);

        let deleted = api.delete("/api/2.0/tenants/acme", Some(ADMIN_TOKEN)).await;
        assert_eq!(deleted.status, 200, "{}", deleted.text);
        api.get("/api/2.0/models", Some(&manager))
            .await
            .error(401, "UNAUTHENTICATED", &hidden);
        api.delete("/api/2.0/tenants/acme", Some(ADMIN_TOKEN))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
    });
}

#[test]
fn tokens_are_issued_no_wider_than_their_issuer_and_revoked() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let manager = api.tenant_with_token("acme", "CAN_MANAGE").await;
        api.tenant_with_token("other", "CAN_VIEW").await;
        let querier = api.token(&manager, "acme", "CAN_QUERY").await;

        let body = json!({"tenant": "acme", "permissions": ["CAN_VIEW"], "endpoints": ["*"]});
        api.post("/api/2.0/tokens", Some(&querier), &body)
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        let elsewhere = json!({"tenant": "other", "permissions": ["CAN_VIEW"], "endpoints": ["*"]});
        // Another tenant does not exist for a tenant's token.
        api.post("/api/2.0/tokens", Some(&manager), &elsewhere)
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        let missing = json!({"tenant": "nobody", "permissions": ["CAN_VIEW"], "endpoints": ["*"]});
        api.post("/api/2.0/tokens", Some(ADMIN_TOKEN), &missing)
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        let flying = json!({"tenant": "acme", "permissions": ["CAN_FLY"], "endpoints": ["*"]});
        let message = api
            .post("/api/2.0/tokens", Some(ADMIN_TOKEN), &flying)
            .await
            .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        assert!(message.contains("permissions"), "{message}");

        let issued = api.post("/api/2.0/tokens", Some(&manager), &body).await;
        assert_eq!(issued.status, 201, "{}", issued.text);
        let id = issued.body["token_id"].as_str().unwrap().to_string();
        let viewer = issued.body["token"].as_str().unwrap().to_string();
        assert_eq!(issued.body["token_info"]["token_id"], id.as_str());
        let listed = api.get("/api/2.0/tokens", Some(&manager)).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert!(
            !listed.text.contains(&viewer),
            "a listing never shows secrets"
        );
        assert!(listed.text.contains(&id), "{}", listed.text);

        assert_eq!(api.get("/api/2.0/models", Some(&viewer)).await.status, 200);
        let revoked = api
            .delete(&format!("/api/2.0/tokens/{id}"), Some(&manager))
            .await;
        assert_eq!(revoked.status, 200, "{}", revoked.text);
        api.get("/api/2.0/models", Some(&viewer))
            .await
            .error(401, "UNAUTHENTICATED", &hidden);
        api.delete("/api/2.0/tokens/no-such-token", Some(ADMIN_TOKEN))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
    });
}

#[test]
fn models_are_uploaded_by_managers_and_seen_only_by_their_tenant() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let manager = api.tenant_with_token("acme", "CAN_MANAGE").await;
        let viewer = api.token(&manager, "acme", "CAN_VIEW").await;
        let other = api.tenant_with_token("other", "CAN_MANAGE").await;

        api.upload_echo(&viewer)
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        let garbage = api
            .send(
                Method::POST,
                "/api/2.0/models/echo/versions",
                Some(&manager),
                "application/gzip",
                b"not a gzip archive".to_vec(),
            )
            .await;
        garbage.error(400, "INVALID_PARAMETER_VALUE", &hidden);
        assert_eq!(garbage.reason(), "not_an_archive", "{}", garbage.text);
        let uploaded = api.upload_echo(&manager).await;
        assert_eq!(uploaded.status, 201, "{}", uploaded.text);
        assert_eq!(
            (&uploaded.body["name"], &uploaded.body["version"]),
            (&json!("echo"), &json!(1)),
            "{}",
            uploaded.text
        );

        let listed = api.get("/api/2.0/models", Some(&viewer)).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert_eq!(listed.body["models"][0]["name"], "echo", "{}", listed.text);
        let version = api
            .get("/api/2.0/models/echo/versions/1", Some(&viewer))
            .await;
        assert_eq!(version.status, 200, "{}", version.text);
        assert_eq!(
            version.body["digest"], uploaded.body["digest"],
            "{}",
            version.text
        );
        api.get("/api/2.0/models/echo/versions/1", Some(&other))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        api.get("/api/2.0/models/echo/versions/2", Some(&viewer))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        let message = api
            .get("/api/2.0/models/echo/versions/zero", Some(&viewer))
            .await
            .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        assert!(message.contains("zero"), "{message}");
        api.delete("/api/2.0/models/echo/versions/1", Some(&viewer))
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        let deleted = api
            .delete("/api/2.0/models/echo/versions/1", Some(&manager))
            .await;
        assert_eq!(deleted.status, 200, "{}", deleted.text);
        api.get("/api/2.0/models/echo/versions/1", Some(&viewer))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
    });
}

#[test]
fn serving_endpoints_are_checked_isolated_and_unfinished_routes_say_so() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let manager = api.tenant_with_token("acme", "CAN_MANAGE").await;
        let viewer = api.token(&manager, "acme", "CAN_VIEW").await;
        let other = api.tenant_with_token("other", "CAN_MANAGE").await;
        assert_eq!(api.upload_echo(&manager).await.status, 201);

        let body = json!({"name": "ep", "config": {"served_entities": [
            {"entity_name": "echo", "entity_version": "1"}]}});
        api.post("/api/2.0/serving-endpoints", Some(&viewer), &body)
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        let split = json!({"name": "ep", "config": {
            "served_entities": [{"name": "echo-1", "entity_name": "echo", "entity_version": "1"}],
            "traffic_config": {"routes": [{"served_entity_name": "echo-1", "traffic_percentage": 90}]}}});
        let refused = api
            .post("/api/2.0/serving-endpoints", Some(&manager), &split)
            .await;
        let message = refused.error(400, "INVALID_PARAMETER_VALUE", &hidden);
        assert!(message.contains("sum to 90"), "{message}");
        // A model that does not exist fails the endpoint's preparation (in the
        // background), and the endpoint answers queries with 503 until a config works.
        let unknown_model = json!({"name": "broken", "config": {"served_entities": [
            {"entity_name": "nope", "entity_version": "1"}]}});
        let created = api
            .post("/api/2.0/serving-endpoints", Some(&manager), &unknown_model)
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        let deadline = Instant::now() + Duration::from_secs(30);
        let failed = loop {
            let state = api
                .get("/api/2.0/serving-endpoints/broken", Some(&manager))
                .await;
            if state.body["state"]["config_update"] == "UPDATE_FAILED" {
                break state;
            }
            assert!(Instant::now() < deadline, "never failed: {}", state.text);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let why = failed.body["state"]["update_error"]
            .as_str()
            .unwrap_or_default();
        assert!(why.contains("nope"), "{}", failed.text);
        for path in &hidden {
            assert!(!failed.text.contains(path.as_str()), "{}", failed.text);
        }
        let querier = api.token(&manager, "acme", "CAN_QUERY").await;
        let not_ready = api
            .post(
                "/serving-endpoints/broken/invocations",
                Some(&querier),
                &json!({"inputs": {"x": [1.0]}}),
            )
            .await;
        not_ready.error(503, "TEMPORARILY_UNAVAILABLE", &hidden);
        assert!(
            not_ready.headers.contains_key("retry-after"),
            "{}",
            not_ready.text
        );

        let ready = api.echo_endpoint(&manager, "ep").await;
        assert_eq!(ready["config"]["served_entities"][0]["entity_name"], "echo");
        let again = json!({"name": "ep", "config": {"served_entities": [
            {"name": "echo-1", "entity_name": "echo", "entity_version": "1"}]}});
        api.post("/api/2.0/serving-endpoints", Some(&manager), &again)
            .await
            .error(409, "RESOURCE_ALREADY_EXISTS", &hidden);
        let listed = api.get("/api/2.0/serving-endpoints/", Some(&viewer)).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let names: Vec<&str> = listed.body["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names, ["broken", "ep"], "{}", listed.text);
        api.get("/api/2.0/serving-endpoints/ep", Some(&other))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        let others = api.get("/api/2.0/serving-endpoints", Some(&other)).await;
        assert_eq!(others.status, 200, "{}", others.text);
        assert_eq!(others.body["endpoints"], json!([]), "{}", others.text);
        api.delete("/api/2.0/models/echo/versions/1", Some(&manager))
            .await
            .error(409, "RESOURCE_CONFLICT", &hidden);

        let tags = api
            .json(
                Method::PATCH,
                "/api/2.0/serving-endpoints/ep/tags",
                Some(&manager),
                &json!({"add_tags": [{"key": "team", "value": "ml"}]}),
            )
            .await;
        assert_eq!(tags.status, 200, "{}", tags.text);
        assert!(tags.text.contains("team"), "{}", tags.text);
        let metrics = api
            .get("/api/2.0/serving-endpoints/ep/metrics", Some(&manager))
            .await;
        assert_eq!(metrics.status, 200, "{}", metrics.text);
        api.get("/api/2.0/serving-endpoints/ep/metrics", Some(&other))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        api.delete("/api/2.0/serving-endpoints/ep", Some(&viewer))
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        let deleted = api
            .delete("/api/2.0/serving-endpoints/ep", Some(&manager))
            .await;
        assert_eq!(deleted.status, 200, "{}", deleted.text);
        api.get("/api/2.0/serving-endpoints/ep", Some(&manager))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
    });
}

#[test]
fn databricks_queries_need_can_query_and_a_well_formed_body() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let manager = api.tenant_with_token("acme", "CAN_MANAGE").await;
        let viewer = api.token(&manager, "acme", "CAN_VIEW").await;
        let querier = api.token(&manager, "acme", "CAN_QUERY").await;
        let other = api.tenant_with_token("other", "CAN_MANAGE").await;
        assert_eq!(api.upload_echo(&manager).await.status, 201);
        api.echo_endpoint(&manager, "ep").await;

        let query = json!({"inputs": {"x": [1.0, 2.0, 3.0]}});
        let answer = api
            .post("/serving-endpoints/ep/invocations", Some(&querier), &query)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(
            answer.body["predictions"]["x"],
            json!([1.0, 2.0, 3.0]),
            "{}",
            answer.text
        );
        assert_eq!(
            answer
                .headers
                .get("served-model-name")
                .and_then(|v| v.to_str().ok()),
            Some("echo-1")
        );
        let direct = api
            .post(
                "/serving-endpoints/ep/served-models/echo-1/invocations",
                Some(&querier),
                &query,
            )
            .await;
        assert_eq!(direct.status, 200, "{}", direct.text);

        api.post("/serving-endpoints/ep/invocations", None, &query)
            .await
            .error(401, "UNAUTHENTICATED", &hidden);
        api.post("/serving-endpoints/ep/invocations", Some(&viewer), &query)
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        api.post("/serving-endpoints/ep/invocations", Some(&other), &query)
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        api.post(
            "/serving-endpoints/ep/served-models/nope/invocations",
            Some(&querier),
            &query,
        )
        .await
        .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        api.post(
            "/serving-endpoints/ep/invocations",
            Some(&querier),
            &json!({"instances": [1], "inputs": [1]}),
        )
        .await
        .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        api.post(
            "/serving-endpoints/ep/invocations",
            Some(&querier),
            &json!({"nothing": 1}),
        )
        .await
        .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        api.send(
            Method::POST,
            "/serving-endpoints/ep/invocations",
            Some(&querier),
            "application/json",
            b"{\"inputs\": ".to_vec(),
        )
        .await
        .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        api.get("/serving-endpoints/ep/invocations", Some(&querier))
            .await
            .error(405, "METHOD_NOT_ALLOWED", &hidden);
        // Past the 1 MiB default of other routes, a query body still reaches the codec
        // (the query route's own limit wins over the router-wide default).
        let mut past_default = vec![b' '; 2 << 20];
        past_default.extend_from_slice(b"{\"inputs\": ");
        api.send(
            Method::POST,
            "/serving-endpoints/ep/invocations",
            Some(&querier),
            "application/json",
            past_default,
        )
        .await
        .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        // One byte over the 64 MiB a query may have.
        let huge = vec![b' '; (64 << 20) + 1];
        api.send(
            Method::POST,
            "/serving-endpoints/ep/invocations",
            Some(&querier),
            "application/json",
            huge,
        )
        .await
        .error(413, "PAYLOAD_TOO_LARGE", &hidden);
    });
}

#[test]
fn a_body_past_the_router_wide_limit_is_refused_on_routes_without_their_own() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let name = "a".repeat((1 << 20) + 1);
        api.post(
            "/api/2.0/tenants",
            Some(ADMIN_TOKEN),
            &json!({ "name": name }),
        )
        .await
        .error(413, "PAYLOAD_TOO_LARGE", &hidden);
        // With a trailing slash (trimmed by an outer layer), the same limit.
        api.post(
            "/api/2.0/tenants/",
            Some(ADMIN_TOKEN),
            &json!({ "name": name }),
        )
        .await
        .error(413, "PAYLOAD_TOO_LARGE", &hidden);
    });
}

#[test]
fn v2_metadata_and_inference_follow_the_same_rules() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let manager = api.tenant_with_token("acme", "CAN_MANAGE").await;
        let viewer = api.token(&manager, "acme", "CAN_VIEW").await;
        let querier = api.token(&manager, "acme", "CAN_QUERY").await;
        let other = api.tenant_with_token("other", "CAN_MANAGE").await;
        assert_eq!(api.upload_echo(&manager).await.status, 201);

        let metadata = api.get("/v2/models/echo", Some(&viewer)).await;
        assert_eq!(metadata.status, 200, "{}", metadata.text);
        assert_eq!(metadata.body["name"], "echo", "{}", metadata.text);
        let version = api.get("/v2/models/echo/versions/1", Some(&viewer)).await;
        assert_eq!(version.status, 200, "{}", version.text);
        api.get("/v2/models/echo", None)
            .await
            .error(401, "UNAUTHENTICATED", &hidden);
        api.get("/v2/models/echo", Some(&other)).await.error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            &hidden,
        );
        api.get("/v2/models/echo/versions/7", Some(&viewer))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);

        let request = json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}]});
        let answer = api
            .post("/v2/models/echo/infer", Some(&querier), &request)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["model_name"], "echo", "{}", answer.text);
        assert_eq!(
            answer.body["outputs"][0]["data"],
            json!([1.5, 2.5]),
            "{}",
            answer.text
        );
        let pinned = api
            .post("/v2/models/echo/versions/1/infer", Some(&querier), &request)
            .await;
        assert_eq!(pinned.status, 200, "{}", pinned.text);
        api.post("/v2/models/echo/infer", Some(&viewer), &request)
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        api.post("/v2/models/nope/infer", Some(&querier), &request)
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        let bad_type =
            json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP99", "data": [1, 2]}]});
        api.post("/v2/models/echo/infer", Some(&querier), &bad_type)
            .await
            .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        let short =
            json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]});
        api.post("/v2/models/echo/infer", Some(&querier), &short)
            .await
            .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        let message = api
            .post(
                "/v2/repository/models/echo/load",
                Some(&querier),
                &json!({}),
            )
            .await
            .error(400, "INVALID_PARAMETER_VALUE", &hidden);
        assert!(!message.is_empty());
    });
}

#[test]
fn permissions_are_read_by_viewers_and_changed_by_managers() {
    run(|| async {
        let api = Api::start();
        let hidden = paths(&api);
        let manager = api.tenant_with_token("acme", "CAN_MANAGE").await;
        let viewer = api.token(&manager, "acme", "CAN_VIEW").await;
        let other = api.tenant_with_token("other", "CAN_MANAGE").await;
        assert_eq!(api.upload_echo(&manager).await.status, 201);
        let endpoint = api.echo_endpoint(&manager, "ep").await;
        let id = endpoint["id"].as_str().unwrap().to_string();
        let path = format!("/api/2.0/permissions/serving-endpoints/{id}");

        let read = api.get(&path, Some(&manager)).await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(
            read.body["object_type"], "serving-endpoint",
            "{}",
            read.text
        );
        let levels = api
            .get(&format!("{path}/permissionLevels"), Some(&viewer))
            .await;
        assert_eq!(levels.status, 200, "{}", levels.text);
        assert!(levels.text.contains("CAN_QUERY"), "{}", levels.text);
        api.get(&path, Some(&viewer))
            .await
            .error(403, "PERMISSION_DENIED", &hidden);
        api.get(&path, Some(&other))
            .await
            .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        api.get(
            "/api/2.0/permissions/serving-endpoints/nope",
            Some(&manager),
        )
        .await
        .error(404, "RESOURCE_DOES_NOT_EXIST", &hidden);
        api.get(&path, None)
            .await
            .error(401, "UNAUTHENTICATED", &hidden);
        let flying = json!({"access_control_list": [
            {"user_name": "a@b.c", "permission_level": "CAN_FLY"}]});
        api.json(Method::PATCH, &path, Some(&manager), &flying)
            .await
            .error(400, "INVALID_PARAMETER_VALUE", &hidden);
    });
}

/// The in-process servers are separate: a tenant of one does not exist in another.
#[test]
fn two_servers_in_one_process_share_no_state() {
    run(|| async {
        let first = Api::start();
        let second = Api::start();
        let token = first.tenant_with_token("acme", "CAN_MANAGE").await;
        assert_eq!(first.get("/api/2.0/models", Some(&token)).await.status, 200);
        second.get("/api/2.0/models", Some(&token)).await.error(
            401,
            "UNAUTHENTICATED",
            &paths(&second),
        );
        let data: PathBuf = first.dir.path().join("data");
        assert!(data.join("metadata").is_dir());
    });
}
