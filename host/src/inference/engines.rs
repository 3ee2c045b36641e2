//! Finding and loading the native inference engines at run time, never panicking.
//!
//! ONNX Runtime and OpenVINO come as shared libraries from their PyPI wheels, installed
//! project-locally by `scripts/setup-engines.sh`. The host looks for each library where its
//! setting says (`ORT_DYLIB_PATH`, `SANDSERVE_OPENVINO_LIB`), else under the engines folder
//! (`SANDSERVE_ENGINES_DIR`, default `.engines`), checks that it loads and has the right
//! version *before* handing it to the engine crate (which would panic on a bad path), and
//! reports what it found.

use super::InferenceError;
use serde::Serialize;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Oldest ONNX Runtime minor version the `ort` crate we build with accepts (1.22).
const ORT_MIN_MINOR: u32 = ort::MINOR_VERSION;

/// Where to look for the engine libraries.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// Explicit path of `libonnxruntime.so*`.
    pub onnxruntime_lib: Option<PathBuf>,
    /// Explicit path of `libopenvino_c.so*`.
    pub openvino_lib: Option<PathBuf>,
    /// Folder that `scripts/setup-engines.sh` filled (holds `venv/`).
    pub engines_dir: Option<PathBuf>,
}

impl EngineSettings {
    /// Settings from the environment: `ORT_DYLIB_PATH`, `SANDSERVE_OPENVINO_LIB`,
    /// `SANDSERVE_ENGINES_DIR`.
    pub fn from_env() -> Self {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            onnxruntime_lib: path("ORT_DYLIB_PATH"),
            openvino_lib: path("SANDSERVE_OPENVINO_LIB"),
            engines_dir: path("SANDSERVE_ENGINES_DIR"),
        }
    }
}

/// What the host knows about one engine.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EngineStatus {
    /// Engine name (`onnx`, `openvino`).
    pub name: &'static str,
    /// Whether it loaded.
    pub loaded: bool,
    /// Library path tried or used.
    pub path: Option<String>,
    /// Library version, when loaded.
    pub version: Option<String>,
    /// Why it is not loaded.
    pub error: Option<String>,
}

/// The engines this process loaded; loaded once per process (the libraries are global).
#[derive(Debug, Clone, Serialize)]
pub struct Engines {
    /// ONNX Runtime.
    pub onnx: EngineStatus,
    /// OpenVINO.
    pub openvino: EngineStatus,
    /// The CUDA execution provider of ONNX Runtime (`version` holds the device).
    pub cuda: EngineStatus,
}

/// The one process-wide global of the engines, on purpose: ONNX Runtime's API table
/// (`ort::init_from`) and OpenVINO's runtime-linked library are loaded into the process
/// once and cannot be loaded again with other settings, so every server in a process (the
/// binary has one; in-process tests build several) shares the first result. The server
/// passes the `&'static Engines` it gets down (images, graph sets, the API) instead of
/// looking it up.
static ENGINES: OnceLock<Engines> = OnceLock::new();

impl Engines {
    /// Loads the engines once per process (later calls return the first result) and logs
    /// what loaded and what did not.
    pub fn init(settings: &EngineSettings) -> &'static Engines {
        ENGINES.get_or_init(|| {
            let onnx = load_onnxruntime(settings);
            let cuda = super::gpu::probe(onnx.loaded);
            let engines = Engines {
                onnx,
                openvino: load_openvino(settings),
                cuda,
            };
            for status in [&engines.onnx, &engines.openvino, &engines.cuda] {
                if status.loaded {
                    tracing::info!(
                        engine = status.name,
                        path = status.path.as_deref().unwrap_or("?"),
                        version = status.version.as_deref().unwrap_or("?"),
                        "inference engine loaded"
                    );
                } else {
                    tracing::warn!(
                        engine = status.name,
                        error = status.error.as_deref().unwrap_or("?"),
                        "inference engine not available"
                    );
                }
            }
            engines
        })
    }

    /// Ok when ONNX Runtime is loaded, else an error saying how to fix it.
    pub fn require_onnx(&self) -> Result<(), InferenceError> {
        require(&self.onnx, "ORT_DYLIB_PATH")
    }

    /// Ok when OpenVINO is loaded, else an error saying how to fix it.
    pub fn require_openvino(&self) -> Result<(), InferenceError> {
        require(&self.openvino, "SANDSERVE_OPENVINO_LIB")
    }
}

fn require(status: &EngineStatus, hint: &'static str) -> Result<(), InferenceError> {
    if status.loaded {
        Ok(())
    } else {
        Err(InferenceError::EngineUnavailable {
            engine: status.name,
            reason: status.error.clone().unwrap_or_default(),
            hint,
        })
    }
}

fn not_loaded(name: &'static str, path: Option<&Path>, error: String) -> EngineStatus {
    EngineStatus {
        name,
        loaded: false,
        path: path.map(|p| p.display().to_string()),
        version: None,
        error: Some(error),
    }
}

/// Finds `pattern`-named files (prefix match) in `<engines>/venv/lib/python*/site-packages/<sub>`.
fn find_in_engines_dir(settings: &EngineSettings, sub: &str, prefix: &str) -> Option<PathBuf> {
    let engines = settings
        .engines_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".engines"));
    let lib = engines.join("venv/lib");
    let pythons = std::fs::read_dir(lib).ok()?;
    let mut found: Vec<PathBuf> = pythons
        .flatten()
        .filter_map(|py| std::fs::read_dir(py.path().join("site-packages").join(sub)).ok())
        .flat_map(|dir| dir.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.len() > prefix.len())
        })
        .collect();
    found.sort();
    found.pop().map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

fn load_onnxruntime(settings: &EngineSettings) -> EngineStatus {
    let Some(path) = settings
        .onnxruntime_lib
        .clone()
        .or_else(|| find_in_engines_dir(settings, "onnxruntime/capi", "libonnxruntime.so."))
    else {
        return not_loaded(
            "onnx",
            None,
            "no ONNX Runtime library found (ORT_DYLIB_PATH unset, none under .engines)".into(),
        );
    };
    match probe_onnxruntime(&path) {
        Ok(version) => ort::init_from(path.display().to_string())
            .with_name("sandserve")
            .commit()
            .map(|_| EngineStatus {
                name: "onnx",
                loaded: true,
                path: Some(path.display().to_string()),
                version: Some(version),
                error: None,
            })
            .unwrap_or_else(|e| not_loaded("onnx", Some(&path), e.to_string())),
        Err(e) => not_loaded("onnx", Some(&path), e),
    }
}

/// Opens the library, finds `OrtGetApiBase` and checks the version, so `ort` never panics.
fn probe_onnxruntime(path: &Path) -> Result<String, String> {
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    // SAFETY: loading a shared library runs its initialisers; this is the ONNX Runtime
    // library the operator configured, the same one `ort` loads next.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }.map_err(|e| e.to_string())?;
    // SAFETY: the function takes no arguments and returns a static table or null.
    let base = unsafe { get_base() };
    if base.is_null() {
        return Err("OrtGetApiBase returned null".into());
    }
    // SAFETY: `base` is non-null and points at the library's static API base; the version
    // string it returns is static and NUL-terminated.
    let version = unsafe { CStr::from_ptr(((*base).GetVersionString)()) }
        .to_string_lossy()
        .into_owned();
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if minor < ORT_MIN_MINOR {
        return Err(format!(
            "ONNX Runtime {version} is too old; sandserve needs 1.{ORT_MIN_MINOR} or newer"
        ));
    }
    // Keep the library mapped for the life of the process, as `ort` will.
    std::mem::forget(lib);
    Ok(version)
}

fn load_openvino(settings: &EngineSettings) -> EngineStatus {
    let Some(path) = settings
        .openvino_lib
        .clone()
        .or_else(|| find_in_engines_dir(settings, "openvino/libs", "libopenvino_c.so."))
    else {
        return not_loaded(
            "openvino",
            None,
            "no OpenVINO library found (SANDSERVE_OPENVINO_LIB unset, none under .engines)".into(),
        );
    };
    super::openvino::load_library(&path)
        .map(|version| EngineStatus {
            name: "openvino",
            loaded: true,
            path: Some(path.display().to_string()),
            version: Some(version),
            error: None,
        })
        .unwrap_or_else(|e| not_loaded("openvino", Some(&path), e))
}
