//! Python handlers: a project folder with `app.py` (defining `predict(request)`) and
//! `sandserve.toml`, built into a component with componentize-py against the embedded WIT
//! (`sandserve:handler@0.1.0`, world `model-handler`) and the embedded `sandserve` Python
//! SDK (`guest-sdk-python/`). Also the project template `sandserve new --lang python` writes.
//!
//! componentize-py (pinned, [`COMPONENTIZE_PY_VERSION`]) is found in this order: the file
//! `SANDSERVE_COMPONENTIZE_PY` names; the project's `.sandserve/venv`; else it is installed
//! there from PyPI with `python3 -m venv` and pip (once per project).

use super::AuthoringError;
use crate::package::Manifest;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The componentize-py release handlers are built with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// Environment variable naming a componentize-py binary to use instead of the project's.
pub const COMPONENTIZE_PY_ENV: &str = "SANDSERVE_COMPONENTIZE_PY";
/// The handler module of a Python project: it defines `predict(request)`.
pub const APP_FILE: &str = "app.py";
/// Where a project keeps what the build makes (its componentize-py venv).
pub const WORK_DIR: &str = ".sandserve";

/// The SDK authors import (`import sandserve`).
pub const SDK_SOURCE: &str = include_str!("../../../guest-sdk-python/sandserve/__init__.py");
/// The component's export: calls `app.predict`, converts WIT <-> SDK types.
const ENTRY_SOURCE: &str = include_str!("../../../guest-sdk-python/sandserve_entry.py");
const ENTRY_MODULE: &str = "sandserve_entry";
const WORLD_WIT: &str = include_str!("../../../wit/world.wit");
const WASI_NN_WIT: &str = include_str!("../../../wit/deps/wasi-nn/wasi-nn.wit");
const WORLD: &str = "model-handler";
/// Deepest folder nesting of Python sources copied into the build.
const MAX_DEPTH: usize = 8;

/// True when `dir` is a Python handler project: it has `app.py` and no `Cargo.toml`.
pub fn is_python_project(dir: &Path) -> bool {
    dir.join(APP_FILE).is_file() && !dir.join("Cargo.toml").exists()
}

/// Builds the Python project in `dir` into the component `output`.
///
/// The project's `.py` files (and packages of them; hidden folders, `__pycache__` and
/// virtual environments left out) are bundled with the `sandserve` SDK (the project's own
/// `sandserve/` when it has one, else the embedded copy). componentize-py's messages go
/// to standard error.
pub fn build(dir: &Path, output: &Path) -> Result<(), AuthoringError> {
    if !dir.join(APP_FILE).is_file() {
        return Err(AuthoringError::Invalid(format!(
            "{} has no {APP_FILE}; a Python handler project defines `predict(request)` in \
             {APP_FILE} (`sandserve new NAME --lang python` makes one)",
            dir.display()
        )));
    }
    let tool = componentize_py(dir)?;
    let stage =
        tempfile::tempdir().map_err(|e| AuthoringError::io("creating a build folder", e))?;
    let (wit, app, sdk) = (
        stage.path().join("wit"),
        stage.path().join("app"),
        stage.path().join("sdk"),
    );
    write(&wit.join("world.wit"), WORLD_WIT)?;
    write(&wit.join("deps/wasi-nn/wasi-nn.wit"), WASI_NN_WIT)?;
    write(&sdk.join(format!("{ENTRY_MODULE}.py")), ENTRY_SOURCE)?;
    if !dir.join("sandserve/__init__.py").is_file() {
        write(&sdk.join("sandserve/__init__.py"), SDK_SOURCE)?;
    }
    copy_python_sources(dir, &app, 0)?;
    let status = Command::new(&tool)
        .arg("-q")
        .arg("-d")
        .arg(&wit)
        .args(["-w", WORLD, "componentize", ENTRY_MODULE, "-p"])
        .arg(&app)
        .arg("-p")
        .arg(&sdk)
        .arg("-o")
        .arg(output)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            AuthoringError::Tool(format!(
                "cannot run componentize-py ({}): {e}",
                tool.display()
            ))
        })?;
    if !status.success() {
        return Err(AuthoringError::BuildFailed(format!(
            "componentize-py could not build {} ({status}); see its messages above (a \
             Python error in {APP_FILE} or a module it imports that is not in the project)",
            dir.display()
        )));
    }
    Ok(())
}

/// The componentize-py binary to build `dir` with, installing it into the project's
/// `.sandserve/venv` when neither `SANDSERVE_COMPONENTIZE_PY` nor that venv has it.
pub fn componentize_py(dir: &Path) -> Result<PathBuf, AuthoringError> {
    if let Some(path) = std::env::var_os(COMPONENTIZE_PY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        check_version(&path).map_err(|problem| {
            AuthoringError::Tool(format!(
                "{COMPONENTIZE_PY_ENV}={}: {problem}; point it at componentize-py \
                 {COMPONENTIZE_PY_VERSION} or unset it to install one into the project",
                path.display()
            ))
        })?;
        return Ok(path);
    }
    let venv = dir.join(WORK_DIR).join("venv");
    let tool = venv.join("bin/componentize-py");
    if tool.is_file() && check_version(&tool).is_ok() {
        return Ok(tool);
    }
    eprintln!(
        "installing componentize-py {COMPONENTIZE_PY_VERSION} from PyPI into {} (once per project)",
        venv.display()
    );
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    run_setup(
        Command::new(&python)
            .arg("-m")
            .arg("venv")
            .arg("--clear")
            .arg(&venv),
        "creating a Python virtual environment",
        "install Python 3.10 or newer (`python3` on PATH, with its venv module)",
    )?;
    run_setup(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}")),
        "installing componentize-py with pip",
        "check that PyPI is reachable, or install componentize-py yourself and set \
         SANDSERVE_COMPONENTIZE_PY to its path",
    )?;
    check_version(&tool).map_err(|problem| {
        AuthoringError::Tool(format!("after installing, {}: {problem}", tool.display()))
    })?;
    Ok(tool)
}

fn run_setup(command: &mut Command, what: &str, hint: &str) -> Result<(), AuthoringError> {
    let status = command.stdin(Stdio::null()).status().map_err(|e| {
        AuthoringError::Tool(format!(
            "{what}: cannot run {:?} ({e}); {hint}",
            command.get_program()
        ))
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(AuthoringError::Tool(format!(
            "{what} failed ({status}); {hint}"
        )))
    }
}

/// Runs `tool --version` and checks it is the pinned release.
fn check_version(tool: &Path) -> Result<(), String> {
    let out = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it ({e})"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = stdout.lines().next().unwrap_or("");
    match text.trim().strip_prefix("componentize-py ") {
        Some(v) if v == COMPONENTIZE_PY_VERSION => Ok(()),
        Some(v) => Err(format!(
            "it is componentize-py {v}, not {COMPONENTIZE_PY_VERSION}"
        )),
        None => Err(format!(
            "`--version` said {:?}, not componentize-py",
            text.trim()
        )),
    }
}

fn write(path: &Path, text: &str) -> Result<(), AuthoringError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| AuthoringError::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(path, text)
        .map_err(|e| AuthoringError::io(format!("writing {}", path.display()), e))
}

/// Copies the `.py` files under `from` into `to`, leaving out hidden folders,
/// `__pycache__` and virtual environments (folders with `pyvenv.cfg`).
fn copy_python_sources(from: &Path, to: &Path, depth: usize) -> Result<(), AuthoringError> {
    let reading = |e| AuthoringError::io(format!("reading {}", from.display()), e);
    std::fs::create_dir_all(to)
        .map_err(|e| AuthoringError::io(format!("creating {}", to.display()), e))?;
    for entry in std::fs::read_dir(from).map_err(reading)? {
        let entry = entry.map_err(reading)?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        let path = entry.path();
        let kind = entry.file_type().map_err(reading)?;
        if kind.is_dir() {
            let skip = name_text.starts_with('.')
                || name_text == "__pycache__"
                || path.join("pyvenv.cfg").exists()
                || depth >= MAX_DEPTH;
            if !skip {
                copy_python_sources(&path, &to.join(&name), depth + 1)?;
            }
        } else if kind.is_file() && name_text.ends_with(".py") {
            std::fs::copy(&path, to.join(&name))
                .map_err(|e| AuthoringError::io(format!("copying {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// The handler file name a project called `name` builds (`my-model` -> `my_model.wasm`).
pub fn handler_file(name: &str) -> String {
    format!("{}.wasm", name.replace('-', "_"))
}

/// The files [`scaffold`] writes, relative to the project folder.
pub const SCAFFOLD_FILES: [&str; 4] = [
    "sandserve.toml",
    APP_FILE,
    "sandserve/__init__.py",
    ".gitignore",
];

/// Writes a new Python handler project called `name` into `dir` (created; it must not
/// exist or be empty): `app.py` (a working `predict` that doubles its input, with a graph
/// example in comments), `sandserve.toml`, the `sandserve` SDK (for editors and unit tests;
/// the build uses this copy) and a `.gitignore`.
pub fn scaffold(dir: &Path, name: &str) -> Result<(), AuthoringError> {
    let manifest = TEMPLATE_MANIFEST
        .replace("{name}", name)
        .replace("{handler}", &handler_file(name));
    Manifest::parse(&manifest).map_err(|e| {
        AuthoringError::Invalid(format!(
            "`{name}` cannot name a model ({e}); use 1-64 of a-z 0-9 _ -, starting with a \
             letter or digit"
        ))
    })?;
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(AuthoringError::Invalid(format!(
                "{} already exists and is not empty; choose a new folder",
                dir.display()
            )));
        }
    }
    write(&dir.join("sandserve.toml"), &manifest)?;
    write(&dir.join(APP_FILE), TEMPLATE_APP)?;
    write(&dir.join("sandserve/__init__.py"), SDK_SOURCE)?;
    write(
        &dir.join(".gitignore"),
        "/.sandserve/\n/*.tar.gz\n__pycache__/\n",
    )?;
    Ok(())
}

const TEMPLATE_MANIFEST: &str = r#"# The package manifest (docs/packages.md). `sandserve package .` builds app.py into
# {handler} with componentize-py and packs it with the files named here.
name = "{name}"
handler = "{handler}"

[limits]
memory_mib = 256

# A model the handler runs by name (sandserve.Graph.load("model")):
# [[graphs]]
# name = "model"
# encoding = "onnx"
# files = ["model.onnx"]

[signature]
inputs = [{ name = "x", datatype = "FP32", shape = [-1] }]
outputs = [{ name = "y", datatype = "FP32", shape = [-1] }]
"#;

const TEMPLATE_APP: &str = r#""""The model handler: sandserve calls predict(request) once per request, in a fresh sandbox.

Raise InvalidInput for a bad request (HTTP 400, the caller sees the message); any other
exception is a 500 whose message goes to the server log only.
"""

from sandserve import InvalidInput, Request, Response, Tensor


def predict(request: Request) -> Response:
    x = request.input("x")
    if x.datatype != "FP32":
        raise InvalidInput(f"`x` must be FP32, got {x.datatype}")
    y = [2.0 * v for v in x.values()]
    # With a model in sandserve.toml's [[graphs]]:
    #   from sandserve import Graph
    #   outputs = Graph.load("model").run_named([Tensor.from_values("input", x.shape, y)])
    #   return Response([outputs["output"]])
    return Response([Tensor.from_values("y", x.shape, y)])
"#;

#[cfg(test)]
mod tests;
