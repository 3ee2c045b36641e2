//! The Rust project `sandserve new --lang rust` writes: a `cdylib` crate that is a
//! workspace of its own, the package manifest, a handler with unit tests, and the vendored
//! SDK and WIT (see `vendor`).

use super::{vendor, Template};

/// Every file of a new Rust project: path and contents.
pub fn files(name: &str, template: Template) -> Vec<(String, Vec<u8>)> {
    let fill = |text: &str| text.replace("{{name}}", name).into_bytes();
    let mut files = match template {
        Template::Echo => vec![
            (
                "Cargo.toml",
                fill(include_str!("templates/rust/Cargo.toml.tmpl")),
            ),
            (
                "sandserve.toml",
                fill(include_str!("templates/rust/sandserve.toml.tmpl")),
            ),
            (
                "src/lib.rs",
                fill(include_str!("templates/rust/lib.rs.tmpl")),
            ),
            (
                "README.md",
                fill(include_str!("templates/rust/README.md.tmpl")),
            ),
            (
                ".gitignore",
                fill(include_str!("templates/rust/gitignore.tmpl")),
            ),
            ("Cargo.lock", vendor::CARGO_LOCK.as_bytes().to_vec()),
        ],
    }
    .into_iter()
    .map(|(path, text)| (path.to_string(), text))
    .collect::<Vec<_>>();
    files.extend(vendor::files());
    files
}
