//! The model of the `classifier` template, written as ONNX protobuf bytes (no Python, no
//! download): a linear classifier over 4 FP32 features into 3 classes, `Gemm` then
//! `Softmax` (`probabilities`, FP32 `[n, 3]`) and `ArgMax` (`label`, INT64 `[n]`), opset 13.
//! Its weights pick the class of the largest of the first three features (the fourth is
//! ignored), so a project's tests can tell what it must answer; replace the file with a real
//! model of the same signature.

/// Protobuf wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
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

fn int_field(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3 | VARINT);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, field << 3 | LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// ONNX element types.
const FLOAT: u64 = 1;
const INT64: u64 = 7;

/// `TensorProto` holding `values` with `dims`.
fn initializer(name: &str, dims: &[u64], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for d in dims {
        int_field(&mut t, 1, *d);
    }
    int_field(&mut t, 2, FLOAT);
    bytes_field(&mut t, 8, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes_field(&mut t, 9, &raw);
    t
}

/// `ValueInfoProto` of a tensor whose first dimension is the batch `n`.
fn value_info(name: &str, elem_type: u64, rest: &[u64]) -> Vec<u8> {
    let mut shape = Vec::new();
    let mut batch = Vec::new();
    bytes_field(&mut batch, 2, b"n");
    bytes_field(&mut shape, 1, &batch);
    for d in rest {
        let mut dim = Vec::new();
        int_field(&mut dim, 1, *d);
        bytes_field(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    int_field(&mut tensor, 1, elem_type);
    bytes_field(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    bytes_field(&mut ty, 1, &tensor);
    let mut info = Vec::new();
    bytes_field(&mut info, 1, name.as_bytes());
    bytes_field(&mut info, 2, &ty);
    info
}

/// `NodeProto`; `ints` are INT attributes.
fn node(op: &str, inputs: &[&str], output: &str, ints: &[(&str, u64)]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        bytes_field(&mut n, 1, i.as_bytes());
    }
    bytes_field(&mut n, 2, output.as_bytes());
    bytes_field(&mut n, 3, op.to_lowercase().as_bytes());
    bytes_field(&mut n, 4, op.as_bytes());
    for (name, v) in ints {
        let mut a = Vec::new();
        bytes_field(&mut a, 1, name.as_bytes());
        int_field(&mut a, 3, *v);
        int_field(&mut a, 20, 2); // AttributeType INT
        bytes_field(&mut n, 5, &a);
    }
    n
}

/// The classifier model's bytes.
pub fn classifier() -> Vec<u8> {
    // Each of the first three features votes for its class; the fourth for none.
    let weights = [
        4.0, 0.0, 0.0, //
        0.0, 4.0, 0.0, //
        0.0, 0.0, 4.0, //
        0.0, 0.0, 0.0,
    ];
    let mut graph = Vec::new();
    bytes_field(
        &mut graph,
        1,
        &node("Gemm", &["features", "weights", "bias"], "logits", &[]),
    );
    bytes_field(
        &mut graph,
        1,
        &node("Softmax", &["logits"], "probabilities", &[("axis", 1)]),
    );
    bytes_field(
        &mut graph,
        1,
        &node(
            "ArgMax",
            &["probabilities"],
            "label",
            &[("axis", 1), ("keepdims", 0)],
        ),
    );
    bytes_field(&mut graph, 2, b"classifier");
    bytes_field(&mut graph, 5, &initializer("weights", &[4, 3], &weights));
    bytes_field(&mut graph, 5, &initializer("bias", &[3], &[0.0; 3]));
    bytes_field(&mut graph, 11, &value_info("features", FLOAT, &[4]));
    bytes_field(&mut graph, 12, &value_info("probabilities", FLOAT, &[3]));
    bytes_field(&mut graph, 12, &value_info("label", INT64, &[]));
    let mut model = Vec::new();
    int_field(&mut model, 1, 8); // ir_version
    bytes_field(&mut model, 2, b"sandserve new");
    let mut opset = Vec::new();
    int_field(&mut opset, 2, 13);
    bytes_field(&mut model, 8, &opset);
    bytes_field(&mut model, 7, &graph);
    model
}
