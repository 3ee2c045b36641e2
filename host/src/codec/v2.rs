//! KServe Open Inference Protocol V2 JSON: inference requests in, responses out.
//!
//! Tensor data is never held as a JSON tree: a request's `data` stays borrowed raw text
//! until its datatype and shape are known and is then parsed straight into the tensor's
//! bytes (`codec::stream`); a response serializes each output straight from the
//! handler's bytes (`codec::view`).

use super::elements::element_count;
use super::stream::parse_elements;
use super::view::Flat;
use super::{element_type_from_v2, v2_datatype, CodecError};
use crate::runtime::{Request, Response, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A V2 inference request body, borrowing its tensors' data from the body text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest<'a> {
    /// Optional request id, echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Input tensors.
    #[serde(borrow)]
    pub inputs: Vec<InferInput<'a>>,
    /// Request parameters.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Requested outputs (names); all outputs when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
}

/// A V2 input tensor in JSON form; `data` is the unparsed JSON text of its elements.
#[derive(Debug, Deserialize)]
pub struct InferInput<'a> {
    /// Tensor name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// V2 datatype name (`FP32`, `INT64`, `BYTES`, ...).
    pub datatype: String,
    /// Row-major elements, flat or nested, as sent.
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// Per-tensor parameters.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// What the response needs from the request once its tensors are decoded.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The request's id, echoed.
    pub id: Option<String>,
    /// Requested outputs (names); all outputs when absent.
    pub outputs: Option<Vec<String>>,
}

/// A V2 output tensor, serialized straight from the handler's bytes.
#[derive(Serialize)]
pub struct OutputTensor<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Dimensions.
    pub shape: &'a [u64],
    /// V2 datatype name.
    pub datatype: &'static str,
    /// Row-major elements, flat.
    data: Flat<'a>,
}

/// A V2 inference response body, borrowing the handler's response.
#[derive(Serialize)]
pub struct InferResponse<'a> {
    /// Model name.
    pub model_name: &'a str,
    /// Model version, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's id, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// Response parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Output tensors.
    pub outputs: Vec<OutputTensor<'a>>,
}

/// Parses a V2 request body into the handler's request.
pub fn parse_request(body: &[u8]) -> Result<(RequestMeta, Request), CodecError> {
    let parsed: InferRequest<'_> =
        serde_json::from_slice(body).map_err(|e| CodecError::Json(e.to_string()))?;
    let inputs = parsed
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| tensor_from_v2(t, &format!("inputs[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let parameters = parsed.parameters.map(|p| Value::Object(p).to_string());
    let meta = RequestMeta {
        id: parsed.id,
        outputs: parsed
            .outputs
            .map(|outs| outs.into_iter().map(|o| o.name).collect()),
    };
    Ok((
        meta,
        Request {
            inputs,
            parameters,
            raw_body: None,
        },
    ))
}

/// Converts one V2 JSON tensor; `field` is its path for error messages.
pub fn tensor_from_v2(t: &InferInput<'_>, field: &str) -> Result<Tensor, CodecError> {
    let element_type = element_type_from_v2(&t.datatype).ok_or_else(|| {
        CodecError::field(
            format!("{field}.datatype"),
            format!("unknown datatype `{}`", t.datatype),
        )
    })?;
    let expected = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| CodecError::field(format!("{field}.shape"), "shape overflows"))?;
    let data = parse_elements(
        t.data,
        element_type,
        &t.shape,
        expected,
        &format!("{field}.data"),
    )?;
    Ok(Tensor {
        name: t.name.clone(),
        shape: t.shape.clone(),
        element_type,
        data,
    })
}

/// One handler output tensor as V2 JSON.
pub fn tensor_to_v2(t: &Tensor) -> Result<OutputTensor<'_>, CodecError> {
    if element_count(t.element_type, &t.data).is_none() {
        return Err(CodecError::field(
            format!("outputs.{}", t.name),
            "handler returned data that does not fit its element type",
        ));
    }
    Ok(OutputTensor {
        name: &t.name,
        shape: &t.shape,
        datatype: v2_datatype(t.element_type),
        data: Flat(t),
    })
}

/// Builds the V2 response for `response`, keeping only `requested` outputs when given.
pub fn build_response<'a>(
    model_name: &'a str,
    model_version: Option<String>,
    request: &'a RequestMeta,
    response: &'a Response,
) -> Result<InferResponse<'a>, CodecError> {
    let requested: Option<std::collections::HashSet<&str>> = request
        .outputs
        .as_ref()
        .map(|outs| outs.iter().map(String::as_str).collect());
    let wanted = |name: &str| requested.as_ref().is_none_or(|r| r.contains(name));
    let outputs = response
        .outputs
        .iter()
        .filter(|t| wanted(&t.name))
        .map(tensor_to_v2)
        .collect::<Result<Vec<_>, _>>()?;
    let parameters = response
        .parameters
        .as_deref()
        .and_then(|p| serde_json::from_str::<Map<String, Value>>(p).ok());
    Ok(InferResponse {
        model_name,
        model_version,
        id: request.id.as_deref(),
        parameters,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ElementType;

    #[test]
    fn parses_nested_data_and_names_bad_fields() {
        let body =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#;
        let (_, request) = parse_request(body).unwrap();
        assert_eq!(request.inputs[0].element_type, ElementType::I32);
        assert_eq!(request.inputs[0].data.len(), 16);

        let bad = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,"a",3]}]}"#;
        let err = parse_request(bad).unwrap_err().to_string();
        assert!(err.contains("inputs[0].data[1]"), "{err}");

        let short = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1]}]}"#;
        let err = parse_request(short).unwrap_err().to_string();
        assert!(
            err.contains("inputs[0].data") && err.contains("needs 3"),
            "{err}"
        );
    }

    #[test]
    fn bytes_round_trip_as_strings() {
        let text = r#"{"name":"s","shape":[2],"datatype":"BYTES","data":["héllo",""]}"#;
        let t: InferInput<'_> = serde_json::from_str(text).unwrap();
        let tensor = tensor_from_v2(&t, "inputs[0]").unwrap();
        let back = serde_json::to_string(&tensor_to_v2(&tensor).unwrap()).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn responses_serialize_from_the_output_bytes() {
        let (meta, request) = parse_request(
            br#"{"id":"7","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[-0.0,4]]}],"outputs":[{"name":"x"}]}"#,
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
}
