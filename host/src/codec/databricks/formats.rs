//! The `inputs` and `instances` formats mapped onto tensors: named nested arrays, one
//! bare nested array, or (`instances`) rows of objects; every payload is parsed straight
//! from the body text ([`super::stream`], [`super::records`]).

use super::json::{describe_raw, first_element_start, read_in_one_pass};
use super::names::{declared_type, single_input};
use super::records::{from_objects, Source};
use super::stream::{nested_tensor, read_nested_tensor};
use super::CodecError;
use crate::codec::stream::ElementsError;
use crate::package::Signature;
use crate::runtime::{ElementType, Tensor};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// `inputs`: `{name: nested array | scalar, ...}`, or one bare nested array. Each tensor
/// is parsed straight from the body text, the object's in the one pass over it.
pub(super) fn from_inputs(
    raw: &RawValue,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    if !raw.get().trim_start().starts_with('{') {
        let name = single_input(signature, "inputs")?;
        let element_type = declared_type(signature, &name);
        return Ok(vec![nested_tensor(&name, raw, "inputs", element_type)?]);
    }
    let data_error = RefCell::new(None);
    let seed = NamedInputs {
        signature,
        data_error: &data_error,
    };
    let tensors = read_in_one_pass(raw.get(), seed, &data_error)?;
    if tensors.is_empty() {
        return Err(CodecError::field(
            "inputs",
            "expected at least one input, got an empty object",
        ));
    }
    Ok(tensors)
}

/// The object of named tensors of `inputs`, each read as the pass reaches it (FP64 ones
/// kept as text for their exact second pass); a repeated name is an error.
struct NamedInputs<'s, 'c> {
    signature: Option<&'s Signature>,
    /// The error in a tensor's data that stopped the pass, if one did.
    data_error: &'c RefCell<Option<CodecError>>,
}

impl<'de> DeserializeSeed<'de> for NamedInputs<'_, '_> {
    type Value = Vec<Tensor>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Tensor>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NamedInputs<'_, '_> {
    type Value = Vec<Tensor>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of named tensors")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Tensor>, A::Error> {
        let mut names = HashSet::new();
        let mut tensors = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if !names.insert(name.clone()) {
                return Err(de::Error::custom(format!("duplicate key `{name}`")));
            }
            let base = format!("inputs.{name}");
            let element_type = declared_type(self.signature, &name);
            let read = if element_type == Some(ElementType::F64) {
                let raw: &RawValue = map.next_value()?;
                nested_tensor(&name, raw, &base, element_type)
            } else {
                map.next_value_seed(NamedTensor {
                    name: &name,
                    base: &base,
                    element_type,
                })?
            };
            match read {
                Ok(tensor) => tensors.push(tensor),
                Err(error) => {
                    let message = error.to_string();
                    *self.data_error.borrow_mut() = Some(error);
                    return Err(de::Error::custom(message));
                }
            }
        }
        Ok(tensors)
    }
}

/// One named tensor of `inputs`, read where the pass stands: our error in its data as the
/// value, the deserializer's own as its error.
struct NamedTensor<'s> {
    name: &'s str,
    base: &'s str,
    element_type: Option<ElementType>,
}

impl<'de> DeserializeSeed<'de> for NamedTensor<'_> {
    type Value = Result<Tensor, CodecError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match read_nested_tensor(d, self.name, self.base, self.element_type) {
            Ok(tensor) => Ok(Ok(tensor)),
            Err(ElementsError::Data(error)) => Ok(Err(error)),
            Err(ElementsError::Json(e)) => Err(e),
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
