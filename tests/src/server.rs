//! Driving the real `sandserve` binary: start it on 127.0.0.1 with a data folder, talk to
//! it over HTTP, stop it, read its memory use.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The bootstrap admin token every test server starts with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The `sandserve` binary of this build profile, brought up to date once per test process
/// (the first call runs `cargo build -p sandserve-host --bin sandserve` into this test's own
/// target folder and profile; cargo does nothing when it is fresh). So `cargo test` works on
/// a clean checkout, and never drives a binary older than the library the tests link.
///
/// `cargo test` has released its lock on the target folder by the time it runs the test
/// binaries, so the nested build does not wait on it. `SANDSERVE_BIN=PATH` drives that
/// binary instead (benchmarks against an earlier build in the same sitting).
pub fn sandserve_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build_sandserve).clone()
}

/// Variables cargo sets for a test process besides `CARGO_PKG_*` and `CARGO_BIN_*`.
const SET_FOR_TESTS: [&str; 7] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

fn build_sandserve() -> PathBuf {
    // A given binary (a benchmark against an earlier build, in the same sitting).
    if let Some(bin) = std::env::var_os("SANDSERVE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "SANDSERVE_BIN={} is not a file",
            bin.display()
        );
        return bin;
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/[<triple>/]<profile>/deps");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("profile folder of {}", exe.display()),
    };
    // `<target>/<profile>`, or `<target>/<triple>/<profile>` for `cargo test --target`;
    // cargo marks the target folder itself with CACHEDIR.TAG.
    let mut target_dir = profile_dir.parent().expect("target folder");
    let mut triple = None;
    if !target_dir.join("CACHEDIR.TAG").is_file() {
        if let Some(up) = target_dir
            .parent()
            .filter(|up| up.join("CACHEDIR.TAG").is_file())
        {
            triple = target_dir.file_name();
            target_dir = up;
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "sandserve-host",
            "--bin",
            "sandserve",
        ])
        .args(["--profile", profile])
        .arg("--manifest-path")
        .arg(crate::repo_root().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    if let Some(triple) = triple {
        build.arg("--target").arg(triple);
    }
    // What cargo sets for this test process describes the test crate, not a build: a build
    // script that watches one of them (ring's watches CARGO_MANIFEST_DIR) would see it
    // change between this build and a plain `cargo build`, and each would rebuild.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || SET_FOR_TESTS.contains(&name)
        {
            build.env_remove(name);
        }
    }
    let status = build.status().expect("cargo runs");
    assert!(
        status.success(),
        "`cargo build -p sandserve-host --bin sandserve --profile {profile}` failed: {status}"
    );
    let bin = profile_dir.join("sandserve");
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin
}

/// A running server.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data folder.
    pub data_dir: PathBuf,
    /// Where its log goes, when started with [`TestServer::start_logging`].
    log_path: Option<PathBuf>,
}

impl TestServer {
    /// Starts `sandserve serve` on a free port with `data_dir` and extra flags, and waits
    /// until it listens.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Self {
        Self::spawn(data_dir, extra_args, &[], None)
    }

    /// Like [`TestServer::start`], with extra environment variables (settings read from
    /// `SANDSERVE_*`).
    pub fn start_with_env(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(data_dir, extra_args, env, None)
    }

    /// Like [`TestServer::start`], with the log filtered by `filter` (`SANDSERVE_LOG`
    /// syntax) and written to a file that [`TestServer::log`] reads.
    pub fn start_logging(data_dir: &Path, extra_args: &[&str], filter: &str) -> Self {
        Self::spawn(data_dir, extra_args, &[], Some(filter))
    }

    /// What the server has logged so far, without terminal colours (empty unless started
    /// with [`TestServer::start_logging`]).
    pub fn log(&self) -> String {
        let text = self
            .log_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        strip_ansi(&text)
    }

    fn spawn(
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
        log_filter: Option<&str>,
    ) -> Self {
        let log_path = log_filter.map(|_| data_dir.with_extension("server.log"));
        let stderr = match &log_path {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("server log file")),
            None => Stdio::inherit(),
        };
        let filter = match log_filter {
            Some(filter) => filter.to_string(),
            None => std::env::var("SANDSERVE_TEST_LOG").unwrap_or_else(|_| "error".into()),
        };
        let mut child = Command::new(sandserve_bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("SANDSERVE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SANDSERVE_ENGINES_DIR", crate::repo_root().join(".engines"))
            .env("SANDSERVE_LOG", filter)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("sandserve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.to_string();
                    }
                }
                _ => {
                    let status = child.wait().ok();
                    panic!("sandserve exited before listening: {status:?}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            log_path,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client with `token`.
    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.url, token)
    }

    /// A client with the admin token.
    pub fn admin(&self) -> Client {
        self.client(ADMIN_TOKEN)
    }

    /// Stops the server with SIGTERM and waits for it to finish.
    /// Sends SIGTERM (the server drains) without waiting for it to exit.
    pub fn signal_terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// The exit status, once the server has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `within` for the server to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) {
        terminate(&mut self.child);
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Resets the peak-RSS counter (`VmHWM`) to the current RSS.
    pub fn reset_peak_memory(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .expect("write /proc/<pid>/clear_refs");
    }
}

/// A server in a temporary data folder with one tenant, `acme`, and a CAN_MANAGE client.
pub struct TenantServer {
    /// The server.
    pub server: TestServer,
    /// The tenant's token.
    pub token: String,
    /// A client with that token.
    pub client: Client,
    _data: tempfile::TempDir,
}

impl TenantServer {
    /// Starts it with `extra_args`.
    pub fn start(extra_args: &[&str]) -> Self {
        Self::with(|dir| TestServer::start(dir, extra_args))
    }

    /// Starts it with `extra_args`, logging as [`TestServer::start_logging`] does.
    pub fn start_logging(extra_args: &[&str], filter: &str) -> Self {
        Self::with(|dir| TestServer::start_logging(dir, extra_args, filter))
    }

    fn with(start: impl FnOnce(&Path) -> TestServer) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let server = start(data.path());
        let token = server.admin().tenant_with_token("acme", "CAN_MANAGE");
        let client = server.client(&token);
        Self {
            server,
            token,
            client,
            _data: data,
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child);
        }
        if let Some(path) = &self.log_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An HTTP client bound to one server and one token.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// Status and JSON body of a response (`Null` when the body is not JSON).
pub type Reply = (u16, Value);

/// A response as it came: status, headers, body bytes.
pub struct RawReply {
    /// HTTP status.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RawReply {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Client {
    /// A client for `base` with `token` (empty = no Authorization header).
    pub fn new(base: &str, token: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Self {
            agent,
            base: base.to_string(),
            token: token.to_string(),
        }
    }

    fn finish(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut response = response.expect("HTTP exchange");
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        if self.token.is_empty() {
            request
        } else {
            request.header("Authorization", &format!("Bearer {}", self.token))
        }
    }

    /// GET.
    pub fn get(&self, path: &str) -> Reply {
        Self::finish(
            self.auth(self.agent.get(format!("{}{path}", self.base)))
                .call(),
        )
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Reply {
        Self::finish(
            self.auth(self.agent.delete(format!("{}{path}", self.base)))
                .call(),
        )
    }

    /// POST a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        Self::finish(
            self.auth(self.agent.post(format!("{}{path}", self.base)))
                .send_json(body),
        )
    }

    /// PUT a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Reply {
        Self::finish(
            self.auth(self.agent.put(format!("{}{path}", self.base)))
                .send_json(body),
        )
    }

    /// PATCH a JSON body.
    pub fn patch(&self, path: &str, body: &Value) -> Reply {
        Self::finish(
            self.auth(self.agent.patch(format!("{}{path}", self.base)))
                .send_json(body),
        )
    }

    /// POST raw bytes with a content type and extra headers.
    pub fn post_bytes(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut request = self
            .auth(self.agent.post(format!("{}{path}", self.base)))
            .header("Content-Type", content_type);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::finish(request.send(body))
    }

    /// GET with extra headers; the status, the response headers (names in lower case)
    /// and the raw body.
    pub fn get_raw(&self, path: &str, headers: &[(&str, &str)]) -> RawReply {
        let mut request = self.auth(self.agent.get(format!("{}{path}", self.base)));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::raw(request.call().expect("HTTP exchange"))
    }

    /// The server's `sandserve_batches_total` for image version `image`
    /// (`tenant/model@version`), all of it or only batches whose `cross_tenant` label is
    /// `cross_tenant` (an admin client reads `/metrics`).
    pub fn batches_total(&self, image: &str, cross_tenant: Option<bool>) -> u64 {
        let reply = self.get_raw("/metrics", &[]);
        assert_eq!(reply.status, 200, "GET /metrics");
        let text = String::from_utf8(reply.body).expect("metrics are text");
        let image = format!("image=\"{image}\"");
        let cross = cross_tenant.map(|c| format!("cross_tenant=\"{c}\""));
        text.lines()
            .filter(|l| l.starts_with("sandserve_batches_total{") && l.contains(&image))
            .filter(|l| cross.as_ref().is_none_or(|c| l.contains(c.as_str())))
            .map(|l| {
                let value = l.rsplit(' ').next().unwrap_or_default();
                value.parse::<f64>().expect("a counter's value") as u64
            })
            .sum()
    }

    /// POST raw bytes with extra headers; the status, the response headers (names in
    /// lower case) and the raw body.
    pub fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawReply {
        let mut request = self.auth(self.agent.post(format!("{}{path}", self.base)));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::raw(request.send(body).expect("HTTP exchange"))
    }

    fn raw(mut response: ureq::http::Response<ureq::Body>) -> RawReply {
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .expect("response body");
        RawReply {
            status: response.status().as_u16(),
            headers,
            body,
        }
    }

    /// POST raw bytes with a content type; the reply and the value of its `Retry-After`
    /// header, if any.
    pub fn post_bytes_retry_after(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (Reply, Option<String>) {
        let response = self
            .auth(self.agent.post(format!("{}{path}", self.base)))
            .header("Content-Type", content_type)
            .send(body);
        let retry_after = response.as_ref().ok().and_then(|r| {
            r.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        (Self::finish(response), retry_after)
    }

    /// POST a body streamed from `reader` (no Content-Length).
    pub fn post_stream(&self, path: &str, content_type: &str, reader: &mut dyn Read) -> Reply {
        let request = self
            .auth(self.agent.post(format!("{}{path}", self.base)))
            .header("Content-Type", content_type);
        Self::finish(request.send(ureq::SendBody::from_reader(reader)))
    }

    /// Uploads a package as a new version of model `name`.
    pub fn upload(&self, name: &str, package: &[u8]) -> Reply {
        self.post_bytes(
            &format!("/api/2.0/models/{name}/versions"),
            "application/gzip",
            &[],
            package,
        )
    }

    /// Creates a tenant (admin) and returns a token with `permission` on `resources`.
    pub fn tenant_with_token(&self, tenant: &str, permission: &str) -> String {
        let (status, body) = self.post("/api/2.0/tenants", &serde_json::json!({ "name": tenant }));
        assert!(
            status == 201 || status == 409,
            "create tenant: {status} {body}"
        );
        self.token(tenant, permission, &["*"], None)
    }

    /// Issues a token and returns its secret.
    pub fn token(
        &self,
        tenant: &str,
        permission: &str,
        resources: &[&str],
        lifetime: Option<u64>,
    ) -> String {
        let mut body = serde_json::json!({
            "tenant": tenant,
            "permissions": [permission],
            "endpoints": resources,
            "comment": "test",
        });
        if let Some(lifetime) = lifetime {
            body["lifetime_seconds"] = lifetime.into();
        }
        let (status, reply) = self.post("/api/2.0/tokens", &body);
        assert_eq!(status, 201, "create token: {reply}");
        reply["token"].as_str().expect("token in reply").to_string()
    }
}

/// The reason in an error body's `details`, if any.
pub fn reason(body: &Value) -> &str {
    body["details"][0]["reason"].as_str().unwrap_or("")
}
