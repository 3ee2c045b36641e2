//! The SDK and WIT contract a Rust project carries (`sandserve-sdk/`, `wit/`): embedded in
//! this binary at build time from `guest-sdk/` and `wit/`, so a project gets exactly the SDK
//! and contract of the `sandserve` that made it, with no path back into this repository and
//! no download but crates.io. The SDK's WIT path (`../wit`) holds in the copy, since the
//! project keeps the repository's layout: `sandserve-sdk/` next to `wit/`.

/// `guest-sdk/src/*.rs`, by file name (a unit test checks that none is missing).
pub const SDK_SOURCES: [(&str, &str); 7] = [
    (
        "convert.rs",
        include_str!("../../../guest-sdk/src/convert.rs"),
    ),
    ("error.rs", include_str!("../../../guest-sdk/src/error.rs")),
    (
        "handler.rs",
        include_str!("../../../guest-sdk/src/handler.rs"),
    ),
    ("lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    ("log.rs", include_str!("../../../guest-sdk/src/log.rs")),
    ("nn.rs", include_str!("../../../guest-sdk/src/nn.rs")),
    (
        "tensor.rs",
        include_str!("../../../guest-sdk/src/tensor.rs"),
    ),
];

/// `wit/`, by path under it.
pub const WIT_FILES: [(&str, &str); 3] = [
    ("world.wit", include_str!("../../../wit/world.wit")),
    (
        "deps/wasi-nn/wasi-nn.wit",
        include_str!("../../../wit/deps/wasi-nn/wasi-nn.wit"),
    ),
    (
        "deps/wasi-nn/LICENSE",
        include_str!("../../../wit/deps/wasi-nn/LICENSE"),
    ),
];

const SDK_MANIFEST: &str = include_str!("../../../guest-sdk/Cargo.toml");

/// The examples' lock file: it pins the SDK's crates.io dependencies to the versions this
/// repository tests (cargo drops the entries a project does not use).
pub const CARGO_LOCK: &str = include_str!("../../../examples/Cargo.lock");

/// The lines of the SDK's `lib.rs` that compile the repository's README as doctests; the
/// copy leaves them out (the project's README is not the SDK's).
const README_DOCTESTS: &str =
    "/// The README's handler example, compiled as a doctest so it cannot drift from the SDK.
#[cfg(doctest)]
#[doc = include_str!(\"../../README.md\")]
pub struct ReadmeDoctests;
";

/// Every vendored file: path in the project and contents.
pub fn files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (name, text) in SDK_SOURCES {
        let text = if name == "lib.rs" {
            text.replace(README_DOCTESTS, "")
        } else {
            text.to_string()
        };
        files.push((format!("sandserve-sdk/src/{name}"), text.into_bytes()));
    }
    files.push((
        "sandserve-sdk/Cargo.toml".to_string(),
        sdk_manifest().into_bytes(),
    ));
    for (path, text) in WIT_FILES {
        files.push((format!("wit/{path}"), text.as_bytes().to_vec()));
    }
    files
}

/// The SDK's `Cargo.toml` standing alone: the workspace's inherited fields written out,
/// its lints (the repository's) left out.
pub fn sdk_manifest() -> String {
    let mut manifest: toml::Table = SDK_MANIFEST
        .parse()
        .unwrap_or_else(|e| panic!("guest-sdk/Cargo.toml is valid TOML: {e}"));
    manifest.remove("lints");
    if let Some(toml::Value::Table(package)) = manifest.get_mut("package") {
        for (key, value) in [
            ("edition", "2021"),
            ("license", "Apache-2.0"),
            ("version", env!("CARGO_PKG_VERSION")),
        ] {
            package.insert(key.to_string(), toml::Value::String(value.to_string()));
        }
        package.remove("rust-version");
        package.insert("publish".to_string(), toml::Value::Boolean(false));
    }
    format!(
        "# sandserve-sdk {}, copied by `sandserve new` with the WIT contract in ../wit.\n\
         # Replace both with the ones of a newer sandserve by running `sandserve new` again\n\
         # and copying its sandserve-sdk/ and wit/ folders.\n{}",
        env!("CARGO_PKG_VERSION"),
        toml::to_string(&manifest).unwrap_or_default()
    )
}
