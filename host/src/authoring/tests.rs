use super::*;

#[test]
fn names_follow_the_model_name_rule() {
    for good in ["digits", "my-model_2", "a"] {
        assert!(check_name(good).is_ok(), "{good}");
    }
    for bad in ["", "Digits", "2fast", "-x", "a/b", "a.b", &"x".repeat(65)] {
        let err = check_name(bad).unwrap_err();
        assert!(err.to_string().contains("a-z 0-9"), "{err}");
    }
}

#[test]
fn every_sdk_source_is_vendored() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/src");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let vendored: Vec<&str> = vendor::SDK_SOURCES.iter().map(|(n, _)| *n).collect();
    assert_eq!(on_disk, vendored);
}

#[test]
fn the_vendored_sdk_stands_alone() {
    let manifest: toml::Table = vendor::sdk_manifest().parse().unwrap();
    assert!(!manifest.contains_key("lints"));
    let package = manifest["package"].as_table().unwrap();
    assert_eq!(package["name"].as_str(), Some("sandserve-sdk"));
    assert_eq!(package["edition"].as_str(), Some("2021"));
    assert!(manifest["dependencies"]
        .as_table()
        .unwrap()
        .contains_key("wit-bindgen"));
    let files = vendor::files();
    let lib = files
        .iter()
        .find(|(p, _)| p == "sandserve-sdk/src/lib.rs")
        .unwrap();
    let lib = std::str::from_utf8(&lib.1).unwrap();
    assert!(!lib.contains("README.md"), "the README doctest is left out");
    assert!(lib.contains("path: \"../wit\""), "the SDK finds ../wit");
    assert!(files.iter().any(|(p, _)| p == "wit/world.wit"));
}

#[test]
fn a_rust_project_has_no_path_outside_itself() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("hello");
    let made = scaffold(&project, "hello", Lang::Rust, Template::Echo).unwrap();
    assert!(made.files.iter().any(|f| f == "src/lib.rs"));
    let cargo = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("name = \"hello\""));
    assert!(cargo.contains("path = \"sandserve-sdk\""));
    assert!(cargo.contains("[workspace]"));
    assert!(!cargo.contains(".."), "{cargo}");
    let manifest = std::fs::read_to_string(project.join("sandserve.toml")).unwrap();
    crate::package::Manifest::parse(&manifest).unwrap();
    // A second time into the same, now full, folder is refused.
    let err = scaffold(&project, "hello", Lang::Rust, Template::Echo).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn a_python_project_is_its_app_manifest_and_sdk_and_only_the_echo_template() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("p");
    let made = scaffold(&project, "p", Lang::Python, Template::Echo).unwrap();
    for file in &made.files {
        assert!(project.join(file).is_file(), "{file} was not written");
    }
    assert!(made.files.iter().any(|f| f == "app.py"), "{:?}", made.files);
    let manifest = std::fs::read_to_string(project.join("sandserve.toml")).unwrap();
    crate::package::Manifest::parse(&manifest).unwrap();
    assert!(super::python::is_python_project(&project));
    // Nothing accepted and ignored: there is no Python classifier template.
    let err = scaffold(
        &dir.path().join("q"),
        "q",
        Lang::Python,
        Template::Classifier,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("Python template is `echo`"),
        "{err}"
    );
}

#[test]
fn a_classifier_project_carries_a_self_contained_model() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("iris");
    scaffold(&project, "iris", Lang::Rust, Template::Classifier).unwrap();
    let manifest = std::fs::read_to_string(project.join("sandserve.toml")).unwrap();
    let manifest = crate::package::Manifest::parse(&manifest).unwrap();
    assert_eq!(manifest.graphs[0].files, ["model/classifier.onnx"]);
    // Loading and running it is tests/tests/cli.rs's (it needs ONNX Runtime).
    let model = std::fs::read(project.join("model/classifier.onnx")).unwrap();
    for op in [
        &b"Gemm"[..],
        b"Softmax",
        b"ArgMax",
        b"features",
        b"probabilities",
    ] {
        assert!(model.windows(op.len()).any(|w| w == op));
    }
}
