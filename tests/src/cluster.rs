//! Helpers of the cluster-mode tests: a node on the shared PostgreSQL metadata whose blob
//! folder is the cluster's shared one, and polling until a condition holds.

use crate::server::TestServer;
use std::path::Path;
use std::time::{Duration, Instant};

/// A node: its server and its data folder (whose `blobs` links to the cluster's folder).
pub struct Node {
    /// The running server.
    pub server: TestServer,
    /// Its data folder, removed with it.
    pub data: tempfile::TempDir,
}

/// Starts node `id` on the metadata at `url`, its `blobs` folder a link to `shared_blobs`,
/// with `extra` flags; its log kept at `log` level (`None`: errors only, on stderr).
pub fn start_node(
    url: &str,
    shared_blobs: &Path,
    id: &str,
    extra: &[&str],
    log: Option<&str>,
) -> Node {
    let data = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(shared_blobs, data.path().join("blobs")).expect("blob link");
    let mut args = vec!["--metadata", url, "--node-id", id];
    args.extend_from_slice(extra);
    let server = match log {
        Some(level) => TestServer::start_logging(data.path(), &args, level),
        None => TestServer::start(data.path(), &args),
    };
    Node { server, data }
}

/// Polls `done` every 20 ms until it holds; how long that took. Panics after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts node `id` with its data in `data`, on the metadata at `url` and the blobs of
/// `s3` (bucket prefix `cluster`), each endpoint version owned by one node.
pub fn start_on_s3(data: &Path, url: &str, s3: &crate::s3::S3Server, id: &str) -> TestServer {
    let blobs = format!("s3://{}/cluster", s3.bucket());
    let endpoint = s3.endpoint();
    let args = [
        "--metadata",
        url,
        "--node-id",
        id,
        "--owners",
        "1",
        "--blobs",
        &blobs,
        "--blobs-endpoint",
        &endpoint,
    ];
    TestServer::start_with_env(data, &args, &s3.env())
}
