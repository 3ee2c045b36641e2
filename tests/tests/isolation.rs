//! Isolation around the sandbox, end to end against the real binary: model files that name
//! files outside their package, connections that never finish their headers or bodies
//! (slowloris), and TLS as real clients (curl, Python's `ssl`) speak it.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::hostile_onnx::external_data_model;
use sandserve_tests::packages::{example_package, handler_package};
use sandserve_tests::server::{reason, TenantServer, TestServer};
use sandserve_tests::{onnx_available, openvino_available};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A package whose graph's weights are "external": `location` names another file.
fn leaking_package(encoding: &str, location: &str) -> Vec<u8> {
    handler_package(
        "leak",
        "nn-proxy",
        &format!(
            "[[graphs]]\nname = \"leak\"\nencoding = \"{encoding}\"\nfiles = [\"model/leak.onnx\"]\n"
        ),
        &[("model/leak.onnx", external_data_model(location, 8))],
    )
}

#[test]
fn packages_whose_graphs_name_outside_files_are_refused_without_host_paths() {
    if !onnx_available("external data upload") || !openvino_available("external data upload") {
        return;
    }
    let s = TenantServer::start(&[]);
    let data_dir = s.server.data_dir.display().to_string();
    // The server's working directory has a Cargo.toml; the blob folder holds every
    // tenant's files by digest, and the metadata database sits next to it.
    let handler_blob = format!("{:x}", sha2_of(&sandserve_tests::guest_wasm("nn-proxy")));
    for encoding in ["onnx", "openvino"] {
        for location in ["Cargo.toml", handler_blob.as_str(), "../../metadata/db"] {
            let (status, body) = s
                .client
                .upload("leak", &leaking_package(encoding, location));
            assert_eq!(status, 400, "{encoding} {location}: {body}");
            assert_eq!(reason(&body), "graph_not_self_contained", "{body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("tensor `w`"), "{message}");
            assert!(!message.contains(&data_dir), "{message}");
            assert!(!message.contains(location), "{message}");
        }
    }
    let (status, models) = s.client.get("/api/2.0/models");
    assert_eq!(status, 200);
    assert_eq!(
        models["models"],
        serde_json::json!([]),
        "nothing was published"
    );
}

fn sha2_of(bytes: &[u8]) -> impl std::fmt::LowerHex {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
}

/// Reads until the server closes the connection (true) or `limit` passes (false).
fn closed_within(stream: &mut TcpStream, limit: Duration) -> (bool, String) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&seen).into_owned()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (true, String::from_utf8_lossy(&seen).into_owned()),
        }
    }
    (false, String::from_utf8_lossy(&seen).into_owned())
}

fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.url.trim_start_matches("http://")).unwrap()
}

#[test]
fn half_sent_headers_and_stalled_bodies_are_cut_off() {
    let s = TenantServer::start(&[
        "--header-read-timeout-secs",
        "1",
        "--body-read-timeout-secs",
        "1",
    ]);
    // Half a header, then silence: closed by the header timeout.
    let mut half = connect(&s.server);
    half.write_all(b"POST /v2/models/x/infer HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (closed, _) = closed_within(&mut half, Duration::from_secs(20));
    assert!(closed, "a half-sent header must not hold a connection");
    // Nothing at all: closed too.
    let mut silent = connect(&s.server);
    let (closed, _) = closed_within(&mut silent, Duration::from_secs(20));
    assert!(closed, "a silent connection must not be held");

    // A chunked body that stops arriving, on a query and on an upload: 408 with JSON.
    for path in [
        "/serving-endpoints/nothing/invocations",
        "/api/2.0/models/stalled/versions",
    ] {
        let mut stalled = connect(&s.server);
        write!(
            stalled,
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
            s.token
        )
        .unwrap();
        let (_, answer) = closed_within(&mut stalled, Duration::from_secs(20));
        let status_line = answer.lines().next().unwrap_or_default();
        assert!(status_line.contains("408"), "{path}: {answer}");
        assert!(answer.contains("\"error_code\""), "{answer}");
    }
    let (status, _) = s.client.get("/api/2.0/models");
    assert_eq!(status, 200, "the server still answers");
}

#[test]
fn a_full_connection_table_makes_room_for_a_real_client() {
    let s = TenantServer::start(&["--max-connections", "8"]);
    // Eight connections that send half a header each: the table is full of them.
    let mut hogs: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = connect(&s.server);
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let (status, _) = s.client.get("/api/2.0/models");
        assert_eq!(status, 200, "a client with a token gets through");
    }
    // The idle hogs gave way: at least as many as the client's connections were closed.
    let closed = hogs
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_millis(500)).0)
        .filter(|closed| *closed)
        .count();
    assert!(closed >= 1, "no half-open connection was evicted");
}

/// Runs `python3 -c script args...` and returns its stdout, failing on a non-zero exit.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One TLS handshake with Python's `ssl`: prints `version alpn sha256-of-certificate` or
/// `refused: <reason>`.
const PY_TLS: &str = r#"
import hashlib, socket, ssl, sys
host, port, version, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
if version == "1.1":
    # Let the client offer TLS 1.1 at all, so that the refusal is the server's.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
else:
    ctx.load_verify_locations(cafile)
v = {"1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
ctx.minimum_version = v
ctx.maximum_version = v
ctx.set_alpn_protocols(["h2", "http/1.1"])
try:
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            cert = tls.getpeercert(binary_form=True)
            print(tls.version(), tls.selected_alpn_protocol(), hashlib.sha256(cert).hexdigest())
except ssl.SSLError as e:
    print("refused:", e.reason)
"#;

#[test]
fn tls_speaks_1_2_and_1_3_with_http2_refuses_the_rest_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let make_cert = || {
        let status = Command::new(sandserve_tests::server::sandserve_bin())
            .args(["cert", "--self-signed", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success());
    };
    make_cert();
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        data.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = server.url.clone();
    assert!(url.starts_with("https://"), "{url}");
    let port = url.rsplit(':').next().unwrap().to_string();
    let cafile = cert.to_str().unwrap();

    // curl: TLS 1.2 and 1.3, HTTP/2 by ALPN and HTTP/1.1.
    for args in [
        &["--tlsv1.2", "--tls-max", "1.2", "--http1.1"][..],
        &["--tlsv1.3", "--http2"][..],
    ] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                cafile,
                "-w",
                "\n%{http_code} %{http_version}",
            ])
            .args(args)
            .arg(format!("https://localhost:{port}/health"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or_default().to_string();
        let want = if args.contains(&"--http2") {
            "200 2"
        } else {
            "200 1.1"
        };
        assert_eq!(
            last,
            want,
            "curl {args:?}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg(format!("http://127.0.0.1:{port}/health"))
        .output()
        .unwrap();
    assert!(
        !plain.status.success() || String::from_utf8_lossy(&plain.stdout) == "000",
        "plain HTTP must not be served on the TLS port"
    );

    // Python's ssl: 1.2 and 1.3 succeed with h2; 1.1 is refused by the server.
    let first = python(PY_TLS, &["127.0.0.1", &port, "1.3", cafile]);
    assert!(first.starts_with("TLSv1.3 h2 "), "{first}");
    let tls12 = python(PY_TLS, &["127.0.0.1", &port, "1.2", cafile]);
    assert!(tls12.starts_with("TLSv1.2 h2 "), "{tls12}");
    let tls11 = python(PY_TLS, &["127.0.0.1", &port, "1.1", cafile]);
    assert!(
        // An alert is the server's answer (a client-side refusal would name no alert).
        tls11.starts_with("refused:") && tls11.contains("ALERT"),
        "TLS 1.1 must be refused by the server: {tls11}"
    );

    // A new certificate in place of the old one is served without a restart.
    let old_fingerprint = first.rsplit(' ').next().unwrap().to_string();
    make_cert();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Verified against the new certificate: the old one fails verification.
        let now = python(PY_TLS, &["127.0.0.1", &port, "1.3", cafile]);
        if !now.starts_with("refused:") && !now.ends_with(&old_fingerprint) {
            assert!(now.starts_with("TLSv1.3 h2 "), "{now}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_tenant_spinning_on_every_thread_it_may_hold_does_not_delay_another() {
    let s = TenantServer::start(&[]);
    let spin = handler_package(
        "spin",
        "infinite-loop",
        "[limits]\ntimeout_ms = 5000\nmax_concurrency = 100\n",
        &[],
    );
    assert_eq!(s.client.upload("spin", &spin).0, 201);
    let quiet = s
        .server
        .client(&s.server.admin().tenant_with_token("quiet", "CAN_MANAGE"));
    assert_eq!(quiet.upload("echo", &example_package("echo")).0, 201);
    let echo = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]});
    assert_eq!(quiet.post("/v2/models/echo/versions/1/infer", &echo).0, 200);

    // More spinning requests than the server has guest threads (64 on a small machine).
    let finished = Arc::new(AtomicUsize::new(0));
    let spinners: Vec<_> = (0..70)
        .map(|_| {
            let client = s.server.client(&s.token);
            let finished = finished.clone();
            std::thread::spawn(move || {
                let (status, body) = client.post(
                    "/v2/models/spin/versions/1/infer",
                    &json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.0]}]}),
                );
                finished.fetch_add(1, Ordering::SeqCst);
                (status, body)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = quiet.post("/v2/models/echo/versions/1/infer", &echo);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the quiet tenant must be answered while every spinning request is still running or \
         waiting, not after the first ones time out"
    );
    for spinner in spinners {
        let (status, body) = spinner.join().unwrap();
        // Running ones time out; waiting ones reach their deadline in the queue: both 504.
        assert_eq!(status, 504, "{body}");
    }
}

/// A V2 request to the slow-on-request fixture with these parameters.
fn slow_request(parameters: serde_json::Value) -> serde_json::Value {
    json!({
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}],
        "parameters": parameters,
    })
}

#[test]
fn guest_memories_share_one_server_budget_and_what_cannot_fit_is_503() {
    let s = TenantServer::start(&["--memory-budget-mib", "512"]);
    let holder = handler_package(
        "holder",
        "slow-on-request",
        "[limits]\nmemory_mib = 300\ntimeout_ms = 20000\n",
        &[],
    );
    assert_eq!(s.client.upload("holder", &holder).0, 201);
    let path = "/v2/models/holder/versions/1/infer";
    assert_eq!(s.client.post(path, &slow_request(json!({}))).0, 200);
    s.server.reset_peak_memory();
    let before = s.server.memory_kib("VmRSS");
    // Three guests that each hold 200 MiB for two seconds: two fit in 512 MiB, one cannot.
    let holders: Vec<_> = (0..3)
        .map(|_| {
            let client = s.server.client(&s.token);
            std::thread::spawn(move || {
                client.post(
                    path,
                    &slow_request(json!({"alloc_mib": 200, "sleep_ms": 2000})),
                )
            })
        })
        .collect();
    let mut statuses: Vec<u16> = Vec::new();
    for holder in holders {
        let (status, body) = holder.join().unwrap();
        if status == 503 {
            assert_eq!(reason(&body), "memory_budget_exhausted", "{body}");
            assert!(
                body["message"].as_str().unwrap().contains("retry"),
                "{body}"
            );
        }
        statuses.push(status);
    }
    // At least one fits and at least one does not (which ones, and whether a second one
    // got in after the first was done, depends on scheduling).
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "{statuses:?}"
    );
    let peak = s.server.memory_kib("VmHWM");
    assert!(
        peak.saturating_sub(before) < (512 + 64) << 10,
        "the server grew by {} MiB under a 512 MiB budget",
        peak.saturating_sub(before) >> 10
    );
    // Once they are done, the budget is whole again.
    assert_eq!(
        s.client
            .post(path, &slow_request(json!({"alloc_mib": 280})))
            .0,
        200
    );
}

#[test]
fn an_entity_whose_memory_limit_exceeds_the_budget_is_not_deployed() {
    let s = TenantServer::start(&["--memory-budget-mib", "256"]);
    let big = handler_package(
        "big",
        "slow-on-request",
        "[limits]\nmemory_mib = 1024\n",
        &[],
    );
    assert_eq!(s.client.upload("big", &big).0, 201);
    let (status, body) = s
        .client
        .post("/v2/models/big/versions/1/infer", &slow_request(json!({})));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("memory budget"),
        "{body}"
    );
}

#[test]
fn a_client_that_never_reads_its_answer_does_not_keep_its_connection() {
    // One connection at most: while a stuck answer held it, nobody else could connect.
    let s = TenantServer::start(&["--max-connections", "1", "--body-read-timeout-secs", "1"]);
    let huge = handler_package(
        "huge",
        "huge-output",
        "[limits]\nmax_output_mib = 64\ntimeout_ms = 30000\n",
        &[],
    );
    assert_eq!(s.client.upload("huge", &huge).0, 201);
    // 40 MiB of output is ~80 MiB of JSON: far more than the socket buffers hold.
    let body = r#"{"inputs":[{"name":"bytes","shape":[1],"datatype":"INT64","data":[41943040]}]}"#;
    let mut stuck = connect(&s.server);
    write!(
        stuck,
        "POST /v2/models/huge/versions/1/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.token,
        body.len()
    )
    .unwrap();
    // Never read. The server gives up on the answer and closes; then a new client gets in.
    // Making and encoding the answer takes a debug build ~25 s on a quiet 2-core machine
    // (and over 60 s once under a parallel build): the bound only catches a connection
    // that is never given back.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        // A fresh client each time: the cap closes idle connections a pooled one may hold.
        let (status, _) = s.server.client(&s.token).get("/api/2.0/models");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only the connection cap may refuse");
        assert!(
            Instant::now() < deadline,
            "the unread answer held the connection"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(stuck);
}
