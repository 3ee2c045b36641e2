//! Tests of the Databricks codec: the four formats, their errors, and `predictions`.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::package::TensorSignature;
use crate::runtime::{ElementType, Response, Tensor};
use serde_json::json;

/// The answer as a JSON value, to compare with `json!`.
fn predictions(response: &Response) -> Result<Value, CodecError> {
    super::predictions(response).map(|p| serde_json::to_value(&p).unwrap())
}

fn tensor_sig(name: &str, datatype: &str, shape: &[i64]) -> TensorSignature {
    TensorSignature {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape: shape.to_vec(),
    }
}

fn sig(inputs: Vec<TensorSignature>) -> Signature {
    Signature {
        inputs,
        outputs: Vec::new(),
    }
}

fn digits_sig() -> Signature {
    sig(vec![tensor_sig("images", "FP32", &[-1, 64])])
}

/// Parses and checks against the signature, as the query pipeline does.
fn parse(body: &Value, signature: Option<&Signature>) -> Result<Request, CodecError> {
    let (_, request) = parse_query(body.to_string().as_bytes(), signature)?;
    if let Some(signature) = signature {
        crate::codec::signature::check_request(&request, signature)?;
    }
    Ok(request)
}

fn err(body: &Value, signature: Option<&Signature>) -> String {
    parse(body, signature).unwrap_err().to_string()
}

/// Each input's name, element type and shape, in order.
fn kinds(request: &Request) -> Vec<(&str, ElementType, &[u64])> {
    request
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.element_type, t.shape.as_slice()))
        .collect()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn output(name: &str, element_type: ElementType, shape: &[u64], data: Vec<u8>) -> Tensor {
    Tensor {
        name: name.to_owned(),
        shape: shape.to_vec(),
        element_type,
        data,
    }
}

fn response(outputs: Vec<Tensor>) -> Response {
    Response {
        outputs,
        parameters: None,
    }
}

/// Two 8x8 digit images as rows of 64 pixel values (integers and fractions mixed).
fn pixel_rows() -> Vec<Vec<Value>> {
    (0..2)
        .map(|r| {
            (0..64)
                .map(|c| {
                    if c % 3 == 0 {
                        json!(r * 64 + c)
                    } else {
                        json!(f64::from(r * 64 + c) + 0.5)
                    }
                })
                .collect()
        })
        .collect()
}

fn pixel_columns() -> Vec<String> {
    (0..64).map(|c| format!("pixel_{c}")).collect()
}

/// The same records as `dataframe_records`, keys in column order (not sorted).
fn records_text(rows: &[Vec<Value>], columns: &[String]) -> String {
    let records: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = columns
                .iter()
                .zip(row)
                .map(|(c, v)| format!("{}:{v}", json!(c)))
                .collect();
            format!("{{{}}}", cells.join(","))
        })
        .collect();
    format!("{{\"dataframe_records\":[{}]}}", records.join(","))
}

#[test]
fn four_formats_give_the_same_digits_tensor() {
    let rows = pixel_rows();
    let columns = pixel_columns();
    let signature = digits_sig();
    let bodies: Vec<(QueryFormat, String)> = vec![
        (
            QueryFormat::DataframeSplit,
            json!({"dataframe_split": {"columns": columns, "data": rows, "index": [7, 8]}})
                .to_string(),
        ),
        (QueryFormat::DataframeRecords, records_text(&rows, &columns)),
        (
            QueryFormat::Instances,
            json!({ "instances": rows }).to_string(),
        ),
        (QueryFormat::Inputs, json!({ "inputs": rows }).to_string()),
        (
            QueryFormat::Inputs,
            json!({"inputs": {"images": rows}}).to_string(),
        ),
        (
            QueryFormat::Instances,
            json!({"instances": [{"images": rows[0]}, {"images": rows[1]}]}).to_string(),
        ),
    ];
    let expected: Vec<f32> = rows
        .iter()
        .flatten()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    for (format, body) in bodies {
        let (parsed, request) = parse_query(body.as_bytes(), Some(&signature)).unwrap();
        assert_eq!(parsed, format, "{body}");
        assert_eq!(request.inputs.len(), 1, "{body}");
        let t = &request.inputs[0];
        assert_eq!(t.name, "images");
        assert_eq!(t.shape, [2, 64]);
        assert_eq!(t.element_type, ElementType::F32);
        assert_eq!(f32s(t), expected, "{body}");
        assert_eq!(request.parameters, None);
        assert_eq!(request.raw_body, None);
    }
}

#[test]
fn records_keep_the_column_order_they_were_sent_in() {
    // Sorted, `pixel_10` would come before `pixel_2`.
    let rows = pixel_rows();
    let columns = pixel_columns();
    let request = parse_query(
        records_text(&rows, &columns).as_bytes(),
        Some(&digits_sig()),
    )
    .unwrap()
    .1;
    assert_eq!(f32s(&request.inputs[0])[10], 10.5);
    // A later record may list its keys in another order.
    let body = br#"{"dataframe_records": [{"b": 1, "a": 2}, {"a": 4, "b": 3}]}"#;
    let request = parse_query(body, None).unwrap().1;
    assert_eq!(request.inputs[0].name, "input");
    assert_eq!(request.inputs[0].shape, [2, 2]);
    assert_eq!(i64s(&request.inputs[0]), [1, 2, 3, 4]);
}

#[test]
fn columns_named_in_the_signature_become_one_tensor_each() {
    let signature = sig(vec![
        tensor_sig("age", "INT32", &[-1]),
        tensor_sig("income", "FP64", &[-1, 1]),
        tensor_sig("city", "BYTES", &[-1]),
    ]);
    let split = json!({"dataframe_split": {
        "columns": ["city", "age", "income"],
        "data": [["Paris", 31, 1000.5], ["Oslo", 40, 2000]]
    }});
    let records = json!({"dataframe_records": [
        {"city": "Paris", "age": 31, "income": 1000.5},
        {"city": "Oslo", "age": 40, "income": 2000}
    ]});
    let instances = json!({"instances": [
        {"city": "Paris", "age": 31, "income": 1000.5},
        {"city": "Oslo", "age": 40, "income": 2000}
    ]});
    let inputs = json!({"inputs": {
        "city": ["Paris", "Oslo"], "age": [31, 40], "income": [[1000.5], [2000]]
    }});
    let first = parse(&split, Some(&signature)).unwrap();
    for body in [&records, &instances, &inputs] {
        assert_eq!(parse(body, Some(&signature)).unwrap(), first, "{body}");
    }
    let names: Vec<&str> = first.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["age", "income", "city"], "signature order");
    let age = &first.inputs[0];
    assert_eq!(
        (age.element_type, age.shape.as_slice()),
        (ElementType::I32, &[2][..])
    );
    assert_eq!(age.data, [31, 0, 0, 0, 40, 0, 0, 0]);
    let income = &first.inputs[1];
    assert_eq!(income.shape, [2, 1]);
    assert_eq!(income.element_type, ElementType::F64);
    assert_eq!(&income.data[..8], &1000.5f64.to_le_bytes());
    let city = &first.inputs[2];
    assert_eq!(city.element_type, ElementType::Bytes);
    assert_eq!(city.data, b"\x05\0\0\0Paris\x04\0\0\0Oslo");
}

#[test]
fn types_and_mapping_are_inferred_without_a_signature() {
    // Tensors come in the order the body names them.
    let body = br#"{"inputs": {"flag": [true, false], "n": [[1, 2]], "x": 1.5, "s": ["a"]}}"#;
    let request = parse_query(body, None).unwrap().1;
    assert_eq!(
        kinds(&request),
        [
            ("flag", ElementType::Bool, &[2][..]),
            ("n", ElementType::I64, &[1, 2][..]),
            ("x", ElementType::F32, &[][..]),
            ("s", ElementType::Bytes, &[1][..]),
        ]
    );
    // Any fraction makes the whole tensor FP32.
    let request = parse(&json!({"instances": [1, 2.5, 3]}), None).unwrap();
    assert_eq!(request.inputs[0].name, "input");
    assert_eq!(f32s(&request.inputs[0]), [1.0, 2.5, 3.0]);

    // Same type in every column: one [n, columns] tensor.
    let request = parse(
        &json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4], [5, 6]]}}),
        None,
    )
    .unwrap();
    assert_eq!(request.inputs.len(), 1);
    assert_eq!(request.inputs[0].name, "input");
    assert_eq!(request.inputs[0].shape, [3, 2]);
    assert_eq!(i64s(&request.inputs[0]), [1, 2, 3, 4, 5, 6]);

    // Different types: one tensor per column, in column order.
    let request = parse(
        &json!({"dataframe_records": [{"name": "a", "score": 0.5}, {"name": "b", "score": 1}]}),
        None,
    )
    .unwrap();
    assert_eq!(
        kinds(&request),
        [
            ("name", ElementType::Bytes, &[2][..]),
            ("score", ElementType::F32, &[2][..]),
        ]
    );

    // Cells holding arrays: one tensor per column, stacked.
    let request = parse(
        &json!({"dataframe_split": {"columns": ["v"], "data": [[[1, 2]], [[3, 4]]]}}),
        None,
    )
    .unwrap();
    assert_eq!(request.inputs[0].name, "v");
    assert_eq!(request.inputs[0].shape, [2, 2]);
    assert_eq!(i64s(&request.inputs[0]), [1, 2, 3, 4]);
}

#[test]
fn params_become_compact_json_text_in_order() {
    let body = br#"{ "params" : { "temperature": 0.5, "max_tokens": 10, "stop": ["x"] },
                    "inputs": {"prompt": "hi"} }"#;
    let (format, request) = parse_query(body, None).unwrap();
    assert_eq!(format, QueryFormat::Inputs);
    assert_eq!(
        request.parameters.as_deref(),
        Some(r#"{"temperature":0.5,"max_tokens":10,"stop":["x"]}"#)
    );
    assert_eq!(request.inputs[0].shape, Vec::<u64>::new());
    let request = parse(&json!({"inputs": [1], "params": null}), None).unwrap();
    assert_eq!(request.parameters, None);
    let e = err(&json!({"inputs": [1], "params": [1]}), None);
    assert_eq!(e, "`params`: expected a JSON object, got an array");
}

#[test]
fn exactly_one_format_is_required() {
    let e = err(&json!({"inputs": [1], "instances": [1]}), None);
    assert!(e.contains("found `inputs` and `instances`"), "{e}");
    let e = err(&json!({"params": {}}), None);
    assert!(
        e.contains(
            "expected exactly one of `dataframe_split`, `dataframe_records`, `instances` or `inputs`, found none"
        ),
        "{e}"
    );
    let e = err(&json!({"inputs": [1], "extra": 1}), None);
    assert!(e.starts_with("`extra`: unknown field"), "{e}");
    let e = err(&json!([1, 2]), None);
    assert!(e.contains("expected a JSON object"), "{e}");
    let e = parse_query(b"{\"inputs\": [1], \"inputs\": [2]}", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("duplicate key `inputs`"), "{e}");
    let e = parse_query(b"{\"inputs\": [1,", None).unwrap_err();
    assert!(matches!(e, CodecError::Json(_)), "{e}");
    let e = err(
        &json!({"dataframe_split": {"columns": ["a"], "data": [[1]], "orient": "split"}}),
        None,
    );
    assert!(
        e.starts_with("`dataframe_split.orient`: unknown field"),
        "{e}"
    );
}

#[test]
fn a_column_named_like_the_single_input_is_that_input() {
    for shape in [[-1, 1], [-1, -1]] {
        let signature = sig(vec![tensor_sig("x", "FP64", &shape)]);
        for body in [
            json!({"dataframe_split": {"columns": ["x"], "data": [[1], [2.5]]}}),
            json!({"dataframe_records": [{"x": 1}, {"x": 2.5}]}),
            json!({"instances": [{"x": 1}, {"x": 2.5}]}),
        ] {
            let t = &parse(&body, Some(&signature)).unwrap().inputs[0];
            assert_eq!(t.name, "x");
            assert_eq!(t.shape, [2, 1], "{body}");
            assert_eq!(t.element_type, ElementType::F64);
        }
    }
    // A column holding vectors fills a rank-2 input of the same name.
    let signature = sig(vec![tensor_sig("v", "INT32", &[-1, 3])]);
    let body = json!({"dataframe_records": [{"v": [1, 2, 3]}, {"v": [4, 5, 6]}]});
    let t = &parse(&body, Some(&signature)).unwrap().inputs[0];
    assert_eq!((t.shape.as_slice(), t.data.len()), (&[2, 3][..], 24));
    let body = json!({"dataframe_records": [{"v": [1, 2, 3]}, {"v": [4, 5]}]});
    assert_eq!(
        err(&body, Some(&signature)),
        "`dataframe_records[1].v`: ragged array: expected 3 elements, got 2"
    );
}

#[test]
fn duplicate_keys_are_rejected_in_large_objects_too() {
    let mut cells: Vec<String> = (0..40).map(|c| format!("\"c{c}\": {c}")).collect();
    let ok = format!("{{\"dataframe_records\": [{{{}}}]}}", cells.join(","));
    assert_eq!(
        parse_query(ok.as_bytes(), None).unwrap().1.inputs[0].shape,
        [1, 40]
    );
    cells.push("\"c7\": 0".to_owned());
    let dup = format!("{{\"dataframe_records\": [{{{}}}]}}", cells.join(","));
    let e = parse_query(dup.as_bytes(), None).unwrap_err().to_string();
    assert!(e.contains("duplicate key `c7`"), "{e}");
}

#[test]
fn wide_tables_are_checked_for_duplicate_columns_in_linear_time() {
    // 100,000 columns: a pairwise check would make ~5 * 10^9 comparisons.
    let mut columns: Vec<String> = (0..100_000).map(|c| format!("c{c}")).collect();
    let body = |columns: &[String]| {
        let row: Vec<u32> = (0..columns.len() as u32).collect();
        json!({"dataframe_split": {"columns": columns, "data": [row]}}).to_string()
    };
    let (_, request) = parse_query(body(&columns).as_bytes(), None).unwrap();
    assert_eq!(request.inputs[0].shape, [1, 100_000]);
    columns.push("c99999".into());
    let e = parse_query(body(&columns).as_bytes(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("column `c99999` appears twice"), "{e}");
    assert!(e.contains("columns[100000]"), "{e}");
    // A handler's answer with as many outputs encodes, and a repeated one is caught.
    let mut outputs: Vec<Tensor> = (0..100_000)
        .map(|i| output(&format!("o{i}"), ElementType::Bool, &[1], vec![1]))
        .collect();
    assert!(predictions(&response(outputs.clone())).is_ok());
    outputs.push(outputs[0].clone());
    let e = predictions(&response(outputs)).unwrap_err().to_string();
    assert!(e.contains("more than once"), "{e}");
}

#[test]
fn ragged_arrays_name_the_field() {
    let e = err(&json!({"inputs": {"x": [[1, 2], [3]]}}), None);
    assert_eq!(e, "`inputs.x[1]`: ragged array: expected 2 elements, got 1");
    let e = err(&json!({"inputs": [[1, 2], 3]}), None);
    assert_eq!(
        e,
        "`inputs[1]`: ragged array: expected an array of 2 elements, got 3"
    );
    let e = err(&json!({"instances": [[1], [[2]]]}), None);
    assert_eq!(
        e,
        "`instances[1][0]`: ragged array: expected a single value here, got an array of 1"
    );
    let e = err(
        &json!({"instances": [{"a": [1, 2]}, {"a": [1, 2, 3]}]}),
        None,
    );
    assert_eq!(
        e,
        "`instances[1].a`: ragged array: expected 2 elements, got 3"
    );
    let e = err(
        &json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}),
        None,
    );
    assert_eq!(
        e,
        "`dataframe_split.data[1]`: expected 2 values (one per column), got 1"
    );
}

#[test]
fn wrong_types_name_the_exact_field() {
    let mut rows = pixel_rows();
    rows[1][1] = json!("x");
    let body = json!({"dataframe_split": {"columns": pixel_columns(), "data": rows}});
    assert_eq!(
        err(&body, Some(&digits_sig())),
        r#"`dataframe_split.data[1][1]`: expected a number, got "x""#
    );
    let body = records_text(&rows, &pixel_columns());
    let e = parse_query(body.as_bytes(), Some(&digits_sig()))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"`dataframe_records[1].pixel_1`: expected a number, got "x""#
    );
    let e = err(&json!({"inputs": {"images": rows}}), Some(&digits_sig()));
    assert_eq!(e, r#"`inputs.images[1][1]`: expected a number, got "x""#);
    let e = err(&json!({"instances": rows}), Some(&digits_sig()));
    assert_eq!(e, r#"`instances[1][1]`: expected a number, got "x""#);

    // Without a signature, mixing kinds is the error.
    let e = err(&json!({"inputs": {"x": [[1, 2], [3, "4"]]}}), None);
    assert_eq!(
        e,
        r#"`inputs.x[1][1]`: expected a number, got "4" (the elements of one tensor share a type)"#
    );
    let e = err(&json!({"instances": [{"a": [1, null]}]}), None);
    assert_eq!(
        e,
        "`instances[0].a[1]`: expected a number, a string or true or false, got null"
    );
    // Declared integers are range-checked.
    let signature = sig(vec![tensor_sig("x", "UINT8", &[-1])]);
    let e = err(&json!({"inputs": [1, 256]}), Some(&signature));
    assert_eq!(e, "`inputs[1]`: 256 is out of range for UINT8");
}

#[test]
fn records_must_share_their_keys() {
    let e = err(
        &json!({"dataframe_records": [{"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 3}]}),
        None,
    );
    assert_eq!(
        e,
        "`dataframe_records[2]`: missing key `b`, which dataframe_records[0] has"
    );
    let e = err(
        &json!({"dataframe_records": [{"a": 1}, {"a": 1, "c": 2}]}),
        None,
    );
    assert_eq!(
        e,
        "`dataframe_records[1]`: unexpected key `c`: dataframe_records[0] has no such column"
    );
    let e = err(&json!({"dataframe_records": [{"a": 1}, 5]}), None);
    assert_eq!(
        e,
        "`dataframe_records[1]`: expected an object like dataframe_records[0], got 5"
    );
    let e = err(&json!({"instances": [{"a": 1}, {"b": 1}]}), None);
    assert!(e.starts_with("`instances[1]`: "), "{e}");
    let e = err(&json!({ "dataframe_records": [] }), None);
    assert!(e.contains("at least one record"), "{e}");
}

#[test]
fn tensors_are_checked_against_the_signature() {
    let mut rows = pixel_rows();
    rows.iter_mut().for_each(|r| {
        r.pop();
    });
    let body = json!({"dataframe_split": {"columns": &pixel_columns()[..63], "data": rows}});
    assert_eq!(
        err(&body, Some(&digits_sig())),
        "input `images`: expected shape [-1, 64], got [2, 63]"
    );
    let e = err(&json!({"inputs": {"pixels": [[1.0]]}}), Some(&digits_sig()));
    assert_eq!(
        e,
        "input `pixels`: not an input of this model; expected `images`"
    );
    let two = sig(vec![
        tensor_sig("a", "INT64", &[-1]),
        tensor_sig("b", "INT64", &[-1]),
    ]);
    let e = err(
        &json!({"dataframe_split": {"columns": ["a"], "data": [[1]]}}),
        Some(&two),
    );
    assert_eq!(e, "input `b`: missing; the model expects `a`, `b`");
    let e = err(&json!({"inputs": [1, 2]}), Some(&two));
    assert!(
        e.starts_with("`inputs`: the model has several inputs (`a`, `b`)"),
        "{e}"
    );
    // A declared FP32 input takes integers, a declared INT64 input refuses fractions.
    let e = err(&json!({"inputs": {"a": [1.5], "b": [1]}}), Some(&two));
    assert_eq!(e, "`inputs.a[0]`: expected an integer, got 1.5");
}

#[test]
fn predictions_of_one_output() {
    let label = output(
        "label",
        ElementType::I64,
        &[3],
        [7i64, 1, 0].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    assert_eq!(
        predictions(&response(vec![label])).unwrap(),
        json!({"predictions": [7, 1, 0]})
    );
    let m = output(
        "m",
        ElementType::F32,
        &[2, 2],
        [1.0f32, 2.0, f32::NAN, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    );
    assert_eq!(
        predictions(&response(vec![m])).unwrap(),
        json!({"predictions": [[1.0, 2.0], [null, 4.0]]})
    );
    let scalar = output("s", ElementType::Bool, &[], vec![1]);
    assert_eq!(
        predictions(&response(vec![scalar])).unwrap(),
        json!({"predictions": true})
    );
    let empty = output("e", ElementType::F32, &[2, 0], Vec::new());
    assert_eq!(
        predictions(&response(vec![empty])).unwrap(),
        json!({"predictions": [[], []]})
    );
}

#[test]
fn predictions_of_outputs_sharing_rows_are_records() {
    let label = output(
        "label",
        ElementType::I64,
        &[2],
        [3i64, 8].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let probabilities: Vec<f32> = (0..20).map(|i| i as f32 / 32.0).collect();
    let probs = output(
        "probabilities",
        ElementType::F32,
        &[2, 10],
        probabilities.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let body = predictions(&response(vec![label, probs])).unwrap();
    let row = |r: usize| -> Vec<f64> {
        probabilities[r * 10..r * 10 + 10]
            .iter()
            .map(|&v| f64::from(v))
            .collect()
    };
    assert_eq!(
        body,
        json!({"predictions": [
            {"label": 3, "probabilities": row(0)},
            {"label": 8, "probabilities": row(1)},
        ]})
    );
}

#[test]
fn predictions_of_unrelated_outputs_are_an_object() {
    let label = output(
        "label",
        ElementType::I64,
        &[2],
        [3i64, 8].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let version = output(
        "version",
        ElementType::Bytes,
        &[1],
        b"\x02\0\0\0v1".to_vec(),
    );
    let body = predictions(&response(vec![label, version])).unwrap();
    assert_eq!(
        body,
        json!({"predictions": {"label": [3, 8], "version": ["v1"]}})
    );
    let scalar = output("t", ElementType::F64, &[], 0.25f64.to_le_bytes().to_vec());
    let label = output("label", ElementType::I64, &[1], 3i64.to_le_bytes().to_vec());
    let body = predictions(&response(vec![scalar, label])).unwrap();
    assert_eq!(body, json!({"predictions": {"t": 0.25, "label": [3]}}));
    assert_eq!(
        predictions(&response(Vec::new())).unwrap(),
        json!({"predictions": {}})
    );
}

#[test]
fn predictions_reject_outputs_that_do_not_fit() {
    let short = output("p", ElementType::F32, &[2, 2], vec![0; 12]);
    let e = predictions(&response(vec![short])).unwrap_err().to_string();
    assert_eq!(
        e,
        "`outputs.p`: handler returned 3 elements for shape [2, 2], which needs 4"
    );
    let odd = output("p", ElementType::F32, &[1], vec![0; 5]);
    let e = predictions(&response(vec![odd])).unwrap_err().to_string();
    assert!(e.contains("does not fit its element type"), "{e}");
    let bad_bytes = output("s", ElementType::Bytes, &[1], b"\x09\0\0\0ab".to_vec());
    assert!(predictions(&response(vec![bad_bytes])).is_err());
    let huge = output("e", ElementType::F32, &[u64::MAX, 0], Vec::new());
    let e = predictions(&response(vec![huge])).unwrap_err().to_string();
    assert!(e.contains("too large"), "{e}");
    let overflow = output("e", ElementType::F32, &[u64::MAX, 3], Vec::new());
    assert!(predictions(&response(vec![overflow])).is_err());
    let deep = output("d", ElementType::F32, &[1; 100], vec![0; 4]);
    assert!(predictions(&response(vec![deep])).is_err());
    let twice = vec![
        output("a", ElementType::Bool, &[1], vec![1]),
        output("a", ElementType::Bool, &[1], vec![0]),
    ];
    let e = predictions(&response(twice)).unwrap_err().to_string();
    assert!(e.contains("more than once"), "{e}");
}

#[test]
fn bytes_round_trip() {
    let signature = sig(vec![tensor_sig("text", "BYTES", &[-1])]);
    for body in [
        json!({"inputs": {"text": ["héllo", "", "wörld"]}}),
        json!({"instances": ["héllo", "", "wörld"]}),
        json!({"dataframe_split": {"columns": ["text"], "data": [["héllo"], [""], ["wörld"]]}}),
        json!({"dataframe_records": [{"text": "héllo"}, {"text": ""}, {"text": "wörld"}]}),
    ] {
        let request = parse(&body, Some(&signature)).unwrap();
        let t = &request.inputs[0];
        assert_eq!(
            (t.name.as_str(), t.shape.as_slice()),
            ("text", &[3][..]),
            "{body}"
        );
        assert_eq!(t.element_type, ElementType::Bytes);
        let answer = predictions(&response(vec![t.clone()])).unwrap();
        assert_eq!(
            answer,
            json!({"predictions": ["héllo", "", "wörld"]}),
            "{body}"
        );
    }
}

#[test]
fn declared_fp64_arrives_exactly_as_sent() {
    // serde_json's default float parser reads each of these one ulp off; a column or tensor
    // declared FP64 must arrive unchanged (the same numbers as the V2 codec's test).
    let sent = [
        "0.17004902735071079",
        "3816.7244344497485",
        "103795.96131000601",
        "-230.76437453339406",
    ];
    let want: Vec<f64> = sent.iter().map(|t| t.parse().unwrap()).collect();
    assert_ne!(serde_json::from_str::<f64>(sent[0]).unwrap(), want[0]);
    let f64s = |t: &Tensor| -> Vec<f64> {
        t.data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let parse_text = |text: String, signature: &Signature| {
        let (_, request) = parse_query(text.as_bytes(), Some(signature)).unwrap();
        request
    };
    let (a, b, c, d) = (sent[0], sent[1], sent[2], sent[3]);

    // A column declared FP64 next to an INT32 one, every cell a number.
    let columns = sig(vec![
        tensor_sig("x", "FP64", &[-1]),
        tensor_sig("n", "INT32", &[-1]),
    ]);
    let split = format!(
        r#"{{"dataframe_split":{{"columns":["n","x"],"data":[[1,{a}],[2, {b}],[3,{c}],[4,{d}]]}}}}"#
    );
    let request = parse_text(split, &columns);
    let x = request.inputs.iter().find(|t| t.name == "x").unwrap();
    assert_eq!(f64s(x), want, "dataframe_split, per column");

    // The whole table as one FP64 tensor.
    let table = sig(vec![tensor_sig("t", "FP64", &[-1, 2])]);
    let split =
        format!(r#"{{"dataframe_split":{{"columns":["p","q"],"data":[[{a},{b}],[{c},{d}]]}}}}"#);
    assert_eq!(
        f64s(&parse_text(split, &table).inputs[0]),
        want,
        "dataframe_split, whole"
    );

    // `inputs` and `instances` of a declared FP64 tensor.
    for key in ["inputs", "instances"] {
        let body = format!(r#"{{"{key}":[[{a},{b}],[{c},{d}]]}}"#);
        assert_eq!(f64s(&parse_text(body, &table).inputs[0]), want, "{key}");
    }
}

#[test]
fn named_inputs_are_read_in_one_pass_with_errors_naming_the_input() {
    let body = br#"{"inputs": {"a": [[1.5, 2]], "b": [0.25, 1e-3], "c": ["x"]}}"#;
    let (_, request) = parse_query(body, None).unwrap();
    assert_eq!(
        kinds(&request),
        [
            ("a", ElementType::F32, &[1u64, 2][..]),
            ("b", ElementType::F32, &[2][..]),
            ("c", ElementType::Bytes, &[1][..])
        ]
    );
    assert_eq!(f32s(&request.inputs[0]), [1.5, 2.0]);
    assert_eq!(f32s(&request.inputs[1]), [0.25, 0.001]);

    let error = |body: &[u8], signature: Option<&Signature>| {
        parse_query(body, signature).unwrap_err().to_string()
    };
    let e = error(br#"{"inputs": {"a": [1.0], "b": [2.0], "a": [3.0]}}"#, None);
    assert!(e.contains("duplicate key `a`"), "{e}");
    let e = error(br#"{"inputs": {"a": [1.0], "b": [1.0, "two"]}}"#, None);
    assert!(e.starts_with("`inputs.b[1]`: expected a number"), "{e}");
    let e = error(br#"{"inputs": {"a": [[1.0, 2.0], [3.0]]}}"#, None);
    assert!(e.starts_with("`inputs.a[1]`: ragged array"), "{e}");
    let e = error(br#"{"inputs": {}}"#, None);
    assert!(e.contains("got an empty object"), "{e}");
    // Declared types: FP16 written as it is read, FP64 exactly, next to each other.
    let declared = sig(vec![
        tensor_sig("h", "FP16", &[-1]),
        tensor_sig("d", "FP64", &[-1]),
    ]);
    let body = br#"{"inputs": {"h": [0.5, 2.0], "d": [0.17004902735071079]}}"#;
    let (_, request) = parse_query(body, Some(&declared)).unwrap();
    assert_eq!(request.inputs[0].data, [0, 0x38, 0, 0x40]);
    assert_eq!(request.inputs[1].data, 0.17004902735071079f64.to_le_bytes());
    let e = error(br#"{"inputs": {"h": [0.5, true]}}"#, Some(&declared));
    assert!(e.starts_with("`inputs.h[1]`"), "{e}");
}
