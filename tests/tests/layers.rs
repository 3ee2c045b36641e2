//! The host's layering, checked on its source: each top-level module of `host/src` imports
//! only the modules its layer may use (docs/architecture.md, "Layers"). A `use crate::x`
//! (or a `crate::x::` path) reaching a module not in the table fails with the file and the
//! line, so a new upward dependency is caught where it is written.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::repo_root;
use std::collections::BTreeMap;
use std::path::Path;

/// What each module may import. Modules not listed (the composition root: `server`,
/// `config`, `main`, `lib`) may import anything.
const ALLOWED: [(&str, &[&str]); 16] = [
    ("runtime", &[]),
    ("cluster", &[]),
    ("readiness", &[]),
    ("inference", &["runtime"]),
    ("blobs", &[]),
    ("telemetry", &[]),
    ("listener", &[]),
    ("package", &["runtime", "inference"]),
    ("registry", &["blobs", "cluster", "governance"]),
    ("tenancy", &["registry"]),
    ("governance", &[]),
    ("codec", &["package", "runtime"]),
    (
        "images",
        &[
            "blobs",
            "inference",
            "package",
            "registry",
            "runtime",
            "telemetry",
        ],
    ),
    (
        "serving",
        &[
            "codec",
            "images",
            "registry",
            "runtime",
            "tenancy",
            "telemetry",
            "inference",
            "package",
            "blobs",
            "governance",
        ],
    ),
    (
        "api",
        &[
            "blobs",
            "cluster",
            "codec",
            "images",
            "governance",
            "inference",
            "package",
            "readiness",
            "registry",
            "runtime",
            "serving",
            "telemetry",
            "tenancy",
        ],
    ),
    ("authoring", &["package", "runtime", "inference"]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules `crate::` paths in `text` name, with their line numbers.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((number + 1, name));
            }
        }
    }
    found
}

#[test]
fn no_host_module_imports_from_a_layer_above_it() {
    let src = repo_root().join("host/src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let Some(may_use) = allowed.get(module.as_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, used) in crate_paths(&text) {
            if used != module && !may_use.contains(&used.as_str()) {
                violations.push(format!(
                    "host/src/{}:{line}: `{module}` uses `crate::{used}`",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports from a layer above (see docs/architecture.md, Layers):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_crate_paths_and_skips_comments() {
    let text = "use crate::registry::X;\nlet a = crate::serving::f(); // crate::api::no\n";
    assert_eq!(
        crate_paths(text),
        vec![(1, "registry".to_string()), (2, "serving".to_string())]
    );
}
