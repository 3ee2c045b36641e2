//! The client commands as a user sees them, against the real binary and server: tables,
//! `--json`, errors that say what to do next (bad token, unknown name, no server, untrusted
//! certificate), `login`'s 0600 file and the environment over it, `push` reusing a version
//! by digest, the progress bar of a multi-MB push in a terminal (tmux), and local `invoke`
//! of a package with its graphs agreeing with the server's answer.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::{digits_model, example_package};
use sandserve_tests::server::{sandserve_bin, TestServer, ADMIN_TOKEN};
use sandserve_tests::{onnx_available, read_f32};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `sandserve` with the client settings in `env` (and no others of this shell).
struct Cli {
    config: PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn new(url: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            config: dir.path().join("config.toml"),
            env: vec![
                ("SANDSERVE_URL".into(), url.into()),
                ("SANDSERVE_TOKEN".into(), token.into()),
            ],
            _dir: dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(sandserve_bin());
        for (name, _) in std::env::vars() {
            if name.starts_with("SANDSERVE_") {
                command.env_remove(name);
            }
        }
        command.env("SANDSERVE_CLI_CONFIG", &self.config);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command.args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sandserve {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "sandserve {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Lines of a table, each split on runs of spaces.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

#[test]
fn admin_and_tenant_commands_print_tables_json_and_helpful_errors() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let admin = Cli::new(&server.url, ADMIN_TOKEN);

    assert_eq!(
        admin.ok(&["tenants", "create", "acme"]).trim(),
        "created tenant acme; give it a token with `sandserve tokens create --tenant acme`"
    );
    let rows = table(&admin.ok(&["tenants", "list"]));
    assert_eq!(rows[0], ["NAME", "CREATED"]);
    assert_eq!(rows[1][0], "acme");
    assert_eq!(rows.len(), 2);
    let listed = admin.json(&["tenants", "list"]);
    assert_eq!(listed["tenants"][0]["name"], "acme");

    let out = admin.run(&[
        "tokens",
        "create",
        "--tenant",
        "acme",
        "--permission",
        "CAN_MANAGE",
        "--comment",
        "cli test",
    ]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown only once"));
    let rows = table(&admin.ok(&["tokens", "list", "--tenant", "acme"]));
    assert_eq!(
        rows[0],
        [
            "TOKEN_ID",
            "TENANT",
            "PERMISSION",
            "COVERS",
            "CREATED",
            "EXPIRES",
            "COMMENT"
        ]
    );
    assert_eq!(&rows[1][1..4], ["acme", "CAN_MANAGE", "*"]);
    assert_eq!(rows[1][6], "cli test");

    let tenant = Cli::new(&server.url, &token);
    // Empty lists say what to do.
    assert!(tenant.ok(&["models", "list"]).contains("sandserve push"));
    assert!(tenant
        .ok(&["endpoints", "list"])
        .contains("sandserve deploy"));

    // Errors: status, the server's code and message, and a hint.
    let bad = Cli::new(&server.url, "not-a-token-at-all");
    let err = bad.fails(&["models", "list"]);
    assert!(
        err.contains("401") && err.contains("UNAUTHENTICATED"),
        "{err}"
    );
    assert!(err.contains("hint: the token was refused"), "{err}");
    let err = tenant.fails(&["endpoints", "get", "nope"]);
    assert!(
        err.contains("404") && err.contains("RESOURCE_DOES_NOT_EXIST"),
        "{err}"
    );
    assert!(err.contains("sandserve endpoints list"), "{err}");
    let err = tenant.fails(&["tenants", "list"]);
    assert!(err.contains("403"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Cli::new(&format!("http://{closed}"), &token).fails(&["models", "list"]);
    assert!(
        err.contains("cannot reach") && err.contains("is the server running"),
        "{err}"
    );
    let mut none = Cli::new("", "");
    none.env.clear();
    let err = none.fails(&["models", "list"]);
    assert!(
        err.contains("sandserve login --url URL --token TOKEN"),
        "{err}"
    );
    let err = tenant.fails(&[
        "endpoints",
        "update",
        "x",
        "--serve",
        "m:1",
        "--serve",
        "m:2",
    ]);
    assert!(err.contains("--serve m:1=PERCENT"), "{err}");
    let err = tenant.fails(&["endpoints", "create", "x", "--serve", "m"]);
    assert!(err.contains("MODEL:VERSION"), "{err}");

    // login checks the token, writes a 0600 file; the environment overrides the file.
    let mut fresh = Cli::new("", "");
    fresh.env.clear();
    let err = fresh.fails(&["login", "--url", &server.url, "--token", "wrong-token-xyz"]);
    assert!(err.contains("401"), "{err}");
    assert!(!fresh.config.exists(), "a refused login saves nothing");
    fresh.ok(&["login", "--url", &server.url, "--token", &token]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&fresh.config).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(fresh.ok(&["models", "list"]).contains("no models"));
    fresh
        .env
        .push(("SANDSERVE_TOKEN".into(), "overridden-token-0".into()));
    assert!(fresh.fails(&["models", "list"]).contains("401"));

    // Completions name the commands.
    let bash = admin.ok(&["completions", "bash"]);
    assert!(
        bash.contains("_sandserve") && bash.contains("endpoints"),
        "{bash}"
    );
}

#[test]
fn push_deploy_update_and_a_second_push_of_the_same_bytes() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let cli = Cli::new(&server.url, &token);
    let dir = tempfile::tempdir().unwrap();
    let package = write(dir.path(), "echo.tar.gz", &example_package("echo"));
    let package = package.to_str().unwrap();

    let pushed = cli.json(&["push", package]);
    assert_eq!(pushed["name"], "echo");
    assert_eq!(pushed["version"], 1);
    assert_eq!(pushed["uploaded"], true);
    // The same bytes again: the version is found by its sha256, nothing is uploaded.
    let again = cli.json(&["push", package]);
    assert_eq!(again["version"], 1);
    assert_eq!(again["uploaded"], false);
    assert_eq!(again["digest"], pushed["digest"]);
    let versions = cli.json(&["models", "get", "echo"]);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    assert_eq!(versions["versions"][0]["digest"], pushed["digest"]);
    // Other bytes: a version of their own.
    let manifest =
        sandserve_tests::packages::echo_manifest().replace("Validates", "Version 2 validates");
    let second = sandserve_tests::packages::Tar::default()
        .file("sandserve.toml", manifest.as_bytes())
        .file("echo.wasm", &sandserve_tests::packages::echo_wasm())
        .gzip();
    let second = write(dir.path(), "echo2.tar.gz", &second);
    assert_eq!(cli.json(&["push", second.to_str().unwrap()])["version"], 2);

    let out = cli.ok(&["deploy", package, "--endpoint", "e"]);
    let rows = table(&out);
    assert_eq!(rows[0], ["NAME", "READY", "UPDATE", "SERVES", "CREATED"]);
    assert_eq!(&rows[1][..4], ["e", "READY", "NOT_UPDATING", "echo:1=100%"]);

    let shown = cli.json(&[
        "endpoints",
        "update",
        "e",
        "--serve",
        "echo:1=70",
        "--serve",
        "echo:2=30",
    ]);
    assert_eq!(shown["state"]["ready"], "READY");
    let routes = &shown["config"]["traffic_config"]["routes"];
    assert_eq!(routes[0]["traffic_percentage"], 70);
    assert_eq!(routes[1]["served_entity_name"], "echo-2");

    // Remote invoke, V2 and Databricks; the answer is the server's JSON.
    let v2 = cli.json(&[
        "invoke",
        "--endpoint",
        "e",
        "--data",
        r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}]}"#,
    ]);
    assert_eq!(v2["outputs"][0]["data"], serde_json::json!([1.0, 2.0]));
    let err = cli.fails(&["invoke", "--endpoint", "e", "--data", "{\"nothing\": 1}"]);
    assert!(
        err.contains("400") && err.contains("INVALID_PARAMETER_VALUE"),
        "{err}"
    );

    let err = cli.fails(&["models", "delete", "echo", "1"]);
    assert!(err.contains("409"), "{err}");
    cli.ok(&["endpoints", "delete", "e"]);
    assert!(cli
        .ok(&["models", "delete", "echo", "1"])
        .contains("deleted model echo version 1"));
}

/// A package of `mib` MiB that does not compress: the echo handler with a custom section of
/// random bytes (a component may carry custom sections; the host ignores them).
fn big_package(dir: &Path, mib: usize, name: &str) -> PathBuf {
    let mut wasm = sandserve_tests::packages::echo_wasm();
    let mut payload = vec![0u8; mib << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in payload.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let section_name = b"padding";
    let mut section = vec![section_name.len() as u8];
    section.extend_from_slice(section_name);
    section.extend_from_slice(&payload);
    wasm.push(0);
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            wasm.push(byte);
            break;
        }
        wasm.push(byte | 0x80);
    }
    wasm.extend_from_slice(&section);
    let package = handler_package_with(name, &wasm);
    write(dir, &format!("{name}.tar.gz"), &package)
}

fn handler_package_with(name: &str, wasm: &[u8]) -> Vec<u8> {
    let manifest = format!("name = \"{name}\"\nhandler = \"handler.wasm\"\n");
    sandserve_tests::packages::Tar::default()
        .file("sandserve.toml", manifest.as_bytes())
        .file("handler.wasm", wasm)
        .gzip()
}

#[test]
fn a_multi_mib_push_shows_its_progress_in_a_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let dir = tempfile::tempdir().unwrap();
    let package = big_package(dir.path(), 24, "plain");
    let size = std::fs::metadata(&package).unwrap().len();
    assert!(size > 24 << 20, "{size}");

    // Without a terminal: no bar, one summary line.
    let cli = Cli::new(&server.url, &token);
    let out = cli.run(&["push", package.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("uploaded 24.0 MiB in"), "{err}");
    assert!(!err.contains("ETA"), "{err}");

    // In a terminal (tmux): the bar with bytes, rate and ETA, recorded by pipe-pane.
    let package = big_package(dir.path(), 24, "tty");
    let size = std::fs::metadata(&package).unwrap().len();
    let session = format!("sandserve-cli-{}", std::process::id());
    let record = dir.path().join("pane.log");
    let script = dir.path().join("push.sh");
    let done = dir.path().join("done");
    std::fs::write(
        &script,
        format!(
            "SANDSERVE_CLI_CONFIG={} SANDSERVE_URL={} SANDSERVE_TOKEN={} {} push {}; echo $? > {}\n",
            cli.config.display(),
            server.url,
            token,
            sandserve_bin().display(),
            package.display(),
            done.display()
        ),
    )
    .unwrap();
    let tmux = |args: &[&str]| {
        let status = Command::new("tmux").args(args).status().unwrap();
        assert!(status.success(), "tmux {args:?}");
    };
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "20",
        "sleep 600",
    ]);
    tmux(&[
        "pipe-pane",
        "-t",
        &session,
        "-o",
        &format!("cat >> {}", record.display()),
    ]);
    tmux(&[
        "respawn-pane",
        "-k",
        "-t",
        &session,
        &format!("bash {}; sleep 600", script.display()),
    ]);
    let started = Instant::now();
    while !done.exists() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "0");
    let shown = String::from_utf8_lossy(&std::fs::read(&record).unwrap()).into_owned();
    assert!(shown.contains("uploading ["), "{shown}");
    let total = format!("/{:.2} MiB", size as f64 / 1048576.0);
    assert!(shown.contains(&total), "{total} in {shown}");
    assert!(shown.contains("MiB/s") && shown.contains("ETA"), "{shown}");
    assert!(shown.contains("uploaded 24.0 MiB in"), "{shown}");
}

#[test]
fn a_package_runs_locally_with_its_graphs_as_the_server_serves_it() {
    if !onnx_available("a_package_runs_locally_with_its_graphs_as_the_server_serves_it")
        || !digits_model().is_file()
    {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]);
    let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let cli = Cli::new(&server.url, &token);
    let dir = tempfile::tempdir().unwrap();
    let package = write(dir.path(), "digits.tar.gz", &example_package("digits"));
    let package = package.to_str().unwrap();
    let pixels =
        read_f32(&sandserve_tests::repo_root().join("examples/digits/model/test_inputs.f32"));
    let rows: Vec<Vec<f32>> = (0..3)
        .map(|i| {
            pixels[i * 64..(i + 1) * 64]
                .iter()
                .map(|v| v * 16.0)
                .collect()
        })
        .collect();
    let body = serde_json::json!({"instances": rows}).to_string();

    let local: Value =
        serde_json::from_str(&cli.ok(&["invoke", package, "--data", &body])).unwrap();
    assert_eq!(local["predictions"].as_array().unwrap().len(), 3);
    cli.ok(&["deploy", package]);
    let remote = cli.json(&["invoke", "--endpoint", "digits", "--data", &body]);
    assert_eq!(local, remote);
    // The package's signature is checked locally as on the server.
    let err = cli.fails(&["invoke", package, "--data", r#"{"instances": [[1, 2]]}"#]);
    assert!(err.contains("signature") || err.contains("64"), "{err}");
    // Not a package: said so.
    let junk = write(dir.path(), "junk.tar.gz", b"not a package");
    let err = cli.fails(&["invoke", junk.to_str().unwrap(), "--data", &body]);
    assert!(err.contains("neither a handler component"), "{err}");
}

#[test]
fn a_self_signed_server_needs_its_certificate_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new(sandserve_bin())
        .args(["cert", "--self-signed", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
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
    assert!(server.url.starts_with("https://"));
    let admin = Cli::new(&server.url, ADMIN_TOKEN);
    let err = admin.fails(&["tenants", "list"]);
    assert!(err.contains("--cacert"), "{err}");
    let listed = admin.json(&["tenants", "list", "--cacert", cert.to_str().unwrap()]);
    assert_eq!(listed["tenants"], serde_json::json!([]));
}

#[test]
fn a_classifier_project_builds_and_runs_its_graph() {
    if !onnx_available("a_classifier_project_builds_and_runs_its_graph") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("", "");
    let run_in = |args: &[&str]| {
        let out = cli
            .command(args)
            .current_dir(dir.path().join("iris"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = cli
        .command(&["new", "iris", "--template", "classifier"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_in(&["build"]);
    let answer: Value = serde_json::from_str(&run_in(&[
        "invoke",
        "iris.tar.gz",
        "--data",
        r#"{"instances": [[5, 1, 0, 0], [0, 1, 6, 0]]}"#,
    ]))
    .unwrap();
    assert_eq!(answer["predictions"][0]["label"], 0, "{answer}");
    assert_eq!(answer["predictions"][1]["label"], 2, "{answer}");
    let p = answer["predictions"][0]["probabilities"]
        .as_array()
        .unwrap();
    let sum: f64 = p.iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-5, "{answer}");
}

#[test]
fn a_push_refused_while_the_server_is_busy_is_retried() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &["--max-concurrent-uploads", "1"]);
    let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let cli = Cli::new(&server.url, &token);
    let dir = tempfile::tempdir().unwrap();
    let package = write(dir.path(), "echo.tar.gz", &example_package("echo"));

    // Another client holds the only upload slot: it sent headers and a little of its body.
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut held = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        held,
        "POST /api/2.0/models/echo/versions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/gzip\r\nContent-Length: 10000000\r\n\r\n"
    )
    .unwrap();
    held.write_all(&[0x1f, 0x8b, 8, 0]).unwrap();
    held.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // It gives up a second and a half later, freeing the slot.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });

    let out = cli.run(&["push", package.to_str().unwrap(), "--json"]);
    release.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("429") && err.contains("too many package uploads"),
        "{err}"
    );
    assert!(err.contains("retrying in"), "{err}");
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["version"], 1);
    assert_eq!(pushed["uploaded"], true);
    // One version: the held upload published nothing, the retry published once.
    assert_eq!(
        cli.json(&["models", "get", "echo"])["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
