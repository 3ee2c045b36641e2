#![allow(clippy::unwrap_used)] // a failed unwrap is the test failing

use super::*;
use crate::package::{unpack, UnpackLimits};
use std::io::Read;

#[test]
fn names_come_from_the_file_name() {
    assert_eq!(default_name(Path::new("/m/Digits v2.onnx")), "digits-v2");
    assert_eq!(default_name(Path::new("_.onnx")), "model");
}

fn spec(model: &Path) -> ModelOnly<'_> {
    ModelOnly {
        model,
        signature: None,
        name: None,
    }
}

#[test]
fn unknown_model_files_and_missing_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.tar.gz");
    let err = package_model(spec(&dir.path().join("m.pt")), &out).unwrap_err();
    assert!(err.to_string().contains("give an .onnx file"), "{err}");
    std::fs::write(dir.path().join("m.xml"), "<net/>").unwrap();
    let err = package_model(spec(&dir.path().join("m.xml")), &out).unwrap_err();
    assert!(err.to_string().contains("m.bin is missing"), "{err}");
    let err = package_model(spec(&dir.path().join("none.onnx")), &out).unwrap_err();
    assert!(err.to_string().contains("is not a file"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_bad_signature_file_is_refused_with_what_it_should_hold() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), "onnx bytes").unwrap();
    std::fs::write(dir.path().join("sig.toml"), "inputs = 3").unwrap();
    let spec = ModelOnly {
        model: &dir.path().join("m.onnx"),
        signature: Some(&dir.path().join("sig.toml")),
        name: None,
    };
    let err = package_model(spec, &dir.path().join("p.tar")).unwrap_err();
    assert!(
        err.to_string().contains("it holds `inputs` and `outputs`"),
        "{err}"
    );
}

#[test]
fn the_package_holds_the_generic_handler_the_model_and_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Net.onnx"), "onnx bytes").unwrap();
    std::fs::write(
        dir.path().join("sig.json"),
        r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,4]}],
            "outputs":[{"name":"y","datatype":"FP32","shape":[-1]}]}"#,
    )
    .unwrap();
    let out = dir.path().join("p.tar.gz");
    let spec = ModelOnly {
        model: &dir.path().join("Net.onnx"),
        signature: Some(&dir.path().join("sig.json")),
        name: None,
    };
    let summary = package_model(spec, &out).unwrap();
    assert_eq!(summary.files, 3);
    let bytes = std::fs::read(&out).unwrap();
    let mut files = Vec::new();
    let mut sink = |path: &str, data: &mut dyn Read| {
        let mut buf = Vec::new();
        data.read_to_end(&mut buf).unwrap();
        files.push((path.to_owned(), buf.len()));
        Ok(buf.len() as u64)
    };
    let unpacked = unpack(&bytes[..], &UnpackLimits::default(), &mut sink).unwrap();
    assert_eq!(files[0], (HANDLER_PATH.to_owned(), GENERIC_HANDLER.len()));
    assert_eq!(files[1], ("model/model.onnx".to_owned(), 10));
    let manifest = &unpacked.manifest;
    assert_eq!(manifest.name, "net");
    assert_eq!(manifest.handler, HANDLER_PATH);
    assert_eq!(manifest.graphs[0].name, GRAPH_NAME);
    assert_eq!(manifest.graphs[0].files, ["model/model.onnx"]);
    let signature = manifest.signature.as_ref().unwrap();
    assert_eq!(signature.inputs[0].shape, [-1, 4]);
    assert!(GENERIC_HANDLER.starts_with(b"\0asm"));
}
