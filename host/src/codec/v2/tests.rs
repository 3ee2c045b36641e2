//! Tests of the V2 codec: JSON and binary requests, JSON and binary answers.

use super::*;
use crate::runtime::ElementType;

#[test]
fn parses_nested_data_and_names_bad_fields() {
    let body =
        br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#;
    let (_, request) = parse_request(body, None).unwrap();
    assert_eq!(request.inputs[0].element_type, ElementType::I32);
    assert_eq!(request.inputs[0].data.len(), 16);

    let bad = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,"a",3]}]}"#;
    let err = parse_request(bad, None).unwrap_err().to_string();
    assert!(err.contains("inputs[0].data[1]"), "{err}");

    let short = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1]}]}"#;
    let err = parse_request(short, None).unwrap_err().to_string();
    assert!(
        err.contains("inputs[0].data") && err.contains("needs 3"),
        "{err}"
    );
}

#[test]
fn fp64_data_arrives_exactly_as_sent() {
    // serde_json's default float parser reads each of these one ulp off (checked against
    // the standard library's exactly rounded parser); FP64 data must arrive unchanged.
    let sent = [
        "0.17004902735071079",
        "3816.7244344497485",
        "103795.96131000601",
        "-230.76437453339406",
        "7",
        "1e-7",
    ];
    let body = format!(
        r#"{{"inputs":[{{"name":"x","shape":[2,3],"datatype":"FP64","data":[[{}],[ {} ]]}}]}}"#,
        sent[..3].join(","),
        sent[3..].join(" , "),
    );
    let (_, request) = parse_request(body.as_bytes(), None).unwrap();
    let got: Vec<f64> = request.inputs[0]
        .data
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let want: Vec<f64> = sent.iter().map(|t| t.parse().unwrap()).collect();
    assert_eq!(got, want);
    assert_ne!(
        serde_json::from_str::<f64>(sent[0]).unwrap(),
        want[0],
        "the example no longer shows the default parser's rounding"
    );
}

#[test]
fn bytes_round_trip_as_strings() {
    let text = r#"{"name":"s","shape":[2],"datatype":"BYTES","data":["héllo",""]}"#;
    let t: InferInput<'_> = serde_json::from_str(text).unwrap();
    let tensor = tensor_from_v2(t, "inputs[0]", &mut BinarySection::new(&[])).unwrap();
    let back = serde_json::to_string(&tensor_to_v2(&tensor, false).unwrap()).unwrap();
    assert_eq!(back, text);
}

#[test]
fn responses_serialize_from_the_output_bytes() {
    let (meta, request) = parse_request(
        br#"{"id":"7","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[-0.0,4]]}],"outputs":[{"name":"x"}]}"#,
        None,
    )
    .unwrap();
    let mut nan = request.inputs[0].clone();
    nan.name = "nan".into();
    nan.data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let response = Response {
        outputs: vec![request.inputs[0].clone(), nan],
        parameters: Some(r#"{"p":1}"#.into()),
    };
    let body = build_response("m", Some("3".into()), &meta, &response).unwrap();
    assert_eq!(
        serde_json::to_value(&body).unwrap(),
        serde_json::json!({"model_name": "m", "model_version": "3", "id": "7",
            "parameters": {"p": 1},
            "outputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                         "data": [1.0, 2.5, -0.0, 4.0]}]})
    );
    let all = RequestMeta::default();
    let body = serde_json::to_value(build_response("m", None, &all, &response).unwrap());
    assert_eq!(body.unwrap()["outputs"][1]["data"][0], Value::Null);
    let odd = Response {
        outputs: vec![Tensor {
            data: vec![0; 3],
            ..request.inputs[0].clone()
        }],
        parameters: None,
    };
    let e = build_response("m", None, &all, &odd).err().unwrap();
    assert!(e.to_string().contains("does not fit"), "{e}");
}

/// A body as tritonclient sends it: JSON header, then each input's bytes.
fn binary_body(json: &serde_json::Value, data: &[&[u8]]) -> (Vec<u8>, String) {
    let mut body = serde_json::to_vec(json).unwrap();
    let length = body.len().to_string();
    for d in data {
        body.extend_from_slice(d);
    }
    (body, length)
}

#[test]
fn binary_inputs_take_their_bytes_in_order() {
    let floats: Vec<u8> = [1.0f32, -2.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let strings = b"\x02\0\0\0hi\x01\0\0\0!";
    let (body, length) = binary_body(
        &serde_json::json!({"inputs": [
            {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "j", "shape": [2], "datatype": "INT8", "data": [1, -1]},
            {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}],
          "parameters": {"binary_data_output": true}}),
        &[&floats, strings],
    );
    let (meta, request) = parse_request(&body, Some(&length)).unwrap();
    assert_eq!(request.inputs[0].data, floats);
    assert_eq!(request.inputs[1].data, [1, 0xff]);
    assert_eq!(request.inputs[2].data, strings);
    assert!(meta.binary_output);
    assert_eq!(
        request.parameters, None,
        "binary_data_output is the codec's"
    );
}

#[test]
fn hostile_binary_requests_name_what_is_wrong() {
    let x = |params: serde_json::Value| {
        serde_json::json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                       "parameters": params}]})
    };
    let eight = [0u8; 8];
    let cases: Vec<(Vec<u8>, Option<String>, &str)> = vec![
        {
            let (b, l) = binary_body(&x(serde_json::json!({"binary_data_size": 12})), &[&eight]);
            (b, Some(l), "12 bytes, but only 8")
        },
        {
            let (b, l) = binary_body(&x(serde_json::json!({"binary_data_size": 4})), &[&eight]);
            (b, Some(l), "needs 8 bytes, its binary data has 4")
        },
        {
            let (b, l) = binary_body(
                &x(serde_json::json!({"binary_data_size": 8})),
                &[&eight, b"z"],
            );
            (b, Some(l), "add up to 8")
        },
        {
            let (b, l) = binary_body(&x(serde_json::json!({"binary_data_size": -8})), &[&eight]);
            (
                b,
                Some(l),
                "`inputs[0].parameters.binary_data_size`: expected a byte count",
            )
        },
        {
            let (b, _) = binary_body(&x(serde_json::json!({"binary_data_size": 8})), &[&eight]);
            (b, Some("100000".into()), "100000 bytes of JSON header")
        },
        {
            let (b, _) = binary_body(&x(serde_json::json!({"binary_data_size": 8})), &[&eight]);
            (b, None, "needs the Inference-Header-Content-Length header")
        },
        {
            let (b, l) = binary_body(&x(serde_json::json!({"shared_memory_region": "r"})), &[]);
            (
                b,
                Some(l),
                "`inputs[0].parameters.shared_memory_region`: sandserve has no shared-memory",
            )
        },
        {
            let (b, l) = binary_body(&x(serde_json::json!({})), &[]);
            (b, Some(l), "`inputs[0].data`: missing")
        },
        {
            let mut both = x(serde_json::json!({"binary_data_size": 8}));
            both["inputs"][0]["data"] = serde_json::json!([1, 2]);
            let (b, l) = binary_body(&both, &[&eight]);
            (b, Some(l), "has both `data` and")
        },
        {
            let mut classify = x(serde_json::json!({"binary_data_size": 8}));
            classify["outputs"] =
                serde_json::json!([{"name": "y", "parameters": {"classification": 3}}]);
            let (b, l) = binary_body(&classify, &[&eight]);
            (
                b,
                Some(l),
                "`outputs[0].parameters.classification`: sandserve has no classification",
            )
        },
        {
            let mut flag = x(serde_json::json!({"binary_data_size": 8}));
            flag["parameters"] = serde_json::json!({"binary_data_output": "yes"});
            let (b, l) = binary_body(&flag, &[&eight]);
            (
                b,
                Some(l),
                "`parameters.binary_data_output`: expected true or false",
            )
        },
    ];
    for (body, length, expected) in cases {
        let e = parse_request(&body, length.as_deref())
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "expected `{expected}` in: {e}");
    }
}

#[test]
fn binary_outputs_follow_the_json_header_unchanged() {
    let (meta, request) = parse_request(
        br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP16","data":[1.5,-2]},
                       {"name":"s","shape":[1],"datatype":"BYTES","data":["ab"]}],
            "outputs":[{"name":"x","parameters":{"binary_data":true}},
                       {"name":"s","parameters":{"binary_data":false}}]}"#,
        None,
    )
    .unwrap();
    let half = request.inputs[0].data.clone();
    let response = Response {
        outputs: request.inputs,
        parameters: None,
    };
    let encoded = encode_response("m", None, &meta, response).unwrap();
    let length = encoded.header_length.unwrap();
    assert_eq!(encoded.chunks.len(), 2);
    assert_eq!(encoded.chunks[0].len(), length);
    let header: Value = serde_json::from_slice(&encoded.chunks[0]).unwrap();
    assert_eq!(
        header["outputs"],
        serde_json::json!([
            {"name": "x", "shape": [2], "datatype": "FP16", "parameters": {"binary_data_size": 4}},
            {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["ab"]}])
    );
    assert_eq!(&encoded.chunks[1][..], &half[..]);

    // Without binary outputs the answer is plain JSON.
    let (meta, request) = parse_request(
        br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[7]}]}"#,
        None,
    )
    .unwrap();
    let response = Response {
        outputs: request.inputs,
        parameters: None,
    };
    let encoded = encode_response("m", None, &meta, response).unwrap();
    assert_eq!(encoded.header_length, None);
    assert_eq!(encoded.chunks.len(), 1);
}
