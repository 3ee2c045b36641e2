//! Hand-encoded ONNX protobufs: every place a tensor can hide external data is refused,
//! inline models pass, malformed and hostile files fail cleanly.

#![allow(clippy::unwrap_used)] // a failed unwrap is the test failing

use super::*;
use std::io::Cursor;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A length-delimited field.
fn msg(field: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(field << 3 | 2, &mut out);
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A varint field.
fn num(field: u64, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(field << 3, &mut out);
    varint(value, &mut out);
    out
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A float tensor named `name` with its 4 bytes inline.
fn inline_tensor(name: &str) -> Vec<u8> {
    cat(&[
        num(1, 1),
        num(2, 1),
        msg(8, name.as_bytes()),
        msg(9, &1.0f32.to_le_bytes()),
    ])
}

/// A float tensor named `name` whose data lives in the file `location`.
fn external_tensor(name: &str, location: &str) -> Vec<u8> {
    let entry = cat(&[msg(1, b"location"), msg(2, location.as_bytes())]);
    cat(&[
        num(1, 1),
        num(2, 1),
        msg(8, name.as_bytes()),
        msg(13, &entry),
        num(14, 1),
    ])
}

/// A model (ir_version 8) around `graph`.
fn model(graph: &[u8]) -> Vec<u8> {
    cat(&[num(1, 8), msg(7, graph)])
}

fn check(bytes: &[u8]) -> Result<(), NotSelfContained> {
    check_onnx(Cursor::new(bytes))
}

fn external(tensor: &str) -> Result<(), NotSelfContained> {
    Err(NotSelfContained::ExternalData {
        tensor: tensor.into(),
    })
}

#[test]
fn an_inline_model_passes() {
    let graph = cat(&[
        msg(1, &cat(&[msg(1, b"w"), msg(2, b"y"), msg(4, b"Identity")])),
        msg(2, b"g"),
        msg(5, &inline_tensor("w")),
    ]);
    assert_eq!(check(&model(&graph)), Ok(()));
}

#[test]
fn an_external_initializer_is_refused_with_its_name() {
    let graph = msg(5, &external_tensor("w", "Cargo.toml"));
    assert_eq!(check(&model(&graph)), external("w"));
}

#[test]
fn either_marker_alone_is_enough() {
    let location_only = cat(&[msg(8, b"a"), num(14, 1)]);
    assert_eq!(check(&model(&msg(5, &location_only))), external("a"));
    let entries_only = cat(&[msg(8, b"b"), msg(13, &msg(1, b"location"))]);
    assert_eq!(check(&model(&msg(5, &entries_only))), external("b"));
}

#[test]
fn every_place_a_tensor_can_hide_is_walked() {
    let bad = external_tensor("hidden", "../blobs/sha256/ab");
    let attribute_t = msg(5, &cat(&[msg(1, b"value"), msg(5, &bad)]));
    let attribute_tensors = msg(5, &cat(&[msg(1, b"value"), msg(10, &bad)]));
    let sparse = cat(&[msg(1, &bad), msg(2, &inline_tensor("i"))]);
    let constant_node = msg(1, &attribute_t);
    let subgraph = msg(
        1,
        &msg(5, &cat(&[msg(1, b"then_branch"), msg(6, &constant_node)])),
    );
    let graphs_list = msg(
        1,
        &msg(5, &cat(&[msg(1, b"body"), msg(11, &constant_node)])),
    );
    let sparse_attr = msg(1, &msg(5, &cat(&[msg(1, b"s"), msg(22, &sparse)])));
    let sparse_attrs = msg(1, &msg(5, &cat(&[msg(1, b"s"), msg(23, &sparse)])));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("constant attribute", model(&constant_node)),
        ("tensors attribute", model(&msg(1, &attribute_tensors))),
        ("sparse initializer", model(&msg(15, &sparse))),
        ("subgraph", model(&subgraph)),
        ("graphs attribute", model(&graphs_list)),
        ("sparse attribute", model(&sparse_attr)),
        ("sparse attributes", model(&sparse_attrs)),
        (
            "function node",
            cat(&[model(b""), msg(25, &msg(7, &attribute_t))]),
        ),
        (
            "function default attribute",
            cat(&[model(b""), msg(25, &msg(11, &cat(&[msg(5, &bad)])))]),
        ),
        (
            "training graph",
            cat(&[model(b""), msg(20, &msg(2, &msg(5, &bad)))]),
        ),
    ];
    for (place, bytes) in cases {
        assert_eq!(check(&bytes), external("hidden"), "{place}");
    }
}

#[test]
fn a_large_inline_field_is_skipped_not_mistaken() {
    let weights = vec![0x0Au8; 1 << 20];
    let tensor = cat(&[msg(8, b"big"), msg(9, &weights)]);
    assert_eq!(check(&model(&msg(5, &tensor))), Ok(()));
}

#[test]
fn malformed_files_are_refused() {
    let good = model(&msg(5, &inline_tensor("w")));
    assert!(matches!(
        check(&good[..good.len() - 2]),
        Err(NotSelfContained::MalformedOnnx(_))
    ));
    assert!(matches!(
        check(&num(1, 8)),
        Err(NotSelfContained::MalformedOnnx("it has no graph"))
    ));
    assert!(matches!(
        check(b"not even a model"),
        Err(NotSelfContained::MalformedOnnx(_))
    ));
    assert!(matches!(
        check(b""),
        Err(NotSelfContained::MalformedOnnx(_))
    ));
    // A length that claims more than the file holds.
    let mut lying = vec![7 << 3 | 2];
    varint(u64::MAX >> 1, &mut lying);
    assert!(matches!(
        check(&lying),
        Err(NotSelfContained::MalformedOnnx(_))
    ));
}

#[test]
fn hostile_nesting_fails_without_exhausting_the_stack() {
    // graph > node > attribute > graph > ... two thousand levels deep.
    let mut inner = Vec::new();
    for _ in 0..2_000 {
        inner = msg(1, &msg(5, &msg(6, &inner)));
    }
    assert!(matches!(
        check(&model(&inner)),
        Err(NotSelfContained::MalformedOnnx("messages nest too deeply"))
    ));
}

#[test]
fn ort_format_is_refused() {
    let mut bytes = vec![0u8; 64];
    bytes[4..8].copy_from_slice(b"ORTM");
    assert_eq!(check(&bytes), Err(NotSelfContained::OrtFormat));
}

#[test]
fn ir_xml_must_be_xml() {
    assert_eq!(check_ir_xml(&b"<?xml version=\"1.0\"?><net/>"[..]), Ok(()));
    assert_eq!(check_ir_xml(&b"\xEF\xBB\xBF\n  <net/>"[..]), Ok(()));
    let onnx = model(&msg(5, &external_tensor("w", "metadata/db")));
    assert_eq!(check_ir_xml(&onnx[..]), Err(NotSelfContained::NotIrXml));
    assert_eq!(check_ir_xml(&b""[..]), Err(NotSelfContained::NotIrXml));
    // A space then `<`: also a valid protobuf prefix (field 4, fixed32), not IR.
    assert_eq!(
        check_ir_xml(&b" <\x01\x02\x03"[..]),
        Err(NotSelfContained::NotIrXml)
    );
}
