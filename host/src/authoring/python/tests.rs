#![allow(clippy::unwrap_used)] // a failed unwrap is the test failing

use super::*;

#[test]
fn scaffold_writes_a_project_whose_manifest_parses() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("my-model");
    scaffold(&project, "my-model").unwrap();
    let manifest = std::fs::read_to_string(project.join("sandserve.toml")).unwrap();
    let parsed = Manifest::parse(&manifest).unwrap();
    assert_eq!(parsed.name, "my-model");
    assert_eq!(parsed.handler, "my_model.wasm");
    let app = std::fs::read_to_string(project.join(APP_FILE)).unwrap();
    assert!(
        app.contains("def predict(request: Request) -> Response:"),
        "{app}"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("sandserve/__init__.py")).unwrap(),
        SDK_SOURCE
    );
    assert!(is_python_project(&project));
}

#[test]
fn scaffold_refuses_a_bad_name_and_a_folder_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let err = scaffold(&dir.path().join("x"), "Bad Name").unwrap_err();
    assert!(
        err.to_string().contains("`Bad Name` cannot name a model"),
        "{err}"
    );
    assert!(
        !dir.path().join("x").exists(),
        "nothing written for a bad name"
    );
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let err = scaffold(dir.path(), "fine").unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn a_project_without_app_py_is_refused_before_any_tool_runs() {
    let dir = tempfile::tempdir().unwrap();
    let err = build(dir.path(), &dir.path().join("out.wasm")).unwrap_err();
    assert!(err.to_string().contains("has no app.py"), "{err}");
    assert!(!is_python_project(dir.path()));
}

#[test]
fn sources_are_copied_without_venvs_hidden_folders_or_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for (path, text) in [
        ("app.py", "x"),
        ("helpers/__init__.py", "y"),
        ("model/weights.onnx", "big"),
        (".sandserve/venv/lib/mod.py", "no"),
        ("env/pyvenv.cfg", "no"),
        ("env/lib/site.py", "no"),
        ("__pycache__/app.cpython-311.py", "no"),
    ] {
        write(&src.join(path), text).unwrap();
    }
    let out = dir.path().join("out");
    copy_python_sources(&src, &out, 0).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("app.py")).unwrap(), "x");
    assert_eq!(
        std::fs::read_to_string(out.join("helpers/__init__.py")).unwrap(),
        "y"
    );
    for absent in ["model/weights.onnx", ".sandserve", "env", "__pycache__"] {
        assert!(!out.join(absent).exists(), "{absent} was copied");
    }
}

#[test]
fn a_componentize_py_of_another_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("componentize-py");
    std::fs::write(&fake, "#!/bin/sh\necho componentize-py 0.1.0\n").unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let problem = check_version(&fake).unwrap_err();
    assert!(problem.contains("0.1.0, not 0.25.1"), "{problem}");
    assert!(check_version(&dir.path().join("missing")).is_err());
}

#[test]
fn the_setup_script_installs_the_pinned_componentize_py() {
    let script = include_str!("../../../../scripts/setup-engines.sh");
    assert!(
        script.contains(&format!("componentize-py=={COMPONENTIZE_PY_VERSION}")),
        "scripts/setup-engines.sh pins another componentize-py than {COMPONENTIZE_PY_VERSION}"
    );
}
