//! Checking a decoded request against the model signature of its image manifest: every
//! declared input present, nothing undeclared, element types and fixed dimensions as
//! declared. Used for every request format (Databricks and KServe V2) before a guest runs.

use super::{v2_datatype, CodecError};
use crate::package::{Signature, TensorSignature};
use crate::runtime::{Request, Tensor};

/// Checks `request.inputs` against `signature.inputs`.
///
/// A signature without inputs declares nothing and accepts any request. Otherwise every
/// declared input must be present exactly once, every present tensor must be declared,
/// and each tensor must have the declared element type, the declared rank and every fixed
/// (non `-1`) dimension. The error names the tensor and what was expected.
pub fn check_request(request: &Request, signature: &Signature) -> Result<(), CodecError> {
    if signature.inputs.is_empty() {
        return Ok(());
    }
    for (i, tensor) in request.inputs.iter().enumerate() {
        if request.inputs[..i].iter().any(|t| t.name == tensor.name) {
            return Err(CodecError::signature(&tensor.name, "given more than once"));
        }
        let declared = signature
            .inputs
            .iter()
            .find(|s| s.name == tensor.name)
            .ok_or_else(|| {
                CodecError::signature(
                    &tensor.name,
                    format!(
                        "not an input of this model; expected {}",
                        names(&signature.inputs)
                    ),
                )
            })?;
        check_tensor(tensor, declared)?;
    }
    if let Some(missing) = signature
        .inputs
        .iter()
        .find(|s| !request.inputs.iter().any(|t| t.name == s.name))
    {
        return Err(CodecError::signature(
            &missing.name,
            format!("missing; the model expects {}", names(&signature.inputs)),
        ));
    }
    Ok(())
}

/// Checks one tensor against its declaration.
fn check_tensor(tensor: &Tensor, declared: &TensorSignature) -> Result<(), CodecError> {
    let datatype = v2_datatype(tensor.element_type);
    if datatype != declared.datatype {
        return Err(CodecError::signature(
            &tensor.name,
            format!("expected datatype {}, got {datatype}", declared.datatype),
        ));
    }
    let fits = tensor.shape.len() == declared.shape.len()
        && tensor
            .shape
            .iter()
            .zip(&declared.shape)
            .all(|(&got, &want)| u64::try_from(want).ok().is_none_or(|want| want == got));
    if !fits {
        return Err(CodecError::signature(
            &tensor.name,
            format!(
                "expected shape {:?}, got {:?}",
                declared.shape, tensor.shape
            ),
        ));
    }
    Ok(())
}

/// The declared names, for messages: `` `a`, `b` ``.
fn names(declared: &[TensorSignature]) -> String {
    declared
        .iter()
        .map(|s| format!("`{}`", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ElementType;

    fn sig(inputs: &[(&str, &str, &[i64])]) -> Signature {
        Signature {
            inputs: inputs
                .iter()
                .map(|(name, datatype, shape)| TensorSignature {
                    name: (*name).to_string(),
                    datatype: (*datatype).to_string(),
                    shape: shape.to_vec(),
                })
                .collect(),
            outputs: Vec::new(),
        }
    }

    fn tensor(name: &str, element_type: ElementType, shape: &[u64]) -> Tensor {
        Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            element_type,
            data: Vec::new(),
        }
    }

    fn request(inputs: Vec<Tensor>) -> Request {
        Request {
            inputs,
            parameters: None,
            raw_body: None,
        }
    }

    fn digits() -> Signature {
        sig(&[("images", "FP32", &[-1, 64])])
    }

    #[test]
    fn accepts_matching_tensors_with_free_dimensions() {
        let ok = request(vec![tensor("images", ElementType::F32, &[2, 64])]);
        check_request(&ok, &digits()).unwrap();
        let ok = request(vec![tensor("images", ElementType::F32, &[0, 64])]);
        check_request(&ok, &digits()).unwrap();
    }

    #[test]
    fn shape_mismatch_names_input_and_expected_shape() {
        let bad = request(vec![tensor("images", ElementType::F32, &[2, 63])]);
        let err = check_request(&bad, &digits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input `images`: expected shape [-1, 64], got [2, 63]"
        );
        let bad = request(vec![tensor("images", ElementType::F32, &[128])]);
        let err = check_request(&bad, &digits()).unwrap_err().to_string();
        assert_eq!(err, "input `images`: expected shape [-1, 64], got [128]");
    }

    #[test]
    fn datatype_mismatch_is_rejected() {
        let bad = request(vec![tensor("images", ElementType::I64, &[2, 64])]);
        let err = check_request(&bad, &digits()).unwrap_err().to_string();
        assert_eq!(err, "input `images`: expected datatype FP32, got INT64");
    }

    #[test]
    fn missing_unknown_and_repeated_inputs_are_rejected() {
        let two = sig(&[("a", "INT64", &[-1]), ("b", "BYTES", &[-1])]);
        let only_a = request(vec![tensor("a", ElementType::I64, &[3])]);
        let err = check_request(&only_a, &two).unwrap_err().to_string();
        assert_eq!(err, "input `b`: missing; the model expects `a`, `b`");

        let extra = request(vec![
            tensor("a", ElementType::I64, &[3]),
            tensor("b", ElementType::Bytes, &[3]),
            tensor("c", ElementType::I64, &[3]),
        ]);
        let err = check_request(&extra, &two).unwrap_err().to_string();
        assert_eq!(
            err,
            "input `c`: not an input of this model; expected `a`, `b`"
        );

        let twice = request(vec![
            tensor("a", ElementType::I64, &[3]),
            tensor("a", ElementType::I64, &[3]),
        ]);
        let err = check_request(&twice, &two).unwrap_err().to_string();
        assert_eq!(err, "input `a`: given more than once");

        let both = request(vec![
            tensor("b", ElementType::Bytes, &[1]),
            tensor("a", ElementType::I64, &[1]),
        ]);
        check_request(&both, &two).unwrap();
    }

    #[test]
    fn scalars_and_fixed_dimensions() {
        let s = sig(&[("t", "FP64", &[]), ("m", "UINT8", &[2, -1, 3])]);
        let ok = request(vec![
            tensor("t", ElementType::F64, &[]),
            tensor("m", ElementType::U8, &[2, 7, 3]),
        ]);
        check_request(&ok, &s).unwrap();
        let bad = request(vec![
            tensor("t", ElementType::F64, &[1]),
            tensor("m", ElementType::U8, &[2, 7, 3]),
        ]);
        let err = check_request(&bad, &s).unwrap_err().to_string();
        assert_eq!(err, "input `t`: expected shape [], got [1]");
        let bad = request(vec![
            tensor("t", ElementType::F64, &[]),
            tensor("m", ElementType::U8, &[3, 7, 3]),
        ]);
        let err = check_request(&bad, &s).unwrap_err().to_string();
        assert_eq!(err, "input `m`: expected shape [2, -1, 3], got [3, 7, 3]");
    }

    #[test]
    fn signature_without_inputs_accepts_anything() {
        let none = sig(&[]);
        let any = request(vec![tensor("whatever", ElementType::Bool, &[1])]);
        check_request(&any, &none).unwrap();
        check_request(&request(Vec::new()), &none).unwrap();
    }
}
