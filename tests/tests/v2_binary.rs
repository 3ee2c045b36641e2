//! KServe V2's binary tensor data extension against the real server, with the `echo`
//! example: every element type round-trips byte for byte (requests and answers), JSON and
//! binary inputs and outputs mix, and hostile framing (sizes that do not add up, a header
//! length past the body, negative or overflowing sizes, wrong element counts) is refused
//! with a 400 that names what is wrong, at a memory cost no higher than the JSON form's.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_tests::packages::example_package;
use sandserve_tests::server::{RawReply, TenantServer, TestServer};
use serde_json::{json, Value};

const INFER: &str = "/v2/models/echo/infer";

fn setup() -> TenantServer {
    let s = TenantServer::start(&[]);
    assert_eq!(s.client.upload("echo", &example_package("echo")).0, 201);
    s
}

/// A body as tritonclient sends it: the JSON header, then each input's bytes; and the
/// `Inference-Header-Content-Length` value.
fn framed(header: &Value, data: &[&[u8]]) -> (Vec<u8>, String) {
    let mut body = serde_json::to_vec(header).unwrap();
    let length = body.len().to_string();
    for d in data {
        body.extend_from_slice(d);
    }
    (body, length)
}

fn post(s: &TenantServer, body: &[u8], length: Option<&str>) -> RawReply {
    let mut headers = vec![("Content-Type", "application/octet-stream")];
    if let Some(length) = length {
        headers.push(("Inference-Header-Content-Length", length));
    }
    s.client.post_raw(INFER, &headers, body)
}

/// Splits a binary answer into its JSON header and each binary output's bytes by name.
fn unframe(reply: &RawReply) -> (Value, Vec<(String, Vec<u8>)>) {
    let length: usize = reply
        .header("inference-header-content-length")
        .expect("a binary answer has Inference-Header-Content-Length")
        .parse()
        .expect("a byte count");
    let header: Value = serde_json::from_slice(&reply.body[..length]).expect("JSON header");
    let mut rest = &reply.body[length..];
    let mut outputs = Vec::new();
    for output in header["outputs"].as_array().unwrap() {
        if let Some(size) = output["parameters"]["binary_data_size"].as_u64() {
            let (data, tail) = rest.split_at(size as usize);
            outputs.push((output["name"].as_str().unwrap().to_string(), data.to_vec()));
            rest = tail;
        }
    }
    assert!(
        rest.is_empty(),
        "{} bytes after the last output",
        rest.len()
    );
    (header, outputs)
}

fn le<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|v| to(*v)).collect()
}

#[test]
fn every_element_type_round_trips_in_binary_form() {
    let s = setup();
    let f32s = le(&[1.5f32, -0.0, f32::MAX, 3.25], f32::to_le_bytes);
    // IEEE halves: 1.0, -2.0, 65504 (the largest), the smallest subnormal.
    let f16s = le(&[0x3c00u16, 0xc000, 0x7bff, 0x0001], u16::to_le_bytes);
    let i64s = le(&[i64::MIN, -1, 0, i64::MAX], i64::to_le_bytes);
    let u16s = le(&[0u16, 65535], u16::to_le_bytes);
    let bools = vec![1u8, 0, 1];
    let strings = b"\x05\0\0\0hello\0\0\0\0\x04\0\0\0\xff\x00\xfe\x01".to_vec();
    let inputs = [
        ("f", "FP32", vec![2, 2], &f32s),
        ("h", "FP16", vec![4], &f16s),
        ("i", "INT64", vec![4, 1], &i64s),
        ("u", "UINT16", vec![2], &u16s),
        ("b", "BOOL", vec![3], &bools),
        ("s", "BYTES", vec![3], &strings),
    ];
    let mut header = json!({"id": "r1", "inputs": [], "parameters": {"binary_data_output": true}});
    for (name, datatype, shape, data) in &inputs {
        header["inputs"].as_array_mut().unwrap().push(json!({
            "name": name, "datatype": datatype, "shape": shape,
            "parameters": {"binary_data_size": data.len()}}));
    }
    // One JSON input among the binary ones takes no bytes of the binary section.
    header["inputs"].as_array_mut().unwrap().insert(
        2,
        json!({"name": "j", "datatype": "INT8", "shape": [2], "data": [-1, 7]}),
    );
    let data: Vec<&[u8]> = inputs.iter().map(|i| i.3.as_slice()).collect();
    let (body, length) = framed(&header, &data);
    let reply = post(&s, &body, Some(&length));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    let (head, outputs) = unframe(&reply);
    assert_eq!(head["id"], "r1");
    assert_eq!(head["model_name"], "echo");
    assert_eq!(head["model_version"], "1");
    assert!(
        head.get("parameters").is_none(),
        "binary_data_output is the protocol's, not the handler's: {head}"
    );
    for (name, datatype, shape, data) in &inputs {
        let out = head["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == *name)
            .unwrap();
        assert_eq!(out["datatype"], *datatype);
        assert_eq!(out["shape"], json!(shape));
        assert!(out.get("data").is_none(), "{out}");
        let got = &outputs.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(got, *data, "output {name} differs from its input");
    }
    let j = &outputs.iter().find(|(n, _)| n == "j").unwrap().1;
    assert_eq!(j, &[0xff, 7]);
    let counts = &outputs
        .iter()
        .find(|(n, _)| n == "element_counts")
        .unwrap()
        .1;
    assert_eq!(
        counts,
        &le(&[4u64, 4, 2, 4, 2, 3, 3], u64::to_le_bytes),
        "echo counted the elements the server decoded"
    );
}

#[test]
fn outputs_choose_binary_or_json_each() {
    let s = setup();
    let f32s = le(&[0.5f32, 2.0], f32::to_le_bytes);
    let header = json!({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                    "parameters": {"binary_data_size": 8}}],
        "outputs": [{"name": "x", "parameters": {"binary_data": false}},
                    {"name": "element_counts", "parameters": {"binary_data": true}}]});
    let (body, length) = framed(&header, &[&f32s]);
    let reply = post(&s, &body, Some(&length));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let (head, outputs) = unframe(&reply);
    assert_eq!(head["outputs"][0]["data"], json!([0.5, 2.0]));
    assert_eq!(
        outputs,
        [("element_counts".to_string(), le(&[2u64], u64::to_le_bytes))]
    );

    // All JSON: no framing header, a plain JSON answer.
    let header = json!({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                    "parameters": {"binary_data_size": 8}}],
        "outputs": [{"name": "x", "parameters": {"binary_data": false}}]});
    let (body, length) = framed(&header, &[&f32s]);
    let reply = post(&s, &body, Some(&length));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("inference-header-content-length"), None);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json()["outputs"],
        json!([{"name": "x", "shape": [2],
                                              "datatype": "FP32", "data": [0.5, 2.0]}])
    );

    // A plain JSON request still gets a plain JSON answer.
    let (status, answer) = s.client.post(
        INFER,
        &json!({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [9]}]}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["data"], json!([9]));
}

#[test]
fn hostile_framing_is_refused_with_a_400_naming_it() {
    let s = setup();
    let x = |params: Value| json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": params}]});
    let eight = [0u8; 8];
    let size = |n: i64| x(json!({ "binary_data_size": n }));
    let (ok_body, ok_length) = framed(&size(8), &[&eight]);
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        {
            let (b, l) = framed(&size(12), &[&eight]);
            (
                "size past the data",
                b,
                Some(l),
                "12 bytes, but only 8 bytes",
            )
        },
        {
            let (b, l) = framed(&x(json!({"binary_data_size": u64::MAX})), &[&eight]);
            (
                "size of 2^64-1",
                b,
                Some(l),
                "only 8 bytes of binary data are left",
            )
        },
        {
            let (b, l) = framed(&size(-8), &[&eight]);
            (
                "negative size",
                b,
                Some(l),
                "`inputs[0].parameters.binary_data_size`: expected a byte count",
            )
        },
        {
            let (b, l) = framed(&size(4), &[&eight[..4]]);
            (
                "too few bytes for the shape",
                b,
                Some(l),
                "shape [2] of FP32 needs 8 bytes, its binary data has 4",
            )
        },
        {
            let (b, l) = framed(&size(8), &[&eight, b"extra"]);
            ("bytes left over", b, Some(l), "add up to 8")
        },
        (
            "header length past the body",
            ok_body.clone(),
            Some((ok_body.len() + 1).to_string()),
            "bytes of JSON header, but the body has only",
        ),
        (
            "negative header length",
            ok_body.clone(),
            Some("-1".into()),
            "not a byte count",
        ),
        (
            "overflowing header length",
            ok_body.clone(),
            Some("99999999999999999999999".into()),
            "not a byte count",
        ),
        (
            "header length cutting the JSON",
            ok_body.clone(),
            Some((ok_length.parse::<usize>().unwrap() - 3).to_string()),
            "malformed request body",
        ),
        (
            "binary data without the header",
            ok_body.clone(),
            None,
            "needs the Inference-Header-Content-Length header",
        ),
        {
            let header = json!({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2],
                                           "parameters": {"binary_data_size": 9}}]});
            let (b, l) = framed(&header, &[b"\x01\0\0\0a\xff\xff\xff\x7f"]);
            ("BYTES length past the end", b, Some(l), "runs past the end")
        },
        {
            let header = json!({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3],
                                           "parameters": {"binary_data_size": 5}}]});
            let (b, l) = framed(&header, &[b"\x01\0\0\0a"]);
            (
                "BYTES count below the shape",
                b,
                Some(l),
                "needs 3 elements, its binary data has 1",
            )
        },
        {
            let header = json!({"inputs": [{"name": "b", "datatype": "BOOL", "shape": [2],
                                           "parameters": {"binary_data_size": 2}}]});
            let (b, l) = framed(&header, &[&[1, 7]]);
            (
                "BOOL byte of 7",
                b,
                Some(l),
                "`inputs[0][1]`: BOOL elements are one byte, 0 or 1",
            )
        },
        {
            let header = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [u64::MAX, 2],
                                           "parameters": {"binary_data_size": 8}}]});
            let (b, l) = framed(&header, &[&eight]);
            ("overflowing shape", b, Some(l), "shape overflows")
        },
        {
            let (b, l) = framed(
                &x(json!({"shared_memory_region": "r", "shared_memory_byte_size": 8})),
                &[],
            );
            (
                "shared memory",
                b,
                Some(l),
                "sandserve has no shared-memory extension",
            )
        },
        {
            let (b, l) = framed(&x(json!({})), &[]);
            ("no data at all", b, Some(l), "`inputs[0].data`: missing")
        },
    ];
    for (what, body, length, expected) in cases {
        let reply = post(&s, &body, length.as_deref());
        let answer = reply.json();
        assert_eq!(reply.status, 400, "{what}: {answer}");
        assert_eq!(answer["error_code"], "INVALID_PARAMETER_VALUE", "{what}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{what}: `{expected}` not in `{message}`"
        );
        assert_eq!(
            answer["error"], answer["message"],
            "{what}: KServe's error field"
        );
    }

    // A compressed body is refused, not misread.
    let reply = s.client.post_raw(
        INFER,
        &[
            ("Content-Encoding", "gzip"),
            ("Inference-Header-Content-Length", &ok_length),
        ],
        &ok_body,
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("`Content-Encoding`"),
        "{}",
        reply.json()
    );

    // The well-formed request still works afterwards.
    let reply = post(&s, &ok_body, Some(&ok_length));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
}

fn peak_rise(server: &TestServer, work: impl FnOnce()) -> u64 {
    server.reset_peak_memory();
    let before = server.memory_kib("VmRSS");
    work();
    server.memory_kib("VmHWM").saturating_sub(before) * 1024
}

#[test]
fn a_binary_request_costs_no_more_than_its_json_form() {
    let s = setup();
    // Warm up: the first query sets up what every later one shares.
    let (body, length) = framed(
        &json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                            "parameters": {"binary_data_size": 4}}]}),
        &[&[0; 4]],
    );
    assert_eq!(post(&s, &body, Some(&length)).status, 200);

    // 8 MiB of floats echoed in binary form, answered in binary form.
    let n = 2 << 20;
    let data = vec![0x3fu8; n * 4];
    let header = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [n],
                                    "parameters": {"binary_data_size": n * 4}}],
                        "parameters": {"binary_data_output": true}});
    let (body, length) = framed(&header, &[&data]);
    let rise = peak_rise(&s.server, || {
        let reply = post(&s, &body, Some(&length));
        assert_eq!(reply.status, 200);
        let (_, outputs) = unframe(&reply);
        assert!(outputs[0].1 == data, "the echoed tensor differs");
    });
    println!(
        "V2 binary echo of {} MiB: server peak rose {} MiB ({:.1}x the body)",
        body.len() >> 20,
        rise >> 20,
        rise as f64 / body.len() as f64
    );
    // The body, its tensor, the guest's copy in and out, the answer: the JSON path is
    // allowed 8 times its (larger) body.
    assert!(
        rise < 8 * body.len() as u64,
        "a {} MiB binary request raised the server's peak memory by {} MiB",
        body.len() >> 20,
        rise >> 20
    );

    // A lying shape over 48 MiB of data is refused before anything is allocated for it.
    let big = vec![0u8; 48 << 20];
    let header = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [(12 << 20) + 1],
                                    "parameters": {"binary_data_size": big.len()}}]});
    let (body, length) = framed(&header, &[&big]);
    let rise = peak_rise(&s.server, || {
        let reply = post(&s, &body, Some(&length));
        assert_eq!(reply.status, 400);
        assert!(reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("needs 50331652 bytes"));
    });
    println!(
        "V2 binary wrong-shape body of {} MiB: server peak rose {} MiB",
        body.len() >> 20,
        rise >> 20
    );
    assert!(
        rise < 3 * body.len() as u64,
        "a refused {} MiB binary request raised the server's peak memory by {} MiB",
        body.len() >> 20,
        rise >> 20
    );
}
