//! The `inputs` and `instances` formats mapped onto tensors: named nested arrays, one
//! bare nested array, or (`instances`) rows of objects; every payload is parsed straight
//! from the body text ([`super::stream`], [`super::records`]).

use super::json::{describe_raw, first_element_start, RawObject};
use super::names::{declared_type, single_input};
use super::records::{from_objects, Source};
use super::stream::nested_tensor;
use super::CodecError;
use crate::package::Signature;
use crate::runtime::Tensor;
use serde_json::value::RawValue;

/// `inputs`: `{name: nested array | scalar, ...}`, or one bare nested array. Each tensor
/// is parsed straight from the body text.
pub(super) fn from_inputs(
    raw: &RawValue,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    let object: RawObject<'_> =
        serde_json::from_str(raw.get()).map_err(|e| CodecError::Json(e.to_string()))?;
    match object.0 {
        Some(entries) if entries.is_empty() => Err(CodecError::field(
            "inputs",
            "expected at least one input, got an empty object",
        )),
        Some(entries) => entries
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
        None => {
            let name = single_input(signature, "inputs")?;
            let element_type = declared_type(signature, &name);
            Ok(vec![nested_tensor(&name, raw, "inputs", element_type)?])
        }
    }
}

/// `instances`: a list of objects (one tensor per key, stacked along a new first axis), or
/// a list of values (one tensor, the list itself, parsed straight from the body text).
pub(super) fn from_instances(
    raw: &RawValue,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    if !raw.get().trim_start().starts_with('[') {
        return Err(CodecError::field(
            "instances",
            format!("expected a list, got {}", describe_raw(raw)),
        ));
    }
    match first_element_start(raw) {
        None => Err(CodecError::field(
            "instances",
            "expected at least one instance, got an empty list",
        )),
        Some(b'{') => from_objects(raw, Source::Instances, signature),
        Some(_) => {
            let name = single_input(signature, "instances")?;
            let element_type = declared_type(signature, &name);
            Ok(vec![nested_tensor(&name, raw, "instances", element_type)?])
        }
    }
}
