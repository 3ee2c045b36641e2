//! A V2 inference request body, read in one pass: each input tensor's `data` is parsed
//! straight into the tensor's bytes as the body is read, when the input's `datatype` and
//! `shape` come before its `data` (as every client we know of sends them). Otherwise, and
//! for FP64 (whose exact second pass needs the text), the data stays borrowed raw JSON
//! and `codec::stream::parse_elements` reads it once those are known.
//!
//! The fields are those of KServe's protocol; an unknown or repeated field is an error,
//! as `#[serde(deny_unknown_fields)]` would make it.

use super::super::stream::{ElementReader, ElementsError};
use super::super::{element_type_from_v2, CodecError};
use crate::runtime::ElementType;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt;

/// A V2 inference request body, borrowing from the body text what it does not parse.
#[derive(Debug)]
pub struct InferRequest<'a> {
    /// Optional request id, echoed in the response.
    pub id: Option<String>,
    /// Input tensors.
    pub inputs: Vec<InferInput<'a>>,
    /// Request parameters.
    pub parameters: Option<Map<String, Value>>,
    /// Requested outputs (names); all outputs when absent.
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Output parameters (`binary_data` only).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// A V2 input tensor; `data` is absent when the data travels in binary form
/// (`parameters.binary_data_size`).
#[derive(Debug)]
pub struct InferInput<'a> {
    /// Tensor name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// V2 datatype name (`FP32`, `INT64`, `BYTES`, ...).
    pub datatype: String,
    /// Row-major elements, flat or nested, as sent: parsed already, or raw.
    pub data: Option<InputData<'a>>,
    /// Per-tensor parameters (`binary_data_size` only).
    pub parameters: Option<Map<String, Value>>,
}

/// An input's `data`.
#[derive(Debug)]
pub enum InputData<'a> {
    /// Read during the pass over the body: exactly the shape's element count, encoded.
    Parsed(Vec<u8>),
    /// The unparsed JSON text of the elements.
    Raw(&'a RawValue),
}

/// Parses a V2 request's JSON. An error in an input's data found during the pass is
/// reported as that data's field error, the rest as malformed JSON.
pub fn parse_infer_request(json: &[u8]) -> Result<InferRequest<'_>, ParseError> {
    let data_error = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(json);
    let seed = RequestSeed {
        text_len: json.len(),
        data_error: &data_error,
    };
    let parsed = seed.deserialize(&mut de).and_then(|r| de.end().map(|()| r));
    match (parsed, data_error.into_inner()) {
        (Ok(request), _) => Ok(request),
        (Err(_), Some(data)) => Err(ParseError::Data(data)),
        (Err(json), None) => Err(ParseError::Json(json)),
    }
}

/// Why a V2 request's JSON could not be read.
#[derive(Debug)]
pub enum ParseError {
    /// An input's data is wrong (a bad element, a count its shape does not give).
    Data(CodecError),
    /// The body is not a V2 request in JSON.
    Json(serde_json::Error),
}

const REQUEST_FIELDS: &[&str] = &["id", "inputs", "parameters", "outputs"];
const INPUT_FIELDS: &[&str] = &["name", "shape", "datatype", "data", "parameters"];

/// What the seeds of one request share: the body's length (a bound on any element count)
/// and the data error that stopped the pass, if one did.
#[derive(Clone, Copy)]
struct RequestSeed<'c> {
    text_len: usize,
    data_error: &'c RefCell<Option<CodecError>>,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = InferRequest<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_struct("InferRequest", REQUEST_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = InferRequest<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a V2 inference request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut id, mut inputs, mut parameters, mut outputs) = (None, None, None, None);
        while let Some(key) = map.next_key_seed(FieldSeed(REQUEST_FIELDS))? {
            match key {
                0 => set_once(&mut id, "id", map.next_value()?)?,
                1 => set_once(
                    &mut inputs,
                    "inputs",
                    map.next_value_seed(InputsSeed(self))?,
                )?,
                2 => set_once(&mut parameters, "parameters", map.next_value()?)?,
                _ => set_once(&mut outputs, "outputs", map.next_value()?)?,
            }
        }
        Ok(InferRequest {
            id: id.flatten(),
            inputs: inputs.ok_or_else(|| de::Error::missing_field("inputs"))?,
            parameters: parameters.flatten(),
            outputs: outputs.flatten(),
        })
    }
}

/// Stores a field's value, or fails when the field came before.
fn set_once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads a field name as its index in the given list; an unknown name is an error.
struct FieldSeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldSeed {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|name| *name == v)
            .ok_or_else(|| E::unknown_field(v, self.0))
    }
}

/// The `inputs` array, each input knowing its index (for its field paths).
struct InputsSeed<'c>(RequestSeed<'c>);

impl<'de> DeserializeSeed<'de> for InputsSeed<'_> {
    type Value = Vec<InferInput<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_> {
    type Value = Vec<InferInput<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of input tensors")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut inputs = Vec::new();
        while let Some(input) = seq.next_element_seed(InputSeed {
            request: Some(self.0),
            index: inputs.len(),
        })? {
            inputs.push(input);
        }
        Ok(inputs)
    }
}

/// One input tensor. Without a request around it (`request: None`) its data stays raw.
struct InputSeed<'c> {
    request: Option<RequestSeed<'c>>,
    index: usize,
}

impl<'de> Deserialize<'de> for InferInput<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        InputSeed {
            request: None,
            index: 0,
        }
        .deserialize(d)
    }
}

impl<'de> DeserializeSeed<'de> for InputSeed<'_> {
    type Value = InferInput<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_struct("InferInput", INPUT_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_> {
    type Value = InferInput<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut shape, mut datatype, mut data, mut parameters) =
            (None, None, None, None, None);
        while let Some(key) = map.next_key_seed(FieldSeed(INPUT_FIELDS))? {
            match key {
                0 => set_once(&mut name, "name", map.next_value()?)?,
                1 => set_once(&mut shape, "shape", map.next_value::<Vec<u64>>()?)?,
                2 => set_once(&mut datatype, "datatype", map.next_value::<String>()?)?,
                3 => {
                    let known = datatype.as_deref().zip(shape.as_deref());
                    let value = match (self.request, known.and_then(inline_type)) {
                        (Some(request), Some((t, shape, expected))) => {
                            let field = format!("inputs[{}].data", self.index);
                            let spec = InlineData {
                                t,
                                shape,
                                expected,
                                field: &field,
                                request,
                            };
                            map.next_value_seed(spec)?.map(InputData::Parsed)
                        }
                        _ => map.next_value::<Option<&RawValue>>()?.map(InputData::Raw),
                    };
                    set_once(&mut data, "data", value)?;
                }
                _ => set_once(&mut parameters, "parameters", map.next_value()?)?,
            }
        }
        Ok(InferInput {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            data: data.flatten(),
            parameters: parameters.flatten(),
        })
    }
}

/// The element type, shape and element count of data that can be parsed as it is read:
/// a known datatype other than FP64 and a shape whose count does not overflow.
fn inline_type<'s>((datatype, shape): (&str, &'s [u64])) -> Option<(ElementType, &'s [u64], u64)> {
    let t = element_type_from_v2(datatype).filter(|t| *t != ElementType::F64)?;
    let expected = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
    Some((t, shape, expected))
}

/// An input's `data` parsed as it is read (`null` reads as no data, as for raw data).
struct InlineData<'s, 'c> {
    t: ElementType,
    shape: &'s [u64],
    expected: u64,
    field: &'s str,
    request: RequestSeed<'c>,
}

impl<'de> DeserializeSeed<'de> for InlineData<'_, '_> {
    type Value = Option<Vec<u8>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for InlineData<'_, '_> {
    type Value = Option<Vec<u8>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let mut reader = ElementReader::new(
            self.t,
            self.shape,
            self.expected,
            self.request.text_len,
            self.field,
        );
        let parsed = reader.seed().deserialize(d);
        match reader.finish(parsed) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(ElementsError::Json(e)) => Err(e),
            Err(ElementsError::Data(error)) => {
                let message = error.to_string();
                *self.request.data_error.borrow_mut() = Some(error);
                Err(de::Error::custom(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_request;
    use super::*;

    fn data_of(body: &str) -> Vec<Option<InputData<'_>>> {
        let request = parse_infer_request(body.as_bytes()).unwrap();
        request.inputs.into_iter().map(|i| i.data).collect()
    }

    fn error_of(body: &str) -> String {
        parse_request(body.as_bytes(), None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn data_after_datatype_and_shape_is_read_in_the_pass_and_reads_as_raw_data_does() {
        let inline =
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#;
        let raw_first =
            r#"{"inputs":[{"data":[[1,2],[3,4]],"name":"x","shape":[2,2],"datatype":"INT32"}]}"#;
        let fp64 = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[0.5]}]}"#;
        assert!(matches!(&data_of(inline)[..], [Some(InputData::Parsed(_))]));
        assert!(matches!(&data_of(raw_first)[..], [Some(InputData::Raw(_))]));
        // FP64 keeps its text for the exact second pass.
        assert!(matches!(&data_of(fp64)[..], [Some(InputData::Raw(_))]));
        let (_, a) = parse_request(inline.as_bytes(), None).unwrap();
        let (_, b) = parse_request(raw_first.as_bytes(), None).unwrap();
        assert_eq!(a.inputs, b.inputs);
        // `null` data is no data, either way.
        let null = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":null}]}"#;
        assert!(matches!(&data_of(null)[..], [None]));
        assert!(error_of(null).contains("`inputs[0].data`: missing"));
    }

    #[test]
    fn errors_in_data_read_in_the_pass_name_their_input_and_element() {
        let second = r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]},
            {"name":"b","shape":[3],"datatype":"FP32","data":[1,"two",3]}]}"#;
        assert_eq!(
            error_of(second),
            "`inputs[1].data[1]`: expected a number, got \"two\""
        );
        let short = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"UINT8","data":[1]}]}"#;
        assert_eq!(
            error_of(short),
            "`inputs[0].data`: shape [3] needs 3 elements, data has 1"
        );
        let long = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1,2]}]}"#;
        assert_eq!(
            error_of(long),
            "`inputs[0].data`: shape [1] needs 1 elements, data has more than 1"
        );
        // Broken JSON inside or after the data is malformed JSON, not a data error.
        let broken = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,]}]}"#;
        assert!(error_of(broken).starts_with("malformed request body"));
        let after = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]} x"#;
        assert!(error_of(after).starts_with("malformed request body"));
    }

    #[test]
    fn a_lying_shape_reserves_no_more_than_the_body_can_hold() {
        // 2^40 elements claimed, three sent: the room reserved is bounded by the body.
        let body =
            r#"{"inputs":[{"name":"x","shape":[1099511627776],"datatype":"FP64","data":[1,2,3]}]}"#
                .replace("FP64", "FP32");
        assert_eq!(
            error_of(&body),
            "`inputs[0].data`: shape [1099511627776] needs 1099511627776 elements, data has 3"
        );
        // A shape whose count overflows is left to the check after the pass.
        let overflow = r#"{"inputs":[{"name":"x","shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#;
        assert_eq!(error_of(overflow), "`inputs[0].shape`: shape overflows");
    }

    #[test]
    fn unknown_repeated_and_missing_fields_are_errors() {
        let unknown = r#"{"inputs":[],"model":"m"}"#;
        assert!(error_of(unknown).contains(
            "unknown field `model`, expected one of `id`, `inputs`, `parameters`, `outputs`"
        ));
        let unknown = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","dta":[1]}]}"#;
        assert!(error_of(unknown).contains("unknown field `dta`"));
        let twice =
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"data":[2]}]}"#;
        assert!(error_of(twice).contains("duplicate field `data`"));
        assert!(error_of(r#"{"id":"1"}"#).contains("missing field `inputs`"));
        let nameless = r#"{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}"#;
        assert!(error_of(nameless).contains("missing field `name`"));
    }
}
