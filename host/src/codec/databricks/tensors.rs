//! Nested JSON arrays (and single values) to tensors: dimensions read along the first
//! elements, raggedness named at the exact index, element types declared by the
//! signature or inferred from the values.

use super::json::Json;
use super::{CodecError, DEFAULT_INPUT};
use crate::codec::elements::encode;
use crate::package::{Signature, TensorSignature};
use crate::runtime::{ElementType, Tensor};
use serde_json::Value;

/// `base` followed by `[i]` for each index.
pub(super) fn indexed(base: &str, at: &[usize]) -> String {
    let mut path = base.to_owned();
    for i in at {
        path.push_str(&format!("[{i}]"));
    }
    path
}

/// The multi-index of flat (row-major) position `i` in `dims`.
pub(super) fn unravel(mut i: usize, dims: &[u64]) -> Vec<usize> {
    let mut at = vec![0; dims.len()];
    for (slot, &d) in at.iter_mut().zip(dims).rev() {
        let d = usize::try_from(d).unwrap_or(usize::MAX).max(1);
        *slot = i % d;
        i /= d;
    }
    at
}

/// The dimensions of a nested array, read along its first elements.
pub(super) fn probe_dims(value: &Json) -> Vec<u64> {
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
pub(super) fn collect_leaves<'a>(
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
pub(super) fn infer(
    leaves: &[&Json],
    path: &dyn Fn(usize) -> String,
) -> Result<ElementType, CodecError> {
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
pub(super) fn encode_tensor(
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

/// The declaration of input `name`, if the signature has one.
pub(super) fn declared<'s>(
    signature: Option<&'s Signature>,
    name: &str,
) -> Option<&'s TensorSignature> {
    signature.and_then(|s| s.inputs.iter().find(|i| i.name == name))
}

/// The element type the signature declares for input `name`.
pub(super) fn declared_type(signature: Option<&Signature>, name: &str) -> Option<ElementType> {
    declared(signature, name).and_then(TensorSignature::element_type)
}

/// The name of the one input a body that names none feeds: the signature's only input,
/// or `input` without a signature.
pub(super) fn single_input(
    signature: Option<&Signature>,
    field: &str,
) -> Result<String, CodecError> {
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
