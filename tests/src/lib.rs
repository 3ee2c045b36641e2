//! Shared helpers for sandserve's tests and benchmarks: where the guest components built
//! by `build.rs` live, and tensor shorthands.

pub mod cluster;
pub mod doc_script;
pub mod hostile_onnx;
pub mod in_process;
pub mod load;
pub mod native;
pub mod packages;
pub mod postgres;
pub mod s3;
pub mod server;
pub mod wrk;

use sandserve_host::inference::{EngineSettings, Engines};
use sandserve_host::runtime::{ElementType, Tensor};
use std::path::{Path, PathBuf};

/// The runtime the in-process tests share: 32 sandbox slots, memories up to 512 MiB.
pub fn test_runtime() -> &'static sandserve_host::runtime::Runtime {
    use sandserve_host::runtime::{Runtime, RuntimeConfig};
    static RUNTIME: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_concurrent_instances: 32,
            max_memory_bytes: 512 << 20,
            ..RuntimeConfig::default()
        })
        .expect("runtime starts")
    })
}

/// Path of the guest component built from crate `name` (examples or fixtures).
pub fn guest_path(name: &str) -> PathBuf {
    PathBuf::from(env!("SANDSERVE_GUEST_DIR")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// The bytes of the guest component built from crate `name`.
pub fn guest_wasm(name: &str) -> Vec<u8> {
    let path = guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A tensor of `f32` values.
pub fn f32_tensor(name: &str, shape: &[u64], values: &[f32]) -> Tensor {
    Tensor {
        name: name.to_string(),
        shape: shape.to_vec(),
        element_type: ElementType::F32,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Decodes a `BYTES` tensor into strings.
pub fn strings(tensor: &Tensor) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = tensor.data.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let (item, tail) = tail.split_at(len.min(tail.len()));
        out.push(String::from_utf8_lossy(item).into_owned());
        rest = tail;
    }
    out
}

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
}

/// The engines, loaded once per test process from the environment and `.engines/`.
pub fn engines() -> &'static Engines {
    let mut settings = EngineSettings::from_env();
    if settings.engines_dir.is_none() {
        settings.engines_dir = Some(repo_root().join(".engines"));
    }
    Engines::init(&settings)
}

/// True when ONNX Runtime is loaded. When it is not: under `CI=true` the test fails (CI
/// must exercise the engine), otherwise it prints why and the caller skips.
pub fn onnx_available(test: &str) -> bool {
    engine_available(test, engines().require_onnx().err())
}

/// Like [`onnx_available`], for OpenVINO.
pub fn openvino_available(test: &str) -> bool {
    engine_available(test, engines().require_openvino().err())
}

fn engine_available(test: &str, missing: Option<impl std::fmt::Display>) -> bool {
    match missing {
        None => true,
        Some(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: engine missing under CI=true: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

/// Reads a raw little-endian f32 file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    le_f32(&read(path))
}

/// Reads a raw little-endian i64 file.
pub fn read_i64(path: &Path) -> Vec<i64> {
    le_i64(&read(path))
}

/// Little-endian f32 values.
fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian i64 values.
fn le_i64(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(c);
            i64::from_le_bytes(raw)
        })
        .collect()
}

/// Reads a whole file, naming it when that fails.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run scripts/setup-engines.sh first",
            path.display()
        )
    })
}

/// A BYTES tensor of shape [n] holding `values`.
pub fn bytes_tensor(name: &str, values: &[&str]) -> Tensor {
    let data = values
        .iter()
        .flat_map(|v| (v.len() as u32).to_le_bytes().into_iter().chain(v.bytes()))
        .collect();
    Tensor {
        name: name.to_string(),
        shape: vec![values.len() as u64],
        element_type: ElementType::Bytes,
        data,
    }
}

/// Decodes an f32 tensor.
pub fn f32_values(tensor: &Tensor) -> Vec<f32> {
    assert_eq!(tensor.element_type, ElementType::F32, "{}", tensor.name);
    le_f32(&tensor.data)
}

/// Decodes an i64 tensor.
pub fn i64_values(tensor: &Tensor) -> Vec<i64> {
    assert_eq!(tensor.element_type, ElementType::I64, "{}", tensor.name);
    le_i64(&tensor.data)
}
