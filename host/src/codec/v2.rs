//! KServe Open Inference Protocol V2: inference requests in, responses out, in JSON or
//! with the binary tensor data extension (`codec::binary`).
//!
//! Tensor data is never held as a JSON tree: a request's `data` stays borrowed raw text
//! until its datatype and shape are known and is then parsed straight into the tensor's
//! bytes (`codec::stream`); binary data is checked and copied once into the tensor; a
//! response serializes each JSON output straight from the handler's bytes
//! (`codec::view`) and moves each binary output's bytes into the body as they are.

use super::binary::{self, BinarySection};
use super::elements::element_count;
use super::stream::parse_elements;
use super::view::Flat;
use super::{element_type_from_v2, v2_datatype, CodecError};
use crate::runtime::{Request, Response, Tensor};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

mod request;
pub use request::{
    parse_infer_request, InferInput, InferRequest, InputData, ParseError, RequestedOutput,
};

/// The request parameter that asks for every output in binary form.
const BINARY_DATA_OUTPUT: &str = "binary_data_output";

/// One output the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChoice {
    /// Output name.
    pub name: String,
    /// Its `binary_data` parameter, when given.
    pub binary: Option<bool>,
}

/// What the response needs from the request once its tensors are decoded.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The request's id, echoed.
    pub id: Option<String>,
    /// Requested outputs; all outputs when absent.
    pub outputs: Option<Vec<OutputChoice>>,
    /// The request's `binary_data_output`: outputs without a `binary_data` of their own
    /// come in binary form.
    pub binary_output: bool,
}

impl RequestMeta {
    /// The same choice of outputs, all in JSON (for tools that print the answer).
    pub fn all_json(mut self) -> Self {
        self.binary_output = false;
        for o in self.outputs.iter_mut().flatten() {
            o.binary = None;
        }
        self
    }

    /// Whether output `name` goes in binary form.
    fn binary(&self, name: &str) -> bool {
        self.outputs
            .iter()
            .flatten()
            .find(|o| o.name == name)
            .and_then(|o| o.binary)
            .unwrap_or(self.binary_output)
    }
}

/// `parameters` of an output sent in binary form.
#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
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
    /// Set when the data follows the JSON header in binary form.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    /// Row-major elements, flat; absent for binary outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Flat<'a>>,
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
    /// Indices (into the handler's outputs) of the outputs sent in binary form, in order.
    #[serde(skip)]
    binary: Vec<usize>,
}

/// An encoded answer: the body's chunks in order, and the JSON header's length when
/// binary outputs follow it (the `Inference-Header-Content-Length` to send).
#[derive(Debug)]
pub struct EncodedResponse {
    /// JSON header length, when the body has binary outputs after it.
    pub header_length: Option<usize>,
    /// The JSON header, then each binary output's bytes.
    pub chunks: Vec<Bytes>,
}

/// Parses a V2 request body into the handler's request. `header_length` is the
/// request's `Inference-Header-Content-Length`, when it has one (binary tensor data).
pub fn parse_request(
    body: &[u8],
    header_length: Option<&str>,
) -> Result<(RequestMeta, Request), CodecError> {
    let (json, data) = binary::split_body(body, header_length)?;
    let parsed = parse_infer_request(json).map_err(|e| match e {
        ParseError::Data(error) => error,
        ParseError::Json(e) => {
            let hint =
                if e.to_string().starts_with("trailing characters") && header_length.is_none() {
                    " (binary tensor data needs the Inference-Header-Content-Length header)"
                } else {
                    ""
                };
            CodecError::Json(format!("{e}{hint}"))
        }
    })?;
    let mut section = BinarySection::new(data);
    let inputs = parsed
        .inputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| tensor_from_v2(t, &format!("inputs[{i}]"), &mut section))
        .collect::<Result<Vec<_>, _>>()?;
    section.finish()?;
    let outputs = parsed
        .outputs
        .map(|outs| {
            outs.into_iter()
                .enumerate()
                .map(|(i, o)| output_choice(o, i))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let mut binary_output = false;
    let parameters = match parsed.parameters {
        Some(mut p) => {
            if let Some(v) = p.remove(BINARY_DATA_OUTPUT) {
                binary_output = v.as_bool().ok_or_else(|| {
                    CodecError::field(
                        format!("parameters.{BINARY_DATA_OUTPUT}"),
                        format!("expected true or false, got {v}"),
                    )
                })?;
                // Only the protocol's own parameter: the handler sees none.
                (!p.is_empty()).then(|| Value::Object(p).to_string())
            } else {
                Some(Value::Object(p).to_string())
            }
        }
        None => None,
    };
    let meta = RequestMeta {
        id: parsed.id,
        outputs,
        binary_output,
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

fn output_choice(o: RequestedOutput, i: usize) -> Result<OutputChoice, CodecError> {
    let mut binary = None;
    for (key, value) in o.parameters.into_iter().flatten() {
        let field = format!("outputs[{i}].parameters.{key}");
        match key.as_str() {
            "binary_data" => {
                binary = Some(value.as_bool().ok_or_else(|| {
                    CodecError::field(&field, format!("expected true or false, got {value}"))
                })?);
            }
            _ => return Err(unsupported_parameter(&field, &key, "binary_data")),
        }
    }
    Ok(OutputChoice {
        name: o.name,
        binary,
    })
}

/// The error for a tensor parameter sandserve does not implement.
fn unsupported_parameter(field: &str, key: &str, supported: &str) -> CodecError {
    let why = if key.starts_with("shared_memory") {
        "sandserve has no shared-memory extension; send the data in the body"
    } else if key == "classification" {
        "sandserve has no classification extension; ask for the output itself"
    } else {
        "unknown parameter"
    };
    CodecError::field(field, format!("{why} (supported: {supported})"))
}

/// Converts one V2 tensor; `field` is its path for error messages. Binary data (when
/// the tensor has `parameters.binary_data_size`) is taken from `section`.
pub fn tensor_from_v2(
    t: InferInput<'_>,
    field: &str,
    section: &mut BinarySection<'_>,
) -> Result<Tensor, CodecError> {
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
    let mut binary_size = None;
    for (key, value) in t.parameters.iter().flatten() {
        let path = format!("{field}.parameters.{key}");
        match key.as_str() {
            "binary_data_size" => binary_size = Some(binary::data_size(value, &path)?),
            _ => return Err(unsupported_parameter(&path, key, "binary_data_size")),
        }
    }
    let data = match (t.data, binary_size) {
        (Some(_), Some(_)) => {
            return Err(CodecError::field(
                field,
                "has both `data` and `parameters.binary_data_size`; send one",
            ))
        }
        (Some(InputData::Parsed(bytes)), None) => bytes,
        (Some(InputData::Raw(raw)), None) => parse_elements(
            raw,
            element_type,
            &t.shape,
            expected,
            &format!("{field}.data"),
        )?,
        (None, Some(size)) => {
            let bytes = section.take(size, &format!("{field}.parameters.binary_data_size"))?;
            binary::tensor_data(element_type, &t.shape, expected, bytes, field)?
        }
        (None, None) => {
            return Err(CodecError::field(
                format!("{field}.data"),
                "missing: send `data`, or binary data with `parameters.binary_data_size`",
            ))
        }
    };
    Ok(Tensor {
        name: t.name,
        shape: t.shape,
        element_type,
        data,
    })
}

/// One handler output tensor as V2 JSON (`binary`: its data goes after the header).
pub fn tensor_to_v2(t: &Tensor, binary: bool) -> Result<OutputTensor<'_>, CodecError> {
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
        parameters: binary.then_some(BinaryParameters {
            binary_data_size: t.data.len(),
        }),
        data: (!binary).then_some(Flat(t)),
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
        .map(|outs| outs.iter().map(|o| o.name.as_str()).collect());
    let wanted = |name: &str| requested.as_ref().is_none_or(|r| r.contains(name));
    let mut outputs = Vec::new();
    let mut binary = Vec::new();
    for (i, t) in response.outputs.iter().enumerate() {
        if !wanted(&t.name) {
            continue;
        }
        let is_binary = request.binary(&t.name);
        if is_binary {
            binary.push(i);
        }
        outputs.push(tensor_to_v2(t, is_binary)?);
    }
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
        binary,
    })
}

/// Encodes the whole answer: the JSON (header), then the binary outputs' bytes, moved
/// out of `response` without a copy.
pub fn encode_response(
    model_name: &str,
    model_version: Option<String>,
    request: &RequestMeta,
    mut response: Response,
) -> Result<EncodedResponse, CodecError> {
    let (json, binary) = {
        let body = build_response(model_name, model_version, request, &response)?;
        let json = serde_json::to_vec(&body)
            .map_err(|e| CodecError::field("outputs", format!("cannot be encoded: {e}")))?;
        (json, body.binary)
    };
    if binary.is_empty() {
        return Ok(EncodedResponse {
            header_length: None,
            chunks: vec![Bytes::from(json)],
        });
    }
    let header_length = Some(json.len());
    let mut chunks = Vec::with_capacity(binary.len() + 1);
    chunks.push(Bytes::from(json));
    for i in binary {
        chunks.push(Bytes::from(std::mem::take(&mut response.outputs[i].data)));
    }
    Ok(EncodedResponse {
        header_length,
        chunks,
    })
}

#[cfg(test)]
mod tests;
