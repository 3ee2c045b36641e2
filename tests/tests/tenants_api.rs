//! Tenant deletion end to end over HTTP against the real `sandserve` binary: refused while
//! the tenant has endpoints, racing an upload in flight, and a tenant created again under
//! the same name starting empty. (The races that HTTP cannot order, such as a token issued
//! while its tenant is deleted, are ordered at the registry level in the host's unit tests.)

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::example_package;
use sandserve_tests::server::{Client, TestServer};
use serde_json::json;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// What a tenant created again under an old name sees: nothing of the old one.
fn assert_starts_empty(admin: &Client, server: &TestServer, tenant: &str) {
    let (status, body) = admin.post("/api/2.0/tenants", &json!({ "name": tenant }));
    assert_eq!(status, 201, "{body}");
    let fresh = server.client(&admin.token(tenant, "CAN_MANAGE", &["*"], None));
    let (status, models) = fresh.get("/api/2.0/models");
    assert_eq!((status, models["models"].clone()), (200, json!([])));
    let (status, endpoints) = fresh.get("/api/2.0/serving-endpoints");
    assert_eq!((status, endpoints["endpoints"].clone()), (200, json!([])));
    let (status, tokens) = admin.get(&format!("/api/2.0/tokens?tenant={tenant}"));
    assert_eq!(status, 200);
    assert_eq!(
        tokens["token_infos"].as_array().unwrap().len(),
        1,
        "only the new token: {tokens}"
    );
}

#[test]
fn a_tenant_with_only_an_endpoint_is_not_deleted_and_one_created_again_starts_empty() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let admin = server.admin();
    let acme = server.client(&admin.tenant_with_token("acme", "CAN_MANAGE"));
    // No model at all: the endpoint's update fails, but the endpoint exists.
    let config = json!({"served_entities": [{"entity_name": "ghost", "entity_version": "1"}]});
    let (status, body) = acme.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "ep", "config": config}),
    );
    assert_eq!(status, 200, "{body}");

    let (status, body) = admin.delete("/api/2.0/tenants/acme");
    assert_eq!(
        (status, body["error_code"].as_str()),
        (409, Some("RESOURCE_CONFLICT")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("`ep`") && message.contains("delete them"),
        "{message}"
    );
    assert_eq!(admin.get("/api/2.0/tenants/acme").0, 200);
    assert_eq!(
        acme.get("/api/2.0/serving-endpoints/ep").0,
        200,
        "a refused deletion keeps the tenant's tokens"
    );

    assert_eq!(acme.delete("/api/2.0/serving-endpoints/ep").0, 200);
    let (status, body) = admin.delete("/api/2.0/tenants/acme");
    assert_eq!(status, 200, "{body}");
    assert_eq!(acme.get("/api/2.0/serving-endpoints").0, 401);
    assert_starts_empty(&admin, &server, "acme");
    assert_eq!(
        acme.get("/api/2.0/serving-endpoints").0,
        401,
        "the old tenant's token stays revoked in the new one"
    );
}

/// Hands out `first`, then blocks until told to go on, then hands out `rest`.
struct HeldBody {
    first: std::io::Cursor<Vec<u8>>,
    rest: std::io::Cursor<Vec<u8>>,
    go_on: Option<mpsc::Receiver<()>>,
}

impl Read for HeldBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.first.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if let Some(go_on) = self.go_on.take() {
            let _ = go_on.recv();
        }
        self.rest.read(buf)
    }
}

#[test]
fn an_upload_in_flight_when_its_tenant_is_deleted_publishes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let admin = server.admin();
    let acme = server.client(&admin.tenant_with_token("acme", "CAN_MANAGE"));
    let mut package = example_package("echo");
    let rest = package.split_off(package.len() / 2);
    let (go_on, held) = mpsc::channel();
    let upload = std::thread::spawn(move || {
        let mut body = HeldBody {
            first: std::io::Cursor::new(package),
            rest: std::io::Cursor::new(rest),
            go_on: Some(held),
        };
        acme.post_stream(
            "/api/2.0/models/echo/versions",
            "application/gzip",
            &mut body,
        )
    });
    // The server opens the upload's temporary blob only after authorising it.
    let tmp = data.path().join("blobs/tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    while entries(&tmp) == 0 {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(10));
    }

    let (status, body) = admin.delete("/api/2.0/tenants/acme");
    assert_eq!(status, 200, "{body}");
    go_on.send(()).unwrap();
    let (status, body) = upload.join().unwrap();
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("tenant `acme`"),
        "{body}"
    );
    assert_eq!(
        entries(&data.path().join("blobs/sha256")),
        0,
        "the refused upload left blobs behind"
    );
    assert_eq!(entries(&tmp), 0);
    assert_starts_empty(&admin, &server, "acme");
}
