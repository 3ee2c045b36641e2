//! Databricks Model Serving query bodies (`dataframe_split`, `dataframe_records`,
//! `instances`, `inputs`, plus `params`) turned into the handler's typed request, and the
//! handler's response turned into the `{"predictions": ...}` answer.
//!
//! Every tensor payload is parsed straight from the body text into the tensor's bytes,
//! never held as a JSON tree; object keys keep the order they were sent in (column order
//! matters: 64 pixel columns become one `[n, 64]` tensor in the order the client sent
//! them). Payloads are mapped onto tensors with the help of the model signature when
//! there is one, and every tensor is checked against that signature before the request
//! goes anywhere.
//!
//! One file per job: `json` (order-keeping JSON structure: the body's fields, `params`,
//! column names), `stream` (nested arrays parsed straight into a tensor's bytes),
//! `formats` (`inputs`, `instances`), `split` (`dataframe_split`), `records` (rows
//! of objects), `columns` (columns to tensors), `names` (paths and declarations),
//! `predictions` (the answer).

mod columns;
mod formats;
mod json;
mod names;
mod predictions;
mod records;
mod split;
mod stream;
#[cfg(test)]
mod tests;

use super::CodecError;
use crate::package::Signature;
use crate::runtime::Request;
use formats::{from_inputs, from_instances};
use json::{describe_raw, tree, Json, RawObject};
use records::Source;
use serde_json::value::RawValue;
use serde_json::Value;

pub use predictions::{predictions, Predictions};

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

/// Parses a Databricks query body into the handler's request.
///
/// The body holds exactly one of `dataframe_split`, `dataframe_records`, `instances` and
/// `inputs`, and optionally `params` (a JSON object, passed on as compact JSON text in
/// [`Request::parameters`]). With a signature, element types come from it and inputs are
/// ordered as it lists them; checking the result against it is the query pipeline's
/// stage after this one (`codec::signature::check_request`). `raw_body` is left `None`
/// for the caller to fill in.
pub fn parse_query(
    body: &[u8],
    signature: Option<&Signature>,
) -> Result<(QueryFormat, Request), CodecError> {
    let json_error = |e: serde_json::Error| CodecError::Json(e.to_string());
    // One pass over the body, leaving each field's value raw for its format's own pass.
    let RawObject(Some(fields)) = serde_json::from_slice(body).map_err(json_error)? else {
        // Not an object (and valid JSON, the pass above has checked): read it again, only
        // to say what it is.
        let root: &RawValue = serde_json::from_slice(body).map_err(json_error)?;
        return Err(CodecError::Json(format!(
            "expected a JSON object with one of {}, got {}",
            format_keys(&QueryFormat::ALL),
            describe_raw(root)
        )));
    };
    let mut found = Vec::new();
    let mut params = None;
    for (key, value) in &fields {
        if let Some(format) = QueryFormat::from_key(key) {
            found.push((format, *value));
        } else if key == "params" {
            params = Some(tree(value)?);
        } else if key == "client_request_id" {
            // Databricks' id for the inference table: recorded there, not passed on.
            if !value.get().starts_with('"') {
                return Err(CodecError::field(
                    "client_request_id",
                    "expected a string".to_string(),
                ));
            }
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
    let parameters = match &params {
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
        QueryFormat::DataframeSplit => split::from_split(value, signature)?,
        QueryFormat::DataframeRecords => records::from_objects(value, Source::Records, signature)?,
    };
    if let Some(sig) = signature {
        // Declared order, so that the handler sees its inputs as the signature lists them.
        inputs.sort_by_key(|t| {
            sig.inputs
                .iter()
                .position(|s| s.name == t.name)
                .unwrap_or(usize::MAX)
        });
    }
    let request = Request {
        inputs,
        parameters,
        raw_body: None,
    };
    Ok((format, request))
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
