//! The container entry point run the way the Kubernetes manifests run it, with no cluster
//! and no container runtime: `kubectl kustomize` renders the production overlay (with
//! throwaway secrets and a real self-signed certificate, in a temporary copy), and the
//! Deployment's own command, args and environment start the binary from this build. The
//! container's filesystem is emulated under a temporary root: each volume is laid out at
//! its mountPath as the kubelet would (the ConfigMap's file through its subPath, the TLS
//! Secret's keys as files, emptyDirs), the image's paths (`/usr/local/bin/sandserve`,
//! `/opt/sandserve/engines`) point at this build and `.engines/`, and every absolute path
//! in the args and the config file is read under that root. The environment is exactly the
//! manifest's (secretKeyRef and fieldRef resolved), nothing inherited, except: the listen
//! port (any free one, on loopback, instead of 8443) and `TMPDIR` (the /tmp emptyDir).
//! Then the probes the manifest declares must pass (over HTTPS with the Secret's
//! certificate, via curl), the Secret's admin token must be the server's, and SIGTERM must
//! end it with exit code 0 within terminationGracePeriodSeconds.
//!
//! Needs `kubectl` and the venv `scripts/check-kubernetes.sh` makes (PyYAML comes with
//! kubernetes-validate): missing, the test fails under CI=true and is skipped otherwise.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use base64::Engine as _;
use sandserve_tests::postgres::Postgres;
use sandserve_tests::repo_root;
use sandserve_tests::s3::S3Server;
use sandserve_tests::server::sandserve_bin;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "entrypoint-test-admin-token-0123";

fn tools() -> Option<PathBuf> {
    let python = repo_root().join(".k8s-check/venv/bin/python");
    let kubectl = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output();
    if python.is_file() && kubectl.is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    let why = "needs kubectl and .k8s-check/venv (run scripts/check-kubernetes.sh)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipping the Kubernetes entry-point test: {why}");
    None
}

/// Renders the production overlay of a copy of deploy/kubernetes with throwaway secrets
/// (under `work`) and returns its objects.
/// Renders the production overlay with `secrets_env` as its Secret's env file.
fn render(python: &Path, work: &Path, secrets_env: &str) -> Vec<Value> {
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("deploy/kubernetes"))
        .arg(work.join("kubernetes"))
        .status()
        .unwrap();
    assert!(status.success());
    let secrets = work.join("kubernetes/overlays/production/secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("sandserve.env"), secrets_env).unwrap();
    let made = Command::new(sandserve_bin())
        .args(["cert", "--self-signed", "--host", "localhost", "--cert"])
        .arg(secrets.join("tls.crt"))
        .arg("--key")
        .arg(secrets.join("tls.key"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(work.join("kubernetes/overlays/production"))
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{rendered:?}");
    let mut to_json = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    to_json
        .stdin
        .take()
        .unwrap()
        .write_all(&rendered.stdout)
        .unwrap();
    let out = to_json.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendering"))
}

fn secret_value(objects: &[Value], name: &str, key: &str) -> Vec<u8> {
    let data = object(objects, "Secret", name)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
    // Long values come as a block of lines.
    let data: String = data.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap()
}

/// The container's filesystem, under a temporary root.
struct Root {
    root: PathBuf,
    /// Image paths and what stands in for them here.
    image: Vec<(String, PathBuf)>,
}

impl Root {
    /// Where the container path `path` is here.
    fn map(&self, path: &str) -> PathBuf {
        for (prefix, here) in &self.image {
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                return PathBuf::from(format!("{}{rest}", here.display()));
            }
        }
        self.root.join(path.trim_start_matches('/'))
    }

    /// `text` with every quoted absolute path mapped (the config file's values).
    fn map_quoted_paths(&self, text: &str) -> String {
        text.split('"')
            .enumerate()
            .map(|(i, piece)| {
                if i % 2 == 1 && piece.starts_with('/') {
                    self.map(piece).display().to_string()
                } else {
                    piece.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\"")
    }
}

fn curl(ca: &Path, url: &str, token: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_container_entry_point_runs_as_the_manifests_run_it() {
    let Some(python) = tools() else { return };
    let work = tempfile::tempdir().unwrap();
    // The stores the manifests point at, real: PostgreSQL and an S3 server on loopback.
    let postgres = Postgres::start();
    let metadata_url = postgres.create_database("sandserve");
    let s3 = S3Server::start("sandserve-k8s");
    let credentials: std::collections::HashMap<_, _> = s3.env().into_iter().collect();
    let secrets_env = format!(
        "admin-token={ADMIN}\nmetadata-url={metadata_url}\n\
         blobs-url=s3://{}/sandserve\nblobs-endpoint={}\n\
         s3-access-key-id={}\ns3-secret-access-key={}\n",
        s3.bucket(),
        s3.endpoint(),
        credentials["AWS_ACCESS_KEY_ID"],
        credentials["AWS_SECRET_ACCESS_KEY"],
    );
    let objects = render(&python, work.path(), &secrets_env);
    let deployment = object(&objects, "Deployment", "sandserve");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let root = Root {
        root: work.path().join("root"),
        image: vec![
            ("/usr/local/bin/sandserve".into(), sandserve_bin()),
            (
                "/opt/sandserve/engines".into(),
                repo_root().join(".engines"),
            ),
        ],
    };

    // Volumes, laid out at their mount paths.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let volume = volumes[mount["name"].as_str().unwrap()];
        let at = root.map(mount["mountPath"].as_str().unwrap());
        let files: Vec<(String, Vec<u8>)> = if let Some(name) = volume["configMap"]["name"].as_str()
        {
            let data = object(&objects, "ConfigMap", name)["data"]
                .as_object()
                .unwrap();
            data.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        root.map_quoted_paths(v.as_str().unwrap()).into_bytes(),
                    )
                })
                .collect()
        } else if let Some(name) = volume["secret"]["secretName"].as_str() {
            let data = object(&objects, "Secret", name)["data"]
                .as_object()
                .unwrap();
            data.keys()
                .map(|k| (k.clone(), secret_value(&objects, name, k)))
                .collect()
        } else {
            assert!(
                volume.get("emptyDir").is_some(),
                "unexpected volume {volume}"
            );
            std::fs::create_dir_all(&at).unwrap();
            continue;
        };
        match mount["subPath"].as_str() {
            Some(key) => {
                std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                let (_, content) = files.iter().find(|(k, _)| k == key).unwrap();
                std::fs::write(&at, content).unwrap();
            }
            None => {
                std::fs::create_dir_all(&at).unwrap();
                for (key, content) in &files {
                    std::fs::write(at.join(key), content).unwrap();
                }
            }
        }
    }

    // The environment: the manifest's, each variable a real setting.
    let help = Command::new(sandserve_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        // The admin token is read from the environment only (never a flag).
        if name.starts_with("SANDSERVE_") && name != "SANDSERVE_ADMIN_TOKEN" {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "the manifest sets {name}, which `sandserve serve` does not read"
            );
        }
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else if let Some(secret) = var["valueFrom"]["secretKeyRef"].as_object() {
            String::from_utf8(secret_value(
                &objects,
                secret["name"].as_str().unwrap(),
                secret["key"].as_str().unwrap(),
            ))
            .unwrap()
        } else {
            match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => "sandserve-7d9f8-abcde".into(),
                Some("status.podIP") => "127.0.0.1".into(),
                other => panic!("unexpected env source {other:?} in {var}"),
            }
        };
        env.push((name, value));
    }
    assert!(env
        .iter()
        .any(|(k, v)| k == "SANDSERVE_ADMIN_TOKEN" && v == ADMIN));

    // Command and args as the manifest gives them.
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(container["args"].as_array().unwrap())
        .map(|v| v.as_str().unwrap())
        .collect();
    let mapped = |arg: &str| {
        if arg.starts_with('/') {
            root.map(arg).into_os_string()
        } else {
            arg.into()
        }
    };
    let started = Instant::now();
    let mut child = Command::new(mapped(command[0]))
        .args(command[1..].iter().map(|a| mapped(a)))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("SANDSERVE_LISTEN", "127.0.0.1:0")
        .env("TMPDIR", root.map("/tmp"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    break url.to_string();
                }
            }
            _ => panic!(
                "the entry point exited before listening: {:?}\nPostgreSQL's log:\n{}",
                child.wait(),
                postgres.log()
            ),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    // HTTPS with the Secret's certificate, under the name it was made for.
    let port = url.rsplit(':').next().unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let base = format!("https://localhost:{port}");
    let ca = root.map("/etc/sandserve/tls/tls.crt");

    // The probes the manifest declares.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["scheme"], "HTTPS", "{probe}");
        assert_eq!(get["port"], "https", "{probe}");
        let path = get["path"].as_str().unwrap();
        let (status, body) = curl(&ca, &format!("{base}{path}"), None);
        assert_eq!(status, 200, "{probe} {path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        if path == "/readyz" {
            assert_eq!(body["status"], "ready");
        } else {
            assert_eq!(body["status"], "ok", "{body}");
            // The engines the image ships load from engines_dir.
            assert_eq!(body["engines"]["onnx"]["loaded"], true, "{body}");
            assert_eq!(body["engines"]["openvino"]["loaded"], true, "{body}");
        }
    }
    assert_eq!(
        container["ports"][0]["containerPort"], 8443,
        "the config's listen port is the container port"
    );
    // The Secret's admin token is the server's.
    let (status, body) = curl(&ca, &format!("{base}/api/2.0/tenants"), Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    let (status, _) = curl(
        &ca,
        &format!("{base}/api/2.0/tenants"),
        Some("wrong-token-0123456789"),
    );
    assert_eq!(status, 401);
    // Cluster mode, as the Secret asks: the metadata is PostgreSQL's (no sled database in
    // the data volume), and the node holds a lease under its pod's name and address.
    assert!(!root.map("/var/lib/sandserve/metadata").exists());
    let (status, body) = curl(&ca, &format!("{base}/api/2.0/cluster/nodes"), Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    let nodes: Value = serde_json::from_str(&body).unwrap();
    let me = &nodes["nodes"][0];
    assert_eq!(me["id"], "sandserve-7d9f8-abcde", "{body}");
    assert_eq!(me["url"], "https://127.0.0.1:8443", "{body}");
    eprintln!("entry point ready after {:?}", started.elapsed());

    // Termination: SIGTERM, exit 0 within the grace period.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(grace),
            "still running {grace} s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0), "{exit}");
}

/// `value` with each `$(NAME)` replaced by the value of a variable defined before it, as
/// Kubernetes expands dependent environment variables (an undefined one stays as written).
fn expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = value.to_string();
    for (name, set) in defined {
        out = out.replace(&format!("$({name})"), set);
    }
    out
}
