//! Model packages for the end-to-end tests: the real examples packed with the handlers built
//! from source, and hostile archives a careful server must refuse.

use flate2::write::GzEncoder;
use flate2::Compression;
use sandserve_host::package::pack;
use std::io::Write;
use std::path::PathBuf;

/// `examples/<name>` packed as a .tar.gz with the handler built by `build.rs`.
pub fn example_package(name: &str) -> Vec<u8> {
    let dir = crate::repo_root().join("examples").join(name);
    let out = tempfile::Builder::new()
        .suffix(".tar.gz")
        .tempfile()
        .expect("temp file");
    pack(&dir, out.path(), Some(&crate::guest_path(name))).unwrap_or_else(|e| {
        panic!("packing examples/{name}: {e}; run scripts/setup-engines.sh for model files")
    });
    std::fs::read(out.path()).expect("read package")
}

/// A tar archive under construction, able to write names the `tar` crate refuses.
pub struct Tar(tar::Builder<Vec<u8>>);

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h
}

impl Default for Tar {
    fn default() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }
}

impl Tar {
    /// A regular file.
    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        self.0.append_data(&mut h, path, data).expect("append");
        self
    }

    /// A regular file whose header name is exactly `name`, unchecked.
    pub fn raw(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        self.0.append(&h, data).expect("append");
        self
    }

    /// A symbolic link.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0);
        h.set_link_name(target).expect("link name");
        self.0
            .append_data(&mut h, path, std::io::empty())
            .expect("append");
        self
    }

    /// The archive, gzip-compressed.
    pub fn gzip(self) -> Vec<u8> {
        gzip(&self.0.into_inner().expect("finish tar"))
    }
}

/// Gzip-compresses `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// The echo manifest.
pub fn echo_manifest() -> String {
    std::fs::read_to_string(crate::repo_root().join("examples/echo/sandserve.toml"))
        .expect("echo manifest")
}

/// The echo handler, built from source.
pub fn echo_wasm() -> Vec<u8> {
    crate::guest_wasm("echo")
}

/// Where the digits model lives.
pub fn digits_model() -> PathBuf {
    crate::repo_root().join("examples/digits/model/digits.onnx")
}

/// A package for model `name` with the guest `guest` (built from source) as its handler,
/// `extra` appended to the manifest, and `files` (path, bytes) added after the handler.
pub fn handler_package(name: &str, guest: &str, extra: &str, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let manifest = format!("name = \"{name}\"\nhandler = \"handler.wasm\"\n{extra}\n");
    let mut tar = Tar::default()
        .file("sandserve.toml", manifest.as_bytes())
        .file("handler.wasm", &crate::guest_wasm(guest));
    for (path, bytes) in files {
        tar = tar.file(path, bytes);
    }
    tar.gzip()
}

/// Width of the benchmarks' MLP models (`x` is `[N, MLP_WIDTH]`).
pub const MLP_WIDTH: usize = 2048;

/// `len` deterministic inputs for the MLP benchmarks, in [-0.5, 0.5].
pub fn mlp_input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 37 % 101) as f32) / 100.0 - 0.5)
        .collect()
}

/// The MLP benchmarks' V2 query: one row of [`mlp_input`] for the `nn-proxy` handler's
/// graph `mlp`.
pub fn mlp_query() -> serde_json::Value {
    serde_json::json!({"inputs": [
        {"name": "graph", "shape": [1], "datatype": "BYTES", "data": ["mlp"]},
        {"name": "x", "shape": [1, MLP_WIDTH], "datatype": "FP32", "data": mlp_input(MLP_WIDTH)},
    ]})
}

/// How the benchmarks' two MLP packages are configured.
#[derive(Debug, Clone, Copy)]
pub struct MlpBenchSettings {
    /// `max_delay_us` of the batched package.
    pub delay_us: u64,
    /// `max_batch_size` of the batched package.
    pub max_batch_size: u64,
    /// `intra_op_threads` of the batched package's graph (the plain one keeps 1: its
    /// requests already run side by side, one per core).
    pub batched_intra_op_threads: u64,
    /// `max_running_batches` of the batched package; 0 leaves the server's default.
    pub running_batches: u64,
}

impl MlpBenchSettings {
    /// From `SANDSERVE_BENCH_BATCH_DELAY_US` (default 2000), `SANDSERVE_BENCH_MAX_BATCH`
    /// (default 32), `SANDSERVE_BENCH_BATCH_THREADS` (default: this machine's CPUs; one
    /// batch runs at a time, so it may use every core while the next one fills) and
    /// `SANDSERVE_BENCH_RUNNING_BATCHES` (default 0: the server's default).
    pub fn from_env() -> Self {
        use crate::load::env_number;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Self {
            delay_us: env_number("SANDSERVE_BENCH_BATCH_DELAY_US", 2000),
            max_batch_size: env_number("SANDSERVE_BENCH_MAX_BATCH", 32),
            batched_intra_op_threads: env_number("SANDSERVE_BENCH_BATCH_THREADS", cpus),
            running_batches: env_number("SANDSERVE_BENCH_RUNNING_BATCHES", 0),
        }
    }
}

/// The benchmarks' weight-bound model (`models/bench_mlp.onnx`, 4 layers of 2048, made by
/// scripts/make_mlp_model.py, which scripts/setup-engines.sh runs) behind the `nn-proxy`
/// fixture, as two packages: `mlp-plain` and `mlp-batched` (`[graphs.batching]` as
/// `settings` say). Needs ONNX Runtime.
pub fn bench_mlp_packages(settings: MlpBenchSettings) -> [(String, Vec<u8>); 2] {
    bench_model_packages("bench_mlp.onnx", "mlp", settings)
}

/// `models/<file>` (one of scripts/make_mlp_model.py's models: graph input `x` [N, 2048],
/// output `y` [N, 16]) behind the `nn-proxy` fixture as the graph `mlp`, in two packages:
/// `<prefix>-plain` and `<prefix>-batched` (`[graphs.batching]` as `settings` say).
pub fn bench_model_packages(
    file: &str,
    prefix: &str,
    settings: MlpBenchSettings,
) -> [(String, Vec<u8>); 2] {
    crate::engines()
        .require_onnx()
        .expect("ONNX Runtime (scripts/setup-engines.sh, then source .engines/env.sh)");
    let model_path = crate::repo_root().join("models").join(file);
    assert!(
        model_path.is_file(),
        "{} is missing: run scripts/setup-engines.sh",
        model_path.display()
    );
    let model = crate::read(&model_path);
    let package = |name: &str, graph: &str| {
        handler_package(
            name,
            "nn-proxy",
            &format!(
                "[limits]\ntimeout_ms = 30000\nmax_concurrency = 64\n[[graphs]]\nname = \"mlp\"\n\
                 encoding = \"onnx\"\nfiles = [\"model/mlp.onnx\"]\n{graph}"
            ),
            &[("model/mlp.onnx", model.clone())],
        )
    };
    let mut batched = format!(
        "intra_op_threads = {}\n[graphs.batching]\nmax_batch_size = {}\nmax_delay_us = {}\n",
        settings.batched_intra_op_threads, settings.max_batch_size, settings.delay_us
    );
    if settings.running_batches > 0 {
        batched += &format!("max_running_batches = {}\n", settings.running_batches);
    }
    let (plain, batched_name) = (format!("{prefix}-plain"), format!("{prefix}-batched"));
    [
        (plain.clone(), package(&plain, "")),
        (batched_name.clone(), package(&batched_name, &batched)),
    ]
}

/// A gzip bomb: `sandserve.toml` holding `manifest`, the `files` (path, bytes), then a file
/// at `path` of `mib` MiB of zeros, as one gzip member per MiB (a gzip stream may hold
/// many members), so that a bomb of any size takes about 1 KiB of upload per MiB and
/// milliseconds to build. The archive ends inside that file.
pub fn bomb_of_zeros(manifest: &str, files: &[(&str, &[u8])], path: &str, mib: u64) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let entries =
        std::iter::once(("sandserve.toml", manifest.as_bytes())).chain(files.iter().copied());
    for (name, bytes) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, bytes).expect("append");
    }
    let mut head = tar.into_inner().expect("finish tar");
    // `into_inner` appended the end-of-archive marker (two zero blocks): drop it.
    head.truncate(head.len() - 1024);
    let mut big = tar::Header::new_ustar();
    big.set_path(path).expect("path");
    big.set_size(mib << 20);
    big.set_mode(0o644);
    big.set_cksum();
    head.extend_from_slice(big.as_bytes());
    let mut bomb = gzip(&head);
    let mut one_mib = GzEncoder::new(Vec::new(), Compression::best());
    one_mib.write_all(&vec![0u8; 1 << 20]).expect("gzip");
    let one_mib = one_mib.finish().expect("gzip");
    for _ in 0..mib {
        bomb.extend_from_slice(&one_mib);
    }
    bomb
}
