//! Building a handler crate for `sandserve package`: runs cargo for `wasm32-wasip2` and
//! finds the component it produced in cargo's JSON messages.

use super::PackageError;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target handlers are built for.
const TARGET: &str = "wasm32-wasip2";

/// Builds the crate in `dir` (which must hold a `Cargo.toml`) with
/// `cargo build --release --target wasm32-wasip2` and returns the path of its `cdylib`
/// `.wasm`. Cargo's progress and diagnostics go to this process's stderr.
pub fn build_handler(dir: &Path) -> Result<PathBuf, PackageError> {
    let cargo_toml = dir.join("Cargo.toml");
    let manifest = cargo_toml
        .canonicalize()
        .map_err(|e| PackageError::BuildFailed {
            detail: format!(
                "cannot read {} ({e}); `sandserve package` builds the handler crate in the \
             package folder",
                cargo_toml.display()
            ),
        })?;
    let mut child = Command::new("cargo")
        .args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| PackageError::BuildFailed {
            detail: if e.kind() == io::ErrorKind::NotFound {
                "`cargo` was not found on PATH; install Rust from https://rustup.rs".to_owned()
            } else {
                format!("cannot run cargo: {e}")
            },
        })?;
    let found = match child.stdout.take() {
        Some(stdout) => find_artifact(BufReader::new(stdout), &manifest),
        None => Ok(None),
    };
    let status = child.wait().map_err(|e| PackageError::BuildFailed {
        detail: format!("waiting for cargo: {e}"),
    })?;
    if !status.success() {
        return Err(PackageError::BuildFailed {
            detail: format!(
                "`cargo build --release --target {TARGET}` in {} failed ({status}); see \
                 cargo's messages above. If the target is missing, run `rustup target add \
                 {TARGET}`",
                dir.display()
            ),
        });
    }
    let found = found.map_err(|e| PackageError::BuildFailed {
        detail: format!("reading cargo's output: {e}"),
    })?;
    found.ok_or_else(|| PackageError::BuildFailed {
        detail: format!(
            "cargo built no `cdylib` .wasm for {}; a handler crate needs \
             `[lib] crate-type = [\"cdylib\"]`",
            manifest.display()
        ),
    })
}

/// The `.wasm` file of the `cdylib` whose package manifest is `manifest`, from cargo's
/// JSON messages (one per line); lines that are not JSON are ignored.
fn find_artifact(messages: impl BufRead, manifest: &Path) -> io::Result<Option<PathBuf>> {
    let mut found = None;
    for line in messages.lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let ours = message["manifest_path"]
            .as_str()
            .is_some_and(|p| same_file(Path::new(p), manifest));
        let cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !(ours && cdylib) {
            continue;
        }
        let wasm = message["filenames"].as_array().and_then(|files| {
            files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
        });
        if let Some(wasm) = wasm {
            found = Some(PathBuf::from(wasm));
        }
    }
    Ok(found)
}

fn same_file(a: &Path, canonical: &Path) -> bool {
    a == canonical || a.canonicalize().is_ok_and(|a| a == canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(manifest: &str, kind: &str, file: &str) -> String {
        serde_json::json!({
            "reason": "compiler-artifact",
            "manifest_path": manifest,
            "target": { "kind": [kind], "name": "x" },
            "filenames": [file],
        })
        .to_string()
    }

    #[test]
    fn finds_the_cdylib_of_our_package() {
        let ours = "/work/examples/echo/Cargo.toml";
        let lines = [
            artifact("/deps/sdk/Cargo.toml", "lib", "/t/libsdk.rlib"),
            artifact("/deps/other/Cargo.toml", "cdylib", "/t/other.wasm"),
            "   Compiling echo (not json)".to_owned(),
            serde_json::json!({"reason": "build-script-executed"}).to_string(),
            artifact(ours, "cdylib", "/t/wasm32-wasip2/release/echo.wasm"),
            serde_json::json!({"reason": "build-finished", "success": true}).to_string(),
        ]
        .join("\n");
        let found = find_artifact(lines.as_bytes(), Path::new(ours)).unwrap();
        assert_eq!(
            found,
            Some(PathBuf::from("/t/wasm32-wasip2/release/echo.wasm"))
        );
    }

    #[test]
    fn no_cdylib_means_none() {
        let ours = "/p/Cargo.toml";
        let lines = artifact(ours, "lib", "/t/libp.rlib");
        assert_eq!(
            find_artifact(lines.as_bytes(), Path::new(ours)).unwrap(),
            None
        );
    }

    #[test]
    fn folder_without_cargo_toml_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = build_handler(dir.path()).unwrap_err();
        assert_eq!(err.error_code(), "build_failed");
        assert!(err.to_string().contains("Cargo.toml"), "{err}");
    }
}
