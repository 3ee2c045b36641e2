//! Naming the inputs of a Databricks body: the path of a value for messages, the
//! signature's declaration of an input, and the input a body that names none feeds.

use super::{CodecError, DEFAULT_INPUT};
use crate::package::{Signature, TensorSignature};
use crate::runtime::ElementType;

/// `base` followed by `[i]` for each index.
pub(super) fn indexed(base: &str, at: &[usize]) -> String {
    let mut path = base.to_owned();
    for i in at {
        path.push_str(&format!("[{i}]"));
    }
    path
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
