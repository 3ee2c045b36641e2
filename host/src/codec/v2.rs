//! KServe Open Inference Protocol V2 JSON: inference requests in, responses out.

use super::elements::{decode, encode};
use super::{element_type_from_v2, v2_datatype, CodecError};
use crate::runtime::{Request, Response, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A V2 inference request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Optional request id, echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Input tensors.
    pub inputs: Vec<InferTensor>,
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

/// A V2 tensor in JSON form.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct InferTensor {
    /// Tensor name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// V2 datatype name (`FP32`, `INT64`, `BYTES`, ...).
    pub datatype: String,
    /// Row-major elements, flat or nested.
    pub data: Value,
    /// Per-tensor parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
}

/// A V2 inference response body.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct InferResponse {
    /// Model name.
    pub model_name: String,
    /// Model version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's id, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Output tensors.
    pub outputs: Vec<InferTensor>,
}

/// Parses a V2 request body into the handler's request.
pub fn parse_request(body: &[u8]) -> Result<(InferRequest, Request), CodecError> {
    let parsed: InferRequest =
        serde_json::from_slice(body).map_err(|e| CodecError::Json(e.to_string()))?;
    let inputs = parsed
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| tensor_from_v2(t, &format!("inputs[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let parameters = parsed
        .parameters
        .as_ref()
        .map(|p| Value::Object(p.clone()).to_string());
    Ok((
        parsed,
        Request {
            inputs,
            parameters,
            raw_body: None,
        },
    ))
}

/// Converts one V2 JSON tensor; `field` is its path for error messages.
pub fn tensor_from_v2(t: &InferTensor, field: &str) -> Result<Tensor, CodecError> {
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
    let mut flat = Vec::new();
    flatten(&t.data, &mut flat);
    if flat.len() as u64 != expected {
        return Err(CodecError::field(
            format!("{field}.data"),
            format!(
                "shape {:?} needs {expected} elements, data has {}",
                t.shape,
                flat.len()
            ),
        ));
    }
    let mut data = Vec::with_capacity(flat.len() * element_type_size_hint(&t.datatype));
    for (i, value) in flat.iter().enumerate() {
        encode(
            element_type,
            value,
            &|| format!("{field}.data[{i}]"),
            &mut data,
        )?;
    }
    Ok(Tensor {
        name: t.name.clone(),
        shape: t.shape.clone(),
        element_type,
        data,
    })
}

/// Converts one handler output tensor to V2 JSON.
pub fn tensor_to_v2(t: &Tensor) -> Result<InferTensor, CodecError> {
    let values = decode(t.element_type, &t.data).ok_or_else(|| {
        CodecError::field(
            format!("outputs.{}", t.name),
            "handler returned data that does not fit its element type",
        )
    })?;
    Ok(InferTensor {
        name: t.name.clone(),
        shape: t.shape.clone(),
        datatype: v2_datatype(t.element_type).to_string(),
        data: Value::Array(values),
        parameters: None,
    })
}

/// Builds the V2 response for `response`, keeping only `requested` outputs when given.
pub fn build_response(
    model_name: &str,
    model_version: Option<String>,
    request: &InferRequest,
    response: &Response,
) -> Result<InferResponse, CodecError> {
    let requested: Option<std::collections::HashSet<&str>> = request
        .outputs
        .as_ref()
        .map(|outs| outs.iter().map(|o| o.name.as_str()).collect());
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
        model_name: model_name.to_string(),
        model_version,
        id: request.id.clone(),
        parameters,
        outputs,
    })
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn element_type_size_hint(datatype: &str) -> usize {
    match datatype {
        "FP64" | "INT64" | "UINT64" => 8,
        "FP32" | "INT32" | "UINT32" => 4,
        "FP16" | "BF16" | "INT16" | "UINT16" => 2,
        _ => 1,
    }
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
        let t = InferTensor {
            name: "s".into(),
            shape: vec![2],
            datatype: "BYTES".into(),
            data: serde_json::json!(["héllo", ""]),
            parameters: None,
        };
        let tensor = tensor_from_v2(&t, "inputs[0]").unwrap();
        assert_eq!(tensor_to_v2(&tensor).unwrap(), t);
    }
}
