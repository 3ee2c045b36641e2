//! End to end over HTTP against the real `sandserve` binary on 127.0.0.1: tenants, tokens and
//! permissions, uploading model packages as versioned images, tenant isolation on every
//! route, restart durability with the compile cache, hostile packages (bombs, damaged
//! gzip, too many uploads at once), bounded memory for a 1 GiB upload, and blobs a crash
//! left behind.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::{
    bomb_of_zeros, digits_model, echo_manifest, echo_wasm, example_package, gzip, Tar,
};
use sandserve_tests::server::{reason, Client, TestServer};
use sandserve_tests::{onnx_available, read_f32, read_i64, repo_root};
use serde_json::{json, Value};
use std::path::Path;

fn first_digit() -> (Vec<f32>, i64) {
    let dir = repo_root().join("examples/digits/model");
    let pixels: Vec<f32> = read_f32(&dir.join("test_inputs.f32"))[..64]
        .iter()
        .map(|v| v * 16.0)
        .collect();
    (pixels, read_i64(&dir.join("expected_labels.i64"))[0])
}

fn infer_digits(client: &Client, version: u64) -> (u16, Value) {
    let (pixels, _) = first_digit();
    client.post(
        &format!("/v2/models/digits/versions/{version}/infer"),
        &json!({"inputs": [{"name": "images", "shape": [1, 64], "datatype": "FP32", "data": pixels}]}),
    )
}

fn blob_names(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn pending_writes(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("blobs/tmp")).map_or(0, |d| d.count())
}

#[test]
fn tenants_upload_versions_list_get_delete_and_run() {
    if !onnx_available("models api") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let admin = server.admin();
    let acme = server.client(&admin.tenant_with_token("acme", "CAN_MANAGE"));
    let (status, tenants) = admin.get("/api/2.0/tenants");
    assert_eq!(status, 200);
    assert_eq!(tenants["tenants"][0]["name"], "acme");

    let digits = example_package("digits");
    let (status, v1) = acme.upload("digits", &digits);
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["name"], "digits");
    assert_eq!(v1["version"], 1);
    assert!(v1["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v1["size_bytes"], digits.len() as u64);
    let (status, v2) = acme.upload("digits", &digits);
    assert_eq!((status, v2["version"].clone()), (201, json!(2)));
    let (status, echo) = acme.upload("echo", &example_package("echo"));
    assert_eq!((status, echo["version"].clone()), (201, json!(1)));

    let (status, models) = acme.get("/api/2.0/models");
    assert_eq!(status, 200);
    let names: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["digits", "echo"]);
    assert_eq!(models["models"][0]["latest_version"], 2);

    let (status, version) = acme.get("/api/2.0/models/digits/versions/1");
    assert_eq!(status, 200);
    assert_eq!(version["digest"], v1["digest"]);
    assert_eq!(version["capabilities"]["graphs"][0]["name"], "digits");
    assert_eq!(
        version["capabilities"]["signature"]["inputs"][0]["name"],
        "images"
    );
    assert_eq!(version["files"].as_array().unwrap().len(), 2);

    let (_, expected_label) = first_digit();
    let (status, answer) = infer_digits(&acme, 1);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_name"], "digits");
    assert_eq!(answer["model_version"], "1");
    assert_eq!(answer["outputs"][0]["name"], "label");
    assert_eq!(answer["outputs"][0]["data"][0], expected_label);
    let probabilities = answer["outputs"][1]["data"].as_array().unwrap();
    let sum: f64 = probabilities.iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");

    let (status, _) = acme.delete("/api/2.0/models/digits/versions/1");
    assert_eq!(status, 200);
    let (status, body) = acme.get("/api/2.0/models/digits/versions/1");
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let (status, body) = infer_digits(&acme, 1);
    assert_eq!(status, 404, "{body}");
    let (status, v3) = acme.upload("digits", &digits);
    assert_eq!(
        (status, v3["version"].clone()),
        (201, json!(3)),
        "versions are never reused"
    );
    let (_, versions) = acme.get("/api/2.0/models/digits/versions");
    let listed: Vec<u64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [2, 3]);

    let (status, body) = admin.delete("/api/2.0/tenants/acme");
    assert_eq!(
        (status, body["error_code"].as_str()),
        (409, Some("RESOURCE_CONFLICT")),
        "{body}"
    );
}

#[test]
fn every_route_keeps_tenants_apart_and_enforces_permissions() {
    if !onnx_available("isolation") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let admin = server.admin();
    let a = server.client(&admin.tenant_with_token("tenant-a", "CAN_MANAGE"));
    let b = server.client(&admin.tenant_with_token("tenant-b", "CAN_MANAGE"));
    assert_eq!(a.upload("digits", &example_package("digits")).0, 201);
    assert_eq!(a.upload("echo", &example_package("echo")).0, 201);

    // Tenant B on tenant A's resources: as if they did not exist.
    let (status, models) = b.get("/api/2.0/models");
    assert_eq!(
        (status, models["models"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    for (what, (status, body)) in [
        ("list versions", b.get("/api/2.0/models/digits/versions")),
        ("get version", b.get("/api/2.0/models/digits/versions/1")),
        (
            "delete version",
            b.delete("/api/2.0/models/digits/versions/1"),
        ),
        ("infer", infer_digits(&b, 1)),
    ] {
        assert_eq!(status, 404, "{what}: {body}");
        assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST", "{what}");
    }
    // B uploading under the same name creates B's own model, never touches A's.
    assert_eq!(b.upload("echo", &example_package("echo")).0, 201);
    let (_, a_versions) = a.get("/api/2.0/models/echo/versions");
    assert_eq!(a_versions["versions"].as_array().unwrap().len(), 1);
    // B cannot see or revoke A's tokens.
    let (_, a_tokens) = a.get("/api/2.0/tokens");
    let a_token_id = a_tokens["token_infos"][0]["token_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, b_tokens) = b.get("/api/2.0/tokens");
    assert_eq!(status, 200);
    assert!(b_tokens["token_infos"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["tenant"] == "tenant-b"));
    assert_eq!(b.delete(&format!("/api/2.0/tokens/{a_token_id}")).0, 404);
    // B cannot issue tokens for A.
    let (status, _) = b.post(
        "/api/2.0/tokens",
        &json!({"tenant": "tenant-a", "permissions": ["CAN_VIEW"]}),
    );
    assert_eq!(status, 404);
    // Tenant tokens cannot use admin routes.
    assert_eq!(a.get("/api/2.0/tenants").0, 403);
    assert_eq!(
        a.post("/api/2.0/tenants", &json!({"name": "sneaky"})).0,
        403
    );
    // The admin token does not act inside tenants.
    assert_eq!(admin.get("/api/2.0/models").0, 403);

    // Permission levels.
    let viewer = server.client(&admin.token("tenant-a", "CAN_VIEW", &["*"], None));
    assert_eq!(viewer.get("/api/2.0/models/digits/versions").0, 200);
    let (status, body) = viewer.upload("digits", &example_package("digits"));
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    assert_eq!(viewer.delete("/api/2.0/models/digits/versions/1").0, 403);
    assert_eq!(infer_digits(&viewer, 1).0, 403);
    assert_eq!(viewer.get("/api/2.0/tokens").0, 403);
    let querier = server.client(&admin.token("tenant-a", "CAN_QUERY", &["*"], None));
    assert_eq!(infer_digits(&querier, 1).0, 200);
    assert_eq!(querier.upload("digits", &example_package("digits")).0, 403);

    // A token scoped to `echo` does not see `digits`.
    let scoped = server.client(&admin.token("tenant-a", "CAN_MANAGE", &["echo"], None));
    assert_eq!(scoped.get("/api/2.0/models/echo/versions").0, 200);
    assert_eq!(scoped.get("/api/2.0/models/digits/versions").0, 404);
    let (_, listed) = scoped.get("/api/2.0/models");
    assert_eq!(listed["models"].as_array().unwrap().len(), 1);
    // ... and cannot mint a wider token.
    let (status, _) = scoped.post(
        "/api/2.0/tokens",
        &json!({"permissions": ["CAN_VIEW"], "endpoints": ["*"]}),
    );
    assert_eq!(status, 403);
    let (status, narrower) = scoped.post(
        "/api/2.0/tokens",
        &json!({"permissions": ["CAN_VIEW"], "endpoints": ["echo"]}),
    );
    assert_eq!(status, 201, "{narrower}");
    // It sees and revokes only tokens no wider than itself.
    let (status, listed) = scoped.get("/api/2.0/tokens");
    assert_eq!(status, 200, "{listed}");
    let listed = listed["token_infos"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "itself and the narrower one: {listed:?}");
    assert!(listed.iter().all(|t| t["endpoints"] == json!(["echo"])));
    let (status, body) = scoped.delete(&format!("/api/2.0/tokens/{a_token_id}"));
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    assert_eq!(
        a.get("/api/2.0/models").0,
        200,
        "the wider token still works"
    );
    let narrower_id = narrower["token_id"].as_str().unwrap();
    assert_eq!(
        scoped.delete(&format!("/api/2.0/tokens/{narrower_id}")).0,
        200
    );
    // It cannot put a model it does not cover behind an endpoint it covers.
    let (status, body) = scoped.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "echo", "config": {"served_entities": [
            {"entity_name": "digits", "entity_version": "1"}
        ]}}),
    );
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST")),
        "{body}"
    );
    let (status, body) = scoped.post(
        "/api/2.0/serving-endpoints",
        &json!({"name": "echo", "config": {"served_entities": [
            {"entity_name": "echo", "entity_version": "1"}
        ]}}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = scoped.put(
        "/api/2.0/serving-endpoints/echo/config",
        &json!({"served_entities": [{"entity_name": "digits", "entity_version": "1"}]}),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(scoped.delete("/api/2.0/serving-endpoints/echo").0, 200);

    // Missing, malformed, revoked and expired tokens: 401.
    assert_eq!(Client::new(&server.url, "").get("/api/2.0/models").0, 401);
    assert_eq!(
        Client::new(&server.url, "not-a-token")
            .get("/api/2.0/models")
            .0,
        401
    );
    let revoked_secret = admin.token("tenant-a", "CAN_VIEW", &["*"], None);
    let revoked = server.client(&revoked_secret);
    assert_eq!(revoked.get("/api/2.0/models").0, 200);
    let revoked_id = revoked_secret.split('_').nth(1).unwrap();
    assert_eq!(a.delete(&format!("/api/2.0/tokens/{revoked_id}")).0, 200);
    let (status, body) = revoked.get("/api/2.0/models");
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    // Expiry is kept in milliseconds (Databricks' `expiry_time`): a 1 s token lives 1 s,
    // wherever in its second it was created.
    let (status, created) = admin.post(
        "/api/2.0/tokens",
        &json!({"tenant": "tenant-a", "permissions": ["CAN_VIEW"], "lifetime_seconds": 1}),
    );
    assert_eq!(status, 201, "{created}");
    let info = &created["token_info"];
    let (created_ms, expiry_ms) = (
        info["creation_time"].as_u64().unwrap(),
        info["expiry_time"].as_u64().unwrap(),
    );
    assert!(created_ms > 1_000_000_000_000, "epoch milliseconds: {info}");
    assert_eq!(expiry_ms - created_ms, 1000, "{info}");
    let short = server.client(created["token"].as_str().unwrap());
    assert_eq!(short.get("/api/2.0/models").0, 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (status, body) = short.get("/api/2.0/models");
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Malformed input names the field.
    let (status, body) = admin.post(
        "/api/2.0/tokens",
        &json!({"tenant": "tenant-a", "permissions": ["CAN_FLY"]}),
    );
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("permissions"),
        "{body}"
    );
    let (status, body) = admin.post("/api/2.0/tenants", &json!({"name": "Bad Name"}));
    assert_eq!((status, reason(&body)), (400, "invalid_name"));
    let (status, _) = admin.post("/api/2.0/tenants", &json!({"name": "tenant-a"}));
    assert_eq!(status, 409);
}

#[test]
fn a_restart_keeps_everything_and_loads_handlers_from_the_compile_cache() {
    if !onnx_available("restart") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let token;
    let blobs_before;
    {
        let server = TestServer::start(data.path(), &[]);
        let admin = server.admin();
        token = admin.tenant_with_token("acme", "CAN_MANAGE");
        let acme = server.client(&token);
        assert_eq!(acme.upload("digits", &example_package("digits")).0, 201);
        assert_eq!(acme.upload("echo", &example_package("echo")).0, 201);
        assert_eq!(infer_digits(&acme, 1).0, 200);
        blobs_before = blob_names(data.path());
        server.stop();
    }
    let server = TestServer::start(data.path(), &[]);
    let acme = server.client(&token);
    let (_, tenants) = server.admin().get("/api/2.0/tenants");
    assert_eq!(tenants["tenants"][0]["name"], "acme");
    let (status, models) = acme.get("/api/2.0/models");
    assert_eq!(status, 200, "the token survived the restart");
    assert_eq!(models["models"].as_array().unwrap().len(), 2);
    assert_eq!(blob_names(data.path()), blobs_before);
    let (status, answer) = infer_digits(&acme, 1);
    assert_eq!(status, 200, "{answer}");
    // The public sees which engines loaded, not paths or the cache; the operator does.
    let (status, public) = Client::new(&server.url, "").get("/health");
    assert_eq!(status, 200, "{public}");
    assert_eq!(public["engines"]["onnx"]["loaded"], true, "{public}");
    assert!(public["engines"]["onnx"].get("path").is_none(), "{public}");
    assert!(public.get("component_cache").is_none(), "{public}");
    let (status, public) = Client::new(&server.url, "wrong").get("/health");
    assert_eq!(
        status, 200,
        "a wrong token still gets the public view: {public}"
    );
    assert!(public.get("component_cache").is_none(), "{public}");
    let (_, health) = server.admin().get("/health");
    assert!(health["engines"]["onnx"]["path"].is_string(), "{health}");
    assert_eq!(health["component_cache"]["compiles"], 0, "{health}");
    assert!(
        health["component_cache"]["hits"].as_u64().unwrap() >= 1,
        "{health}"
    );
}

#[test]
fn hostile_packages_are_refused_and_leave_nothing_behind() {
    if !onnx_available("hostile packages") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        data.path(),
        &["--max-upload-mib", "1", "--max-unpacked-mib", "16"],
    );
    let admin = server.admin();
    let acme = server.client(&admin.tenant_with_token("acme", "CAN_MANAGE"));
    assert_eq!(acme.upload("echo", &example_package("echo")).0, 201);
    let blobs_before = blob_names(data.path());

    let manifest = echo_manifest();
    let echo = echo_wasm();
    let graph_manifest = |file: &str| {
        format!("{manifest}\n[[graphs]]\nname = \"g\"\nencoding = \"onnx\"\nfiles = [\"{file}\"]\n")
    };
    let forbidden = sandserve_tests::guest_wasm("forbidden-import");
    let bomb = {
        // 64 MiB of zeros as a named graph file: tiny compressed, refused past 16 MiB unpacked.
        let mut tar = tar::Builder::new(Vec::new());
        let m = graph_manifest("model/g.onnx");
        let mut h = tar::Header::new_ustar();
        h.set_size(m.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, "sandserve.toml", m.as_bytes())
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(echo.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, "echo.wasm", echo.as_slice())
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(64 << 20);
        h.set_mode(0o644);
        tar.append_data(
            &mut h,
            "model/g.onnx",
            std::io::repeat(0).take_bytes(64 << 20),
        )
        .unwrap();
        gzip(&tar.into_inner().unwrap())
    };
    let oversize: Vec<u8> = (0..(2u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "path traversal",
            Tar::default()
                .file("sandserve.toml", manifest.as_bytes())
                .raw("../echo.wasm", &echo)
                .gzip(),
            400,
            "path_escape",
        ),
        (
            "absolute path",
            Tar::default()
                .file("sandserve.toml", manifest.as_bytes())
                .raw("/etc/echo.wasm", &echo)
                .gzip(),
            400,
            "absolute_path",
        ),
        (
            "symlink",
            Tar::default()
                .file("sandserve.toml", manifest.as_bytes())
                .symlink("echo.wasm", "/etc/passwd")
                .gzip(),
            400,
            "link_in_archive",
        ),
        ("decompression bomb", bomb, 413, "too_large"),
        ("oversize", oversize, 413, ""),
        (
            "bad manifest",
            Tar::default()
                .file("sandserve.toml", b"name = \"echo\"\nhandler = 5\n")
                .gzip(),
            400,
            "bad_manifest",
        ),
        (
            "manifest for another model",
            Tar::default()
                .file(
                    "sandserve.toml",
                    manifest.replace("\"echo\"", "\"other\"").as_bytes(),
                )
                .file("echo.wasm", &echo)
                .gzip(),
            400,
            "name_mismatch",
        ),
        (
            "not a component",
            Tar::default()
                .file("sandserve.toml", manifest.as_bytes())
                .file("echo.wasm", b"\0asm\x01\0\0\0")
                .gzip(),
            400,
            "not_a_component",
        ),
        (
            "forbidden import",
            Tar::default()
                .file("sandserve.toml", manifest.as_bytes())
                .file("echo.wasm", &forbidden)
                .gzip(),
            400,
            "forbidden_import",
        ),
        (
            "graph the backend rejects",
            Tar::default()
                .file("sandserve.toml", graph_manifest("model/g.onnx").as_bytes())
                .file("echo.wasm", &echo)
                .file("model/g.onnx", b"this is not an onnx model")
                .gzip(),
            400,
            "graph_rejected",
        ),
        (
            "not an archive",
            b"just some text, not a tar".to_vec(),
            400,
            "not_an_archive",
        ),
    ];
    for (what, package, status, expected_reason) in cases {
        let (got, body) = acme.upload("echo", &package);
        assert_eq!(got, status, "{what}: {body}");
        if !expected_reason.is_empty() {
            assert_eq!(reason(&body), expected_reason, "{what}: {body}");
        }
        assert!(
            !body.to_string().contains("blobs/sha256"),
            "{what} leaks host paths: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(
            blob_names(data.path()),
            blobs_before,
            "{what} left blobs behind"
        );
        assert_eq!(pending_writes(data.path()), 0, "{what} left a temp file");
        let (_, versions) = acme.get("/api/2.0/models/echo/versions");
        assert_eq!(
            versions["versions"].as_array().unwrap().len(),
            1,
            "{what} published something"
        );
    }

    // A digest that does not match the body is refused, and nothing stays.
    let package = example_package("echo");
    let (status, body) = acme.post_bytes(
        "/api/2.0/models/echo/versions",
        "application/gzip",
        &[("X-Content-Sha256", &"0".repeat(64))],
        &package,
    );
    assert_eq!((status, reason(&body)), (400, "digest_mismatch"), "{body}");
    assert_eq!(blob_names(data.path()), blobs_before);
    // The right digest is accepted.
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&package))
    };
    let (status, body) = acme.post_bytes(
        "/api/2.0/models/echo/versions",
        "application/gzip",
        &[("X-Content-Sha256", &digest)],
        &package,
    );
    assert_eq!(status, 201, "{body}");
}

trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}

#[test]
fn a_one_gib_upload_keeps_server_memory_bounded() {
    if !onnx_available("1 GiB upload") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &["--max-upload-mib", "1100"]);
    let admin = server.admin();
    let acme = server.client(&admin.tenant_with_token("acme", "CAN_MANAGE"));
    let manifest = format!(
        "{}\n[[graphs]]\nname = \"big\"\nencoding = \"onnx\"\nfiles = [\"model/big.onnx\"]\n",
        echo_manifest()
    );
    let echo = echo_wasm();
    let size: u64 = 1 << 30;
    // Stream the archive: manifest, handler, then a 1 GiB model file, never all in memory.
    let mut head = tar::Builder::new(Vec::new());
    for (path, bytes) in [
        ("sandserve.toml", manifest.as_bytes()),
        ("echo.wasm", echo.as_slice()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        head.append_data(&mut h, path, bytes).unwrap();
    }
    let mut big = tar::Header::new_ustar();
    big.set_path("model/big.onnx").unwrap();
    big.set_size(size);
    big.set_mode(0o644);
    big.set_cksum();
    let mut prefix = head.into_inner().unwrap();
    // `into_inner` appended the end-of-archive marker (two zero blocks): drop it.
    prefix.truncate(prefix.len() - 1024);
    prefix.extend_from_slice(big.as_bytes());
    let mut body = std::io::Read::chain(
        std::io::Read::chain(
            std::io::Cursor::new(prefix),
            std::io::repeat(0).take_bytes(size),
        ),
        std::io::Cursor::new(vec![0u8; 1024]),
    );
    server.reset_peak_memory();
    let before = server.memory_kib("VmRSS");
    let (status, reply) = acme.post_stream(
        "/api/2.0/models/echo/versions",
        "application/x-tar",
        &mut body,
    );
    let peak = server.memory_kib("VmHWM");
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!(
        "1 GiB upload: RSS {} MiB before, peak {} MiB, growth {growth_mib} MiB; answer {status}",
        before / 1024,
        peak / 1024
    );
    assert_eq!(
        status, 400,
        "a 1 GiB file of zeros is not an ONNX model: {reply}"
    );
    assert_eq!(reason(&reply), "graph_rejected", "{reply}");
    assert!(
        growth_mib < 64,
        "server RSS grew by {growth_mib} MiB during a 1 GiB upload"
    );
    assert!(
        blob_names(data.path()).is_empty(),
        "the refused upload left blobs behind"
    );
    let _ = digits_model();
}

#[test]
fn deleting_the_last_version_that_uses_a_blob_collects_it() {
    if !onnx_available("blob gc") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let acme = server.client(&server.admin().tenant_with_token("acme", "CAN_MANAGE"));
    let echo = example_package("echo");
    assert_eq!(acme.upload("echo", &echo).0, 201);
    let with_one = blob_names(data.path());
    assert_eq!(
        with_one.len(),
        2,
        "the archive and the handler: {with_one:?}"
    );
    // A second version with the same content shares every blob.
    assert_eq!(acme.upload("echo", &echo).0, 201);
    assert_eq!(blob_names(data.path()), with_one);
    assert_eq!(acme.delete("/api/2.0/models/echo/versions/1").0, 200);
    assert_eq!(
        blob_names(data.path()),
        with_one,
        "version 2 still uses them"
    );
    assert_eq!(acme.delete("/api/2.0/models/echo/versions/2").0, 200);
    assert!(
        blob_names(data.path()).is_empty(),
        "unreferenced blobs stay behind"
    );
    let cache = std::fs::read_dir(data.path().join("cache/components"))
        .unwrap()
        .flatten()
        .flat_map(|engine| std::fs::read_dir(engine.path()).unwrap().flatten())
        .count();
    assert_eq!(
        cache, 0,
        "the compiled component of a collected blob stays cached"
    );
}

/// Uploads `bomb` to a server with the default limits (1 GiB uploads, 4 GiB unpacked) and
/// checks it is refused with 413 `reason`, within bounded memory, leaving nothing on disk.
fn refused_bomb(what: &str, bomb: &[u8], expected_reason: &str) {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let acme = server.client(&server.admin().tenant_with_token("acme", "CAN_MANAGE"));
    assert!(bomb.len() < 2 << 20, "{what} is {} bytes", bomb.len());
    server.reset_peak_memory();
    let before = server.memory_kib("VmRSS");
    let (status, body) = acme.upload("echo", bomb);
    let peak = server.memory_kib("VmHWM");
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!(
        "{what}: RSS {} MiB before, peak {} MiB, growth {growth_mib} MiB; answer {status}",
        before / 1024,
        peak / 1024
    );
    assert_eq!(status, 413, "{what}: {body}");
    assert_eq!(body["error_code"], "PAYLOAD_TOO_LARGE", "{body}");
    assert_eq!(reason(&body), expected_reason, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        growth_mib < 64,
        "server RSS grew by {growth_mib} MiB while refusing {what}"
    );
    assert!(blob_names(data.path()).is_empty(), "{what} left blobs");
    assert_eq!(pending_writes(data.path()), 0, "{what} left a temp file");
}

#[test]
fn a_gzip_bomb_is_refused_early_with_bounded_memory_and_nothing_left_on_disk() {
    if !onnx_available("gzip bomb") {
        return;
    }
    // About 1 MiB whose handler entry inflates to 1 GiB: refused by its header's size.
    let handler_bomb = bomb_of_zeros(&echo_manifest(), &[], "echo.wasm", 1024);
    refused_bomb("a 1 GiB handler bomb", &handler_bomb, "handler_too_large");
    // About 1 MiB whose model file inflates to 1 GiB: refused by its compression ratio.
    let manifest = format!(
        "{}\n[[graphs]]\nname = \"g\"\nencoding = \"onnx\"\nfiles = [\"model/g.onnx\"]\n",
        echo_manifest()
    );
    let echo = echo_wasm();
    let model_bomb = bomb_of_zeros(&manifest, &[("echo.wasm", &echo)], "model/g.onnx", 1024);
    refused_bomb("a 1 GiB model bomb", &model_bomb, "compression_ratio");
}

#[test]
fn a_truncated_gzip_upload_is_a_400_with_json() {
    if !onnx_available("truncated gzip") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let acme = server.client(&server.admin().tenant_with_token("acme", "CAN_MANAGE"));
    let package = example_package("echo");
    for cut in [package.len() / 2, package.len() * 3 / 4, package.len() - 4] {
        let (status, body) = acme.upload("echo", &package[..cut]);
        assert_eq!(status, 400, "cut at {cut} of {}: {body}", package.len());
        assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE", "{body}");
        assert_eq!(reason(&body), "corrupt_archive", "cut at {cut}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("sandserve package")),
            "the message says what to do: {body}"
        );
        assert!(
            blob_names(data.path()).is_empty(),
            "cut at {cut} left blobs"
        );
        assert_eq!(
            pending_writes(data.path()),
            0,
            "cut at {cut} left a temp file"
        );
    }
    assert_eq!(acme.upload("echo", &package).0, 201);
}

/// A request body that waits for a signal (or its sender's end), then ends.
struct Stalled(std::sync::mpsc::Receiver<()>);

impl std::io::Read for Stalled {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        let _ = self.0.recv();
        Ok(0)
    }
}

#[test]
fn uploads_past_the_concurrency_cap_are_refused_at_once_with_retry_after() {
    if !onnx_available("upload cap") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_env(
        data.path(),
        &[],
        &[("SANDSERVE_MAX_CONCURRENT_UPLOADS", "1")],
    );
    let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let acme = server.client(&token);
    let package = example_package("echo");

    // One upload sends 1 MiB (more than the client buffers), then stalls, holding the only
    // upload slot.
    let (release, stall) = std::sync::mpsc::channel::<()>();
    let slow = server.client(&token);
    let stalled = std::thread::spawn(move || {
        let first = std::io::Cursor::new(vec![0u8; 1 << 20]);
        let mut body = std::io::Read::chain(first, Stalled(stall));
        slow.post_stream(
            "/api/2.0/models/echo/versions",
            "application/gzip",
            &mut body,
        )
    });
    // Once it writes to disk it holds the slot (polled: no timing is assumed).
    for _ in 0..600 {
        if pending_writes(data.path()) > 0 || stalled.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        pending_writes(data.path()),
        1,
        "the stalled upload is in progress"
    );
    // Another upload is refused at once.
    let ((status, body), retry_after) = acme.post_bytes_retry_after(
        "/api/2.0/models/echo/versions",
        "application/gzip",
        &package,
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error_code"], "REQUEST_LIMIT_EXCEEDED", "{body}");
    assert_eq!(reason(&body), "too_many_uploads", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("retry")),
        "{body}"
    );
    assert!(
        retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)),
        "Retry-After"
    );

    // The stalled upload ends (it is no archive) and frees the slot.
    drop(release);
    let (status, body) = stalled.join().unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = acme.upload("echo", &package);
    assert_eq!(status, 201, "{body}");
    assert_eq!(pending_writes(data.path()), 0);
}

#[test]
fn blobs_and_temporaries_a_crash_left_behind_are_removed_at_start() {
    if !onnx_available("orphan blobs") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let acme = server.client(&server.admin().tenant_with_token("acme", "CAN_MANAGE"));
    assert_eq!(acme.upload("echo", &example_package("echo")).0, 201);
    let referenced = blob_names(data.path());
    assert_eq!(referenced.len(), 2, "the archive and the handler");
    server.stop();

    // What a kill -9 during uploads leaves: a published blob no record names, and a write
    // in progress.
    let stray = b"a file an upload wrote before the server was killed";
    let stray_name = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(stray))
    };
    let blobs = data.path().join("blobs");
    std::fs::write(blobs.join("sha256").join(&stray_name), stray).unwrap();
    std::fs::write(blobs.join("tmp").join("0123456789abcdef"), b"half a blob").unwrap();
    assert_eq!(blob_names(data.path()).len(), 3);

    let server = TestServer::start(data.path(), &[]);
    assert_eq!(
        blob_names(data.path()),
        referenced,
        "the stray blob is gone, the referenced ones stay"
    );
    assert_eq!(pending_writes(data.path()), 0, "the temp file is gone");
    let acme = server.client(&server.admin().tenant_with_token("acme", "CAN_MANAGE"));
    let (status, body) = acme.get("/api/2.0/models/echo/versions/1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(acme.upload("echo", &example_package("echo")).0, 201);
    assert_eq!(blob_names(data.path()), referenced);
}
