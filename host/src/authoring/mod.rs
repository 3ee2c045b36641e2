//! Authoring handler projects outside this repository: `sandserve new` writes a project
//! (`scaffold`), `sandserve build` checks the toolchain before it builds (`toolchain`).
//! Python handlers are built into components with componentize-py ([`python`]); a model
//! file with a signature and no handler code is served by the built-in generic handler
//! ([`model_only`]). Nothing here runs in the server.
//!
//! A Rust project carries its own copy of the SDK and of the WIT contract (`vendor`): the
//! exact sources this `sandserve` binary was built with, so the project builds anywhere on
//! disk, offline but for crates.io, and against the contract of the server it will run on.

mod error;
pub mod model_only;
mod onnx;
pub mod python;
mod rust;
pub mod toolchain;
mod vendor;

pub use error::AuthoringError;
use std::path::{Path, PathBuf};

/// Languages `sandserve new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate built for wasm32-wasip2 with the vendored sandserve-sdk.
    Rust,
    /// A Python handler built with componentize-py.
    Python,
}

/// Starting points for a new project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// Returns its inputs, scaled by an optional typed `scale` parameter (no model).
    Echo,
    /// Runs an ONNX graph: a linear classifier over 4 features into 3 classes (a toy model
    /// made by `sandserve new`, to replace with yours).
    Classifier,
}

/// What `sandserve package DIR -o OUTPUT` and `sandserve build` do: a Python project
/// (`app.py`, see [`python`]) is built with componentize-py and packed with that component;
/// anything else goes to [`crate::package::package_dir`] (a Rust crate is built with cargo).
pub fn package_dir(
    dir: &Path,
    output: &Path,
) -> Result<crate::package::PackSummary, crate::package::PackageError> {
    use crate::package::{pack, PackageError};
    if !python::is_python_project(dir) {
        return crate::package::package_dir(dir, output);
    }
    let build = tempfile::tempdir().map_err(|e| PackageError::io("creating a build folder", e))?;
    let handler = build.path().join("handler.wasm");
    python::build(dir, &handler).map_err(|e| PackageError::BuildFailed {
        detail: e.to_string(),
    })?;
    pack(dir, output, Some(&handler))
}

/// A request the project `template` makes answers, for hints and READMEs.
pub fn example_request(template: Template) -> &'static str {
    rust::example_request(template)
}

/// What [`scaffold`] wrote.
#[derive(Debug)]
pub struct Scaffolded {
    /// The project folder.
    pub dir: PathBuf,
    /// Files written, relative to it.
    pub files: Vec<String>,
}

/// Writes a new project called `name` into `dir` (which must not exist, or be empty).
pub fn scaffold(
    dir: &Path,
    name: &str,
    lang: Lang,
    template: Template,
) -> Result<Scaffolded, AuthoringError> {
    check_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(AuthoringError::Exists(dir.to_path_buf()));
    }
    let files = match (lang, template) {
        (Lang::Rust, template) => rust::files(name, template),
        (Lang::Python, Template::Echo) => {
            python::scaffold(dir, name)?;
            return Ok(Scaffolded {
                dir: dir.to_path_buf(),
                files: python::SCAFFOLD_FILES
                    .iter()
                    .map(|f| f.to_string())
                    .collect(),
            });
        }
        (Lang::Python, other) => {
            return Err(AuthoringError::Invalid(format!(
                "the Python template is `echo` (got `{}`); start from it and load your graph \
                 with sandserve.Graph.load (docs/handlers.md)",
                template_name(other)
            )))
        }
    };
    for (path, contents) in &files {
        let full = dir.join(path);
        let io = |source| AuthoringError::io(format!("cannot write {}", full.display()), source);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&full, contents).map_err(io)?;
    }
    Ok(Scaffolded {
        dir: dir.to_path_buf(),
        files: files.into_iter().map(|(path, _)| path).collect(),
    })
}

fn template_name(template: Template) -> &'static str {
    match template {
        Template::Echo => "echo",
        Template::Classifier => "classifier",
    }
}

/// A project name is a model name (the manifest's rule) that is also a crate name.
fn check_name(name: &str) -> Result<(), AuthoringError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AuthoringError::BadName(name.to_string()))
    }
}

#[cfg(test)]
mod tests;
