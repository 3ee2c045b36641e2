//! The Rust project `sandserve new --lang rust` writes: a `cdylib` crate that is a
//! workspace of its own, the package manifest, a handler with unit tests, and the vendored
//! SDK and WIT (see `vendor`).

use super::{onnx, vendor, Template};

/// Every file of a new Rust project: path and contents.
pub fn files(name: &str, template: Template) -> Vec<(String, Vec<u8>)> {
    let example = example_request(template);
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{example}}", example)
            .into_bytes()
    };
    let (manifest, handler) = match template {
        Template::Echo => (
            include_str!("templates/rust/echo.sandserve.toml.tmpl"),
            include_str!("templates/rust/echo.lib.rs.tmpl"),
        ),
        Template::Classifier => (
            include_str!("templates/rust/classifier.sandserve.toml.tmpl"),
            include_str!("templates/rust/classifier.lib.rs.tmpl"),
        ),
    };
    let mut files: Vec<(String, Vec<u8>)> = [
        (
            "Cargo.toml",
            fill(include_str!("templates/rust/Cargo.toml.tmpl")),
        ),
        ("sandserve.toml", fill(manifest)),
        ("src/lib.rs", fill(handler)),
        (
            "README.md",
            fill(include_str!("templates/rust/README.md.tmpl")),
        ),
        (
            ".gitignore",
            fill(include_str!("templates/rust/gitignore.tmpl")),
        ),
        ("Cargo.lock", vendor::CARGO_LOCK.as_bytes().to_vec()),
    ]
    .into_iter()
    .map(|(path, text)| (path.to_string(), text))
    .collect();
    if template == Template::Classifier {
        files.push(("model/classifier.onnx".to_string(), onnx::classifier()));
    }
    files.extend(vendor::files());
    files
}

/// A request the template's handler answers (Databricks format), for its README and the
/// hint `sandserve new` prints.
pub fn example_request(template: Template) -> &'static str {
    match template {
        Template::Echo => r#"{"inputs": {"x": [[1, 2, 3]]}, "params": {"scale": 2}}"#,
        Template::Classifier => r#"{"instances": [[5, 1, 0, 0], [0, 1, 6, 0]]}"#,
    }
}
