//! Model-only packages: a model file (ONNX, or OpenVINO IR `.xml` + `.bin`) and an
//! optional signature, served by the built-in generic handler (`guests/generic`, a
//! sandboxed guest like any other, built from source by `host/build.rs` and embedded
//! here). The handler passes the request's tensors to the graph [`GRAPH_NAME`] and returns
//! its outputs: pre-shaped tensors in, tensors out. With a signature the host checks
//! inputs (names, types, fixed dimensions) before the guest runs and accepts the
//! Databricks formats; without one, only V2 requests (which name their tensors) fit.

use super::AuthoringError;
use crate::inference::Encoding;
use crate::package::{pack, GraphEntry, Manifest, PackSummary, Signature};
use std::path::Path;

/// The generic handler component.
pub const GENERIC_HANDLER: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/generic_handler.wasm"));
/// The graph name the generic handler runs.
pub const GRAPH_NAME: &str = "model";
/// Where the generic handler is stored in a model-only package.
pub const HANDLER_PATH: &str = "generic-handler.wasm";

/// What `sandserve package --model` packs.
#[derive(Debug, Clone, Copy)]
pub struct ModelOnly<'a> {
    /// `.onnx`, or OpenVINO `.xml` with its `.bin` next to it (same stem).
    pub model: &'a Path,
    /// A TOML or JSON file with `inputs` and `outputs` (as `[signature]` in sandserve.toml).
    pub signature: Option<&'a Path>,
    /// The model name; defaults to the model file's stem, made a valid name.
    pub name: Option<&'a str>,
}

/// Writes a model-only package to `output` (see [`crate::package::pack`]).
pub fn package_model(spec: ModelOnly<'_>, output: &Path) -> Result<PackSummary, AuthoringError> {
    let model = spec.model;
    let extension = model.extension().and_then(|e| e.to_str()).unwrap_or("");
    let (encoding, files): (Encoding, Vec<(&str, std::path::PathBuf)>) = match extension {
        "onnx" => (
            Encoding::Onnx,
            vec![("model/model.onnx", model.to_path_buf())],
        ),
        "xml" => {
            let weights = model.with_extension("bin");
            if !weights.is_file() {
                return Err(AuthoringError::Invalid(format!(
                    "an OpenVINO model needs its weights next to it: {} is missing",
                    weights.display()
                )));
            }
            (
                Encoding::Openvino,
                vec![
                    ("model/model.xml", model.to_path_buf()),
                    ("model/model.bin", weights),
                ],
            )
        }
        _ => {
            return Err(AuthoringError::Invalid(format!(
                "--model {}: give an .onnx file, or an OpenVINO .xml with its .bin next to it",
                model.display()
            )))
        }
    };
    for (_, source) in &files {
        if !source.is_file() {
            return Err(AuthoringError::Invalid(format!(
                "--model: {} is not a file",
                source.display()
            )));
        }
    }
    let signature = spec.signature.map(read_signature).transpose()?;
    let name = match spec.name {
        Some(name) => name.to_owned(),
        None => default_name(model),
    };
    let manifest = Manifest {
        name,
        description: Some(format!(
            "model-only package ({extension}), served by sandserve's generic handler"
        )),
        handler: HANDLER_PATH.to_owned(),
        raw_body: false,
        limits: Default::default(),
        graphs: vec![GraphEntry {
            name: GRAPH_NAME.to_owned(),
            encoding,
            files: files.iter().map(|(p, _)| (*p).to_owned()).collect(),
            target: None,
            intra_op_threads: None,
            optimization: None,
            precision: None,
            batching: None,
        }],
        guest_load: None,
        signature,
        examples: Vec::new(),
    };
    let text = toml::to_string(&manifest)
        .map_err(|e| AuthoringError::Invalid(format!("cannot write the manifest: {e}")))?;
    Manifest::parse(&text)
        .map_err(|e| AuthoringError::Invalid(format!("{e} (use --name or fix the signature)")))?;

    let stage =
        tempfile::tempdir().map_err(|e| AuthoringError::io("creating a staging folder", e))?;
    let place = |rel: &str, write: &dyn Fn(&Path) -> std::io::Result<()>| {
        let path = stage.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| AuthoringError::io("staging the package", e))?;
        }
        write(&path).map_err(|e| AuthoringError::io(format!("staging {rel}"), e))
    };
    place("sandserve.toml", &|p| std::fs::write(p, &text))?;
    place(HANDLER_PATH, &|p| std::fs::write(p, GENERIC_HANDLER))?;
    for (rel, source) in &files {
        // A link, not a copy: models may be gigabytes.
        place(rel, &|p| {
            std::os::unix::fs::symlink(std::path::absolute(source)?, p)
        })?;
    }
    pack(stage.path(), output, None).map_err(|e| AuthoringError::BuildFailed(e.to_string()))
}

/// A signature file: TOML or (by extension `.json`) JSON with `inputs` and `outputs`.
fn read_signature(path: &Path) -> Result<Signature, AuthoringError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuthoringError::io(format!("reading --signature {}", path.display()), e))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| {
        AuthoringError::Invalid(format!(
            "--signature {}: {e}; it holds `inputs` and `outputs`, lists of \
             {{ name, datatype, shape }} as in sandserve.toml's [signature]",
            path.display()
        ))
    })
}

/// A model name from a file name: lower case, other characters than a-z 0-9 _ - made
/// `-`, at most 64 characters.
fn default_name(model: &Path) -> String {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let name = name.trim_start_matches(['-', '_']).to_owned();
    if name.is_empty() {
        "model".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests;
