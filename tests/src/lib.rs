//! Shared helpers for sandserve's tests and benchmarks: where the guest components built
//! by `build.rs` live, and tensor shorthands.

use sandserve_host::runtime::{ElementType, Tensor};
use std::path::PathBuf;

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
