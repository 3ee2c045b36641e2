//! The GPU behind ONNX Runtime's CUDA execution provider: whether this build and host have
//! one, and which device. Without the `cuda` feature the answer is always "no", with a
//! reason that says how to get one.

use super::EngineStatus;

/// Probes for a usable CUDA device once ONNX Runtime is loaded.
pub fn probe(onnx_loaded: bool) -> EngineStatus {
    let status = |loaded: bool, version: Option<String>, error: Option<String>| EngineStatus {
        name: "cuda",
        loaded,
        path: None,
        version,
        error,
    };
    if !cfg!(feature = "cuda") {
        return status(
            false,
            None,
            Some("this sandserve was built without the `cuda` feature".into()),
        );
    }
    if !onnx_loaded {
        return status(false, None, Some("ONNX Runtime is not loaded".into()));
    }
    match provider_available().and_then(|()| device()) {
        Ok(device) => status(true, Some(device), None),
        Err(reason) => status(false, None, Some(reason)),
    }
}

#[cfg(feature = "cuda")]
fn provider_available() -> Result<(), String> {
    use ort::execution_providers::{CUDAExecutionProvider, ExecutionProvider};
    match CUDAExecutionProvider::default().is_available() {
        Ok(true) => Ok(()),
        Ok(false) => Err(
            "this ONNX Runtime has no CUDA execution provider (install the onnxruntime-gpu wheel)"
                .into(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(not(feature = "cuda"))]
fn provider_available() -> Result<(), String> {
    Err("built without the `cuda` feature".into())
}

/// Name and memory of device 0, from the CUDA driver (`libcuda.so.1`).
fn device() -> Result<String, String> {
    // SAFETY: loading the NVIDIA driver library runs its initialisers; it is the library
    // the CUDA provider itself loads.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .map_err(|e| format!("no CUDA driver: {e}"))?;
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Get = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type Name = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    type Mem = unsafe extern "C" fn(*mut usize, i32) -> i32;
    // SAFETY: these are the CUDA driver API's documented signatures.
    let (init, get, name, mem) = unsafe {
        (
            lib.get::<Init>(b"cuInit").map_err(|e| e.to_string())?,
            lib.get::<Get>(b"cuDeviceGet").map_err(|e| e.to_string())?,
            lib.get::<Name>(b"cuDeviceGetName")
                .map_err(|e| e.to_string())?,
            lib.get::<Mem>(b"cuDeviceTotalMem_v2")
                .map_err(|e| e.to_string())?,
        )
    };
    let mut device = 0i32;
    let mut buffer = [0 as std::ffi::c_char; 128];
    let mut bytes = 0usize;
    // SAFETY: out-pointers to locals of the sizes the API expects.
    let codes = unsafe {
        [
            init(0),
            get(&mut device, 0),
            name(buffer.as_mut_ptr(), buffer.len() as i32, device),
            mem(&mut bytes, device),
        ]
    };
    if let Some(code) = codes.iter().find(|c| **c != 0) {
        return Err(format!("CUDA driver error {code} (is there a GPU?)"));
    }
    // SAFETY: cuDeviceGetName wrote a NUL-terminated string into the buffer.
    let name = unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(format!("{name}, {} MiB", bytes >> 20))
}
