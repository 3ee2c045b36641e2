//! Databricks Model Serving query bodies (`dataframe_split`, `dataframe_records`,
//! `instances`, `inputs`, plus `params`) turned into the handler's typed request, and the
//! handler's response turned into the `{"predictions": ...}` answer.
//!
//! The body is parsed into an order-preserving JSON tree (column order matters: 64 pixel
//! columns become one `[n, 64]` tensor in the order the client sent them), mapped onto
//! tensors with the help of the model signature when there is one, and every tensor is
//! checked against that signature before the request goes anywhere.

use super::elements::{decode, encode};
use super::signature::check_request;
use super::CodecError;
use crate::package::{Signature, TensorSignature};
use crate::runtime::{ElementType, Request, Response, Tensor};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Which of the four Databricks request formats a body used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryFormat {
    /// `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`
    DataframeSplit,
    /// `{"dataframe_records": [{"col": value, ...}, ...]}`
    DataframeRecords,
    /// `{"instances": [...]}` (TensorFlow Serving row format)
    Instances,
    /// `{"inputs": ...}` (TensorFlow Serving columnar format)
    Inputs,
}

impl QueryFormat {
    /// Every format, in the order messages list them.
    pub const ALL: [Self; 4] = [
        Self::DataframeSplit,
        Self::DataframeRecords,
        Self::Instances,
        Self::Inputs,
    ];

    /// The top-level key that selects this format.
    pub fn key(self) -> &'static str {
        match self {
            Self::DataframeSplit => "dataframe_split",
            Self::DataframeRecords => "dataframe_records",
            Self::Instances => "instances",
            Self::Inputs => "inputs",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.key() == key)
    }
}

/// Name of the single input when neither the body nor a signature names it.
const DEFAULT_INPUT: &str = "input";

/// Most dimensions an output may have.
const MAX_OUTPUT_RANK: usize = 64;

/// Most empty arrays an output without elements may expand to (`[n, 0]` shapes).
const MAX_EMPTY_ROWS: u64 = 1 << 16;

/// Parses a Databricks query body into the handler's request.
///
/// The body holds exactly one of `dataframe_split`, `dataframe_records`, `instances` and
/// `inputs`, and optionally `params` (a JSON object, passed on as compact JSON text in
/// [`Request::parameters`]). With a signature, element types come from it, inputs are
/// ordered as it lists them, and the result is checked against it. `raw_body` is left
/// `None` for the caller to fill in.
pub fn parse_query(
    body: &[u8],
    signature: Option<&Signature>,
) -> Result<(QueryFormat, Request), CodecError> {
    let root: Json = serde_json::from_slice(body).map_err(|e| CodecError::Json(e.to_string()))?;
    let Json::Object(fields) = root else {
        return Err(CodecError::Json(format!(
            "expected a JSON object with one of {}, got {}",
            format_keys(&QueryFormat::ALL),
            root.describe()
        )));
    };
    let mut found = Vec::new();
    let mut params = None;
    for (key, value) in &fields {
        if let Some(format) = QueryFormat::from_key(key) {
            found.push((format, value));
        } else if key == "params" {
            params = Some(value);
        } else {
            return Err(CodecError::field(
                key.as_str(),
                format!(
                    "unknown field; expected one of {} and optionally `params`",
                    format_keys(&QueryFormat::ALL)
                ),
            ));
        }
    }
    let (format, value) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(CodecError::Json(format!(
                "expected exactly one of {}, found none",
                format_keys(&QueryFormat::ALL)
            )))
        }
        several => {
            let formats: Vec<QueryFormat> = several.iter().map(|(f, _)| *f).collect();
            return Err(CodecError::Json(format!(
                "expected exactly one of {}, found {}",
                format_keys(&QueryFormat::ALL),
                format_keys(&formats)
            )));
        }
    };
    let parameters = match params {
        None | Some(Json::Scalar(Value::Null)) => None,
        Some(p @ Json::Object(_)) => {
            Some(serde_json::to_string(p).map_err(|e| CodecError::field("params", e.to_string()))?)
        }
        Some(other) => {
            return Err(CodecError::field(
                "params",
                format!("expected a JSON object, got {}", other.describe()),
            ))
        }
    };
    let signature = signature.filter(|s| !s.inputs.is_empty());
    let mut inputs = match format {
        QueryFormat::Inputs => from_inputs(value, signature)?,
        QueryFormat::Instances => from_instances(value, signature)?,
        QueryFormat::DataframeSplit => from_dataframe(&split_table(value)?, signature)?,
        QueryFormat::DataframeRecords => from_dataframe(&records_table(value)?, signature)?,
    };
    let request = match signature {
        Some(sig) => {
            inputs.sort_by_key(|t| {
                sig.inputs
                    .iter()
                    .position(|s| s.name == t.name)
                    .unwrap_or(usize::MAX)
            });
            let request = Request {
                inputs,
                parameters,
                raw_body: None,
            };
            check_request(&request, sig)?;
            request
        }
        None => Request {
            inputs,
            parameters,
            raw_body: None,
        },
    };
    Ok((format, request))
}

/// The whole response body, `{"predictions": ...}`, for the handler's outputs.
///
/// One output: its values nested by its shape (a scalar for shape `[]`). Several outputs
/// sharing a first dimension `n`: a list of `n` objects, one per row, mapping each output
/// name to its row. Otherwise: an object mapping each output name to its nested values.
/// BYTES elements become strings, non-finite floats `null`.
pub fn predictions(response: &Response) -> Result<Value, CodecError> {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    // A few outputs (the usual case) are compared pairwise; many go through a set.
    let many = response.outputs.len() > 16;
    let mut seen = HashSet::with_capacity(if many { response.outputs.len() } else { 0 });
    for (i, tensor) in response.outputs.iter().enumerate() {
        let repeated = if many {
            !seen.insert(tensor.name.as_str())
        } else {
            response.outputs[..i].iter().any(|t| t.name == tensor.name)
        };
        if repeated {
            return Err(CodecError::field(
                format!("outputs.{}", tensor.name),
                "handler returned this output more than once",
            ));
        }
        outputs.push((tensor, nest_output(tensor)?));
    }
    let first_dim = |t: &Tensor| t.shape.first().copied();
    let shared_rows = match outputs.first() {
        Some((first, _)) if outputs.len() > 1 => first_dim(first)
            .filter(|&n| outputs.iter().all(|(t, _)| first_dim(t) == Some(n)))
            .and_then(|n| usize::try_from(n).ok()),
        _ => None,
    };
    let value = if outputs.len() == 1 {
        outputs.pop().map_or(Value::Null, |(_, v)| v)
    } else if let Some(n) = shared_rows {
        let mut rows = vec![Map::new(); n];
        for (tensor, value) in outputs {
            let Value::Array(items) = value else {
                continue;
            };
            for (row, item) in rows.iter_mut().zip(items) {
                row.insert(tensor.name.clone(), item);
            }
        }
        Value::Array(rows.into_iter().map(Value::Object).collect())
    } else {
        Value::Object(
            outputs
                .into_iter()
                .map(|(t, v)| (t.name.clone(), v))
                .collect(),
        )
    };
    let mut body = Map::new();
    body.insert("predictions".to_owned(), value);
    Ok(Value::Object(body))
}

/// One output's values, nested by its shape.
fn nest_output(tensor: &Tensor) -> Result<Value, CodecError> {
    let field = || format!("outputs.{}", tensor.name);
    let values = decode(tensor.element_type, &tensor.data).ok_or_else(|| {
        CodecError::field(
            field(),
            "handler returned data that does not fit its element type",
        )
    })?;
    if tensor.shape.len() > MAX_OUTPUT_RANK {
        return Err(CodecError::field(
            field(),
            format!(
                "handler returned {} dimensions, at most {MAX_OUTPUT_RANK} are supported",
                tensor.shape.len()
            ),
        ));
    }
    let count = tensor
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| CodecError::field(field(), "handler returned a shape that overflows"))?;
    if count != values.len() as u64 {
        return Err(CodecError::field(
            field(),
            format!(
                "handler returned {} elements for shape {:?}, which needs {count}",
                values.len(),
                tensor.shape
            ),
        ));
    }
    // With a zero dimension the elements bound nothing: bound the empty arrays instead.
    let limit = count.saturating_add(MAX_EMPTY_ROWS);
    let mut arrays = 1u64;
    for &d in &tensor.shape {
        arrays = arrays.saturating_mul(d);
        if arrays > limit {
            return Err(CodecError::field(
                field(),
                format!("handler returned shape {:?}, too large", tensor.shape),
            ));
        }
    }
    Ok(nest(&mut values.into_iter(), &tensor.shape))
}

/// Builds nested arrays of `shape` from `values` (which holds exactly enough of them).
fn nest(values: &mut impl Iterator<Item = Value>, shape: &[u64]) -> Value {
    match shape.split_first() {
        None => values.next().unwrap_or(Value::Null),
        Some((&d, rest)) => Value::Array((0..d).map(|_| nest(values, rest)).collect()),
    }
}

// ---------------------------------------------------------------------------------------
// The JSON tree
// ---------------------------------------------------------------------------------------

/// A JSON value that keeps object keys in the order they were sent (`serde_json::Value`
/// sorts them) and rejects duplicate keys.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    /// `null`, a boolean, a number or a string.
    Scalar(Value),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// A short description for messages: the value itself when it is a scalar.
    fn describe(&self) -> String {
        match self {
            Self::Scalar(v) => {
                let text = v.to_string();
                if text.chars().count() > 40 {
                    format!("{}...", text.chars().take(40).collect::<String>())
                } else {
                    text
                }
            }
            Self::Array(_) => "an array".to_owned(),
            Self::Object(_) => "an object".to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Scalar(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Scalar(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Scalar(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Scalar(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::Scalar(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Scalar(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Scalar(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value()?;
            entries.push((key, value));
        }
        if let Some(key) = duplicate_key(&entries) {
            return Err(de::Error::custom(format!("duplicate key `{key}`")));
        }
        Ok(Json::Object(entries))
    }
}

/// The first key that appears twice, if any.
fn duplicate_key(entries: &[(String, Json)]) -> Option<&str> {
    if entries.len() <= 16 {
        return entries
            .iter()
            .enumerate()
            .find(|(i, (k, _))| entries[..*i].iter().any(|(other, _)| other == k))
            .map(|(_, (k, _))| k.as_str());
    }
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Scalar(v) => v.serialize(serializer),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Nested arrays to tensors
// ---------------------------------------------------------------------------------------

/// `base` followed by `[i]` for each index.
fn indexed(base: &str, at: &[usize]) -> String {
    let mut path = base.to_owned();
    for i in at {
        path.push_str(&format!("[{i}]"));
    }
    path
}

/// The multi-index of flat (row-major) position `i` in `dims`.
fn unravel(mut i: usize, dims: &[u64]) -> Vec<usize> {
    let mut at = vec![0; dims.len()];
    for (slot, &d) in at.iter_mut().zip(dims).rev() {
        let d = usize::try_from(d).unwrap_or(usize::MAX).max(1);
        *slot = i % d;
        i /= d;
    }
    at
}

/// The dimensions of a nested array, read along its first elements.
fn probe_dims(value: &Json) -> Vec<u64> {
    let mut dims = Vec::new();
    let mut value = value;
    while let Json::Array(items) = value {
        dims.push(items.len() as u64);
        match items.first() {
            Some(first) => value = first,
            None => break,
        }
    }
    dims
}

/// Appends the elements of `value`, which must be a rectangular array of `dims`, to `out`
/// in row-major order. `at` holds the indices of `value` below `base()`, for messages.
fn collect_leaves<'a>(
    value: &'a Json,
    dims: &[u64],
    out: &mut Vec<&'a Json>,
    at: &mut Vec<usize>,
    base: &dyn Fn() -> String,
) -> Result<(), CodecError> {
    let here = |at: &[usize]| indexed(&base(), at);
    match (dims.split_first(), value) {
        (None, Json::Array(items)) => Err(CodecError::field(
            here(at),
            format!(
                "ragged array: expected a single value here, got an array of {}",
                items.len()
            ),
        )),
        (None, leaf) => {
            out.push(leaf);
            Ok(())
        }
        (Some((&d, rest)), Json::Array(items)) if items.len() as u64 == d => {
            for (i, item) in items.iter().enumerate() {
                at.push(i);
                collect_leaves(item, rest, out, at, base)?;
                at.pop();
            }
            Ok(())
        }
        (Some((&d, _)), Json::Array(items)) => Err(CodecError::field(
            here(at),
            format!("ragged array: expected {d} elements, got {}", items.len()),
        )),
        (Some((&d, _)), other) => Err(CodecError::field(
            here(at),
            format!(
                "ragged array: expected an array of {d} elements, got {}",
                other.describe()
            ),
        )),
    }
}

/// The element type the elements of one tensor have when nothing declares it: BOOL for
/// booleans, INT64 for integers, FP32 when any number has a fraction or exponent, BYTES
/// for strings. Mixing kinds is an error naming the first element that differs.
fn infer(leaves: &[&Json], path: &dyn Fn(usize) -> String) -> Result<ElementType, CodecError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Bool,
        Number,
        String,
    }
    let noun = |k: Kind| match k {
        Kind::Bool => "true or false",
        Kind::Number => "a number",
        Kind::String => "a string",
    };
    let mut first = None;
    let mut float = false;
    for (i, leaf) in leaves.iter().enumerate() {
        let kind = match leaf {
            Json::Scalar(Value::Bool(_)) => Kind::Bool,
            Json::Scalar(Value::Number(n)) => {
                float |= !(n.is_i64() || n.is_u64());
                Kind::Number
            }
            Json::Scalar(Value::String(_)) => Kind::String,
            other => {
                return Err(CodecError::field(
                    path(i),
                    format!(
                        "expected a number, a string or true or false, got {}",
                        other.describe()
                    ),
                ))
            }
        };
        match first {
            None => first = Some(kind),
            Some(k) if k == kind => {}
            Some(k) => {
                return Err(CodecError::field(
                    path(i),
                    format!(
                        "expected {}, got {} (the elements of one tensor share a type)",
                        noun(k),
                        leaf.describe()
                    ),
                ))
            }
        }
    }
    Ok(match first {
        Some(Kind::Bool) => ElementType::Bool,
        Some(Kind::String) => ElementType::Bytes,
        Some(Kind::Number) if !float => ElementType::I64,
        Some(Kind::Number) | None => ElementType::F32,
    })
}

/// Encodes `leaves` into a tensor of `element_type` (or the inferred one).
fn encode_tensor(
    name: &str,
    shape: Vec<u64>,
    element_type: Option<ElementType>,
    leaves: &[&Json],
    path: &dyn Fn(usize) -> String,
) -> Result<Tensor, CodecError> {
    let element_type = match element_type {
        Some(t) => t,
        None => infer(leaves, path)?,
    };
    let mut data = Vec::with_capacity(leaves.len().saturating_mul(element_size(element_type)));
    for (i, leaf) in leaves.iter().enumerate() {
        let Json::Scalar(value) = leaf else {
            return Err(CodecError::field(
                path(i),
                format!("expected a single value, got {}", leaf.describe()),
            ));
        };
        encode(element_type, value, &|| path(i), &mut data)?;
    }
    Ok(Tensor {
        name: name.to_owned(),
        shape,
        element_type,
        data,
    })
}

fn element_size(t: ElementType) -> usize {
    match t {
        ElementType::F64 | ElementType::I64 | ElementType::U64 => 8,
        ElementType::F32 | ElementType::I32 | ElementType::U32 | ElementType::Bytes => 4,
        ElementType::F16 | ElementType::Bf16 | ElementType::I16 | ElementType::U16 => 2,
        ElementType::Bool | ElementType::U8 | ElementType::I8 => 1,
    }
}

/// One tensor from a nested array (or scalar) found at `base`.
fn nested_tensor(
    name: &str,
    value: &Json,
    base: &str,
    element_type: Option<ElementType>,
) -> Result<Tensor, CodecError> {
    let dims = probe_dims(value);
    let mut leaves = Vec::new();
    collect_leaves(value, &dims, &mut leaves, &mut Vec::new(), &|| {
        base.to_owned()
    })?;
    let path = |i: usize| indexed(base, &unravel(i, &dims));
    encode_tensor(name, dims.clone(), element_type, &leaves, &path)
}

/// The declaration of input `name`, if the signature has one.
fn declared<'s>(signature: Option<&'s Signature>, name: &str) -> Option<&'s TensorSignature> {
    signature.and_then(|s| s.inputs.iter().find(|i| i.name == name))
}

/// The element type the signature declares for input `name`.
fn declared_type(signature: Option<&Signature>, name: &str) -> Option<ElementType> {
    declared(signature, name).and_then(TensorSignature::element_type)
}

/// The name of the one input a body that names none feeds: the signature's only input,
/// or `input` without a signature.
fn single_input(signature: Option<&Signature>, field: &str) -> Result<String, CodecError> {
    match signature.map(|s| s.inputs.as_slice()) {
        None | Some([]) => Ok(DEFAULT_INPUT.to_owned()),
        Some([only]) => Ok(only.name.clone()),
        Some(several) => Err(CodecError::field(
            field,
            format!(
                "the model has several inputs ({}): send an object keyed by input name",
                several
                    .iter()
                    .map(|s| format!("`{}`", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The four formats
// ---------------------------------------------------------------------------------------

/// `inputs`: `{name: nested array | scalar, ...}`, or one bare nested array.
fn from_inputs(value: &Json, signature: Option<&Signature>) -> Result<Vec<Tensor>, CodecError> {
    match value {
        Json::Object(entries) if entries.is_empty() => Err(CodecError::field(
            "inputs",
            "expected at least one input, got an empty object",
        )),
        Json::Object(entries) => entries
            .iter()
            .map(|(name, v)| {
                nested_tensor(
                    name,
                    v,
                    &format!("inputs.{name}"),
                    declared_type(signature, name),
                )
            })
            .collect(),
        bare => {
            let name = single_input(signature, "inputs")?;
            let element_type = declared_type(signature, &name);
            Ok(vec![nested_tensor(&name, bare, "inputs", element_type)?])
        }
    }
}

/// `instances`: a list of objects (one tensor per key, stacked along a new first axis), or
/// a list of values (one tensor, the list itself).
fn from_instances(value: &Json, signature: Option<&Signature>) -> Result<Vec<Tensor>, CodecError> {
    let Json::Array(items) = value else {
        return Err(CodecError::field(
            "instances",
            format!("expected a list, got {}", value.describe()),
        ));
    };
    match items.first() {
        None => Err(CodecError::field(
            "instances",
            "expected at least one instance, got an empty list",
        )),
        Some(Json::Object(_)) => per_column(&objects_table(items, Source::Instances)?, signature),
        Some(_) => {
            let name = single_input(signature, "instances")?;
            let element_type = declared_type(signature, &name);
            Ok(vec![nested_tensor(
                &name,
                value,
                "instances",
                element_type,
            )?])
        }
    }
}

/// Where a table came from, for naming its cells in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Split,
    Records,
    Instances,
}

/// Rows of named cells: a dataframe, or `instances` given as objects.
struct Table<'a> {
    source: Source,
    columns: Vec<&'a str>,
    /// `rows[r][c]` is the cell of column `c` in row `r`; every row has every column.
    rows: Vec<Vec<&'a Json>>,
}

impl Table<'_> {
    /// The path of cell (`row`, `column`).
    fn cell_path(&self, row: usize, column: usize) -> String {
        let name = self.columns.get(column).copied().unwrap_or("?");
        match self.source {
            Source::Split => format!("dataframe_split.data[{row}][{column}]"),
            Source::Records => format!("dataframe_records[{row}].{name}"),
            Source::Instances => format!("instances[{row}].{name}"),
        }
    }
}

/// `dataframe_split`: `{columns: [...], data: [[...], ...], index?: [...]}`.
fn split_table(value: &Json) -> Result<Table<'_>, CodecError> {
    let Json::Object(entries) = value else {
        return Err(CodecError::field(
            "dataframe_split",
            format!(
                "expected an object with `columns` and `data`, got {}",
                value.describe()
            ),
        ));
    };
    let mut columns = None;
    let mut data = None;
    for (key, v) in entries {
        match key.as_str() {
            "columns" => columns = Some(v),
            "data" => data = Some(v),
            "index" => {}
            other => {
                return Err(CodecError::field(
                    format!("dataframe_split.{other}"),
                    "unknown field; expected `columns`, `data` and optionally `index`",
                ))
            }
        }
    }
    let missing = |f: &str| CodecError::field(format!("dataframe_split.{f}"), "missing");
    let columns = match columns.ok_or_else(|| missing("columns"))? {
        Json::Array(names) if names.is_empty() => {
            return Err(CodecError::field(
                "dataframe_split.columns",
                "expected at least one column",
            ))
        }
        Json::Array(names) => {
            let mut columns = Vec::with_capacity(names.len());
            let mut seen = HashSet::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let field = || format!("dataframe_split.columns[{i}]");
                let Json::Scalar(Value::String(name)) = name else {
                    return Err(CodecError::field(
                        field(),
                        format!("expected a column name, got {}", name.describe()),
                    ));
                };
                if !seen.insert(name.as_str()) {
                    return Err(CodecError::field(
                        field(),
                        format!("column `{name}` appears twice"),
                    ));
                }
                columns.push(name.as_str());
            }
            columns
        }
        other => {
            return Err(CodecError::field(
                "dataframe_split.columns",
                format!("expected a list of column names, got {}", other.describe()),
            ))
        }
    };
    let rows = match data.ok_or_else(|| missing("data"))? {
        Json::Array(rows) if rows.is_empty() => {
            return Err(CodecError::field(
                "dataframe_split.data",
                "expected at least one row",
            ))
        }
        Json::Array(rows) => rows
            .iter()
            .enumerate()
            .map(|(r, row)| match row {
                Json::Array(cells) if cells.len() == columns.len() => Ok(cells.iter().collect()),
                Json::Array(cells) => Err(CodecError::field(
                    format!("dataframe_split.data[{r}]"),
                    format!(
                        "expected {} values (one per column), got {}",
                        columns.len(),
                        cells.len()
                    ),
                )),
                other => Err(CodecError::field(
                    format!("dataframe_split.data[{r}]"),
                    format!("expected a row (a list), got {}", other.describe()),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(CodecError::field(
                "dataframe_split.data",
                format!("expected a list of rows, got {}", other.describe()),
            ))
        }
    };
    Ok(Table {
        source: Source::Split,
        columns,
        rows,
    })
}

/// `dataframe_records`: `[{column: value, ...}, ...]`.
fn records_table(value: &Json) -> Result<Table<'_>, CodecError> {
    let Json::Array(items) = value else {
        return Err(CodecError::field(
            "dataframe_records",
            format!("expected a list of records, got {}", value.describe()),
        ));
    };
    if items.is_empty() {
        return Err(CodecError::field(
            "dataframe_records",
            "expected at least one record, got an empty list",
        ));
    }
    objects_table(items, Source::Records)
}

/// A table from a non-empty list of objects: the columns are the first object's keys, in
/// order, and every object must have exactly those keys.
fn objects_table(items: &[Json], source: Source) -> Result<Table<'_>, CodecError> {
    let base = match source {
        Source::Instances => "instances",
        Source::Records | Source::Split => "dataframe_records",
    };
    let mut columns: Vec<&str> = Vec::new();
    let mut rows = Vec::with_capacity(items.len());
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (r, item) in items.iter().enumerate() {
        let field = || format!("{base}[{r}]");
        let Json::Object(entries) = item else {
            return Err(CodecError::field(
                field(),
                format!("expected an object like {base}[0], got {}", item.describe()),
            ));
        };
        if r == 0 {
            if entries.is_empty() {
                return Err(CodecError::field(field(), "expected at least one column"));
            }
            columns = entries.iter().map(|(k, _)| k.as_str()).collect();
            index = columns.iter().enumerate().map(|(c, k)| (*k, c)).collect();
        }
        let in_order = entries.len() == columns.len()
            && entries.iter().zip(&columns).all(|((k, _), c)| k == c);
        if in_order {
            rows.push(entries.iter().map(|(_, v)| v).collect());
            continue;
        }
        let mut row: Vec<Option<&Json>> = vec![None; columns.len()];
        for (key, v) in entries {
            let c = index.get(key.as_str()).copied().ok_or_else(|| {
                CodecError::field(
                    field(),
                    format!("unexpected key `{key}`: {base}[0] has no such column"),
                )
            })?;
            if let Some(slot) = row.get_mut(c) {
                *slot = Some(v);
            }
        }
        let row = row
            .into_iter()
            .zip(&columns)
            .map(|(cell, c)| {
                cell.ok_or_else(|| {
                    CodecError::field(field(), format!("missing key `{c}`, which {base}[0] has"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(Table {
        source,
        columns,
        rows,
    })
}

/// A dataframe to tensors.
///
/// With a signature of exactly one rank-2 input (and columns other than that input's
/// name): one `[rows, columns]` tensor named after it. With any other signature: one
/// tensor per column. Without a signature: one `[rows, columns]` tensor named `input`
/// when every cell is a single value and all columns have the same inferred type, else
/// one tensor per column.
fn from_dataframe(
    table: &Table<'_>,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    match signature.map(|s| s.inputs.as_slice()) {
        Some([only])
            if only.shape.len() == 2 && table.columns.as_slice() != [only.name.as_str()] =>
        {
            Ok(vec![whole_table(table, &only.name, only.element_type())?])
        }
        Some(_) => per_column(table, signature),
        None => match common_type(table)? {
            Some(t) => Ok(vec![whole_table(table, DEFAULT_INPUT, Some(t))?]),
            None => per_column(table, None),
        },
    }
}

/// The element type every column infers to, when every cell is a single value and the
/// columns agree; `None` otherwise.
fn common_type(table: &Table<'_>) -> Result<Option<ElementType>, CodecError> {
    let scalars = table
        .rows
        .iter()
        .flatten()
        .all(|cell| matches!(cell, Json::Scalar(_)));
    if !scalars {
        return Ok(None);
    }
    let mut common = None;
    for c in 0..table.columns.len() {
        let leaves: Vec<&Json> = table
            .rows
            .iter()
            .filter_map(|row| row.get(c))
            .copied()
            .collect();
        let t = infer(&leaves, &|r| table.cell_path(r, c))?;
        match common {
            None => common = Some(t),
            Some(seen) if seen == t => {}
            Some(_) => return Ok(None),
        }
    }
    Ok(common)
}

/// The whole table as one `[rows, columns]` tensor; every cell must be a single value.
fn whole_table(
    table: &Table<'_>,
    name: &str,
    element_type: Option<ElementType>,
) -> Result<Tensor, CodecError> {
    let width = table.columns.len().max(1);
    let leaves: Vec<&Json> = table.rows.iter().flatten().copied().collect();
    let path = |i: usize| table.cell_path(i / width, i % width);
    let shape = vec![table.rows.len() as u64, table.columns.len() as u64];
    encode_tensor(name, shape, element_type, &leaves, &path)
}

/// One tensor per column: the column's cells stacked along a new first axis, so
/// `[rows, ...cell dims]`. A column of single values declared with shape `[-1, 1]` (or
/// `[-1, -1]`) becomes `[rows, 1]`.
fn per_column(table: &Table<'_>, signature: Option<&Signature>) -> Result<Vec<Tensor>, CodecError> {
    let mut tensors = Vec::with_capacity(table.columns.len());
    for (c, column) in table.columns.iter().enumerate() {
        let declaration = declared(signature, column);
        let cell_dims = table
            .rows
            .first()
            .and_then(|row| row.get(c))
            .map(|cell| probe_dims(cell))
            .unwrap_or_default();
        let mut leaves = Vec::new();
        for (r, row) in table.rows.iter().enumerate() {
            if let Some(cell) = row.get(c) {
                collect_leaves(cell, &cell_dims, &mut leaves, &mut Vec::new(), &|| {
                    table.cell_path(r, c)
                })?;
            }
        }
        let mut shape = Vec::with_capacity(cell_dims.len() + 2);
        shape.push(table.rows.len() as u64);
        shape.extend_from_slice(&cell_dims);
        let column_of_values = cell_dims.is_empty()
            && declaration.is_some_and(|d| matches!(d.shape.as_slice(), [_, 1 | -1]));
        if column_of_values {
            shape.push(1);
        }
        let per_cell = cell_dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
            .unwrap_or(usize::MAX)
            .max(1);
        let path = |i: usize| {
            indexed(
                &table.cell_path(i / per_cell, c),
                &unravel(i % per_cell, &cell_dims),
            )
        };
        let element_type = declaration.and_then(TensorSignature::element_type);
        tensors.push(encode_tensor(column, shape, element_type, &leaves, &path)?);
    }
    Ok(tensors)
}

/// `` `a`, `b` or `c` `` (every format) or `` `a` and `b` `` (some) for messages.
fn format_keys(formats: &[QueryFormat]) -> String {
    let keys: Vec<String> = formats.iter().map(|f| format!("`{}`", f.key())).collect();
    let conjunction = if formats == QueryFormat::ALL {
        "or"
    } else {
        "and"
    };
    match keys.split_last() {
        Some((last, rest)) if !rest.is_empty() => {
            format!("{} {conjunction} {last}", rest.join(", "))
        }
        _ => keys.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn parse(body: &Value, signature: Option<&Signature>) -> Result<Request, CodecError> {
        parse_query(body.to_string().as_bytes(), signature).map(|(_, r)| r)
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
}
