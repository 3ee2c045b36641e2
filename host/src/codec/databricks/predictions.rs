//! The Databricks answer, `{"predictions": ...}`, serialized straight from the handler's
//! output bytes: every output is checked first (element type, shape, size), then written
//! element by element through [`crate::codec::view`], so encoding costs the JSON text and
//! nothing per element.

use super::CodecError;
use crate::codec::elements::element_count;
use crate::codec::view::Cursor;
use crate::runtime::{Response, Tensor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;
use std::collections::HashSet;

/// Most dimensions an output may have.
const MAX_OUTPUT_RANK: usize = 64;

/// Most empty arrays an output may expand to beyond its elements (`[n, 0]` shapes).
/// Each costs three bytes of answer and no memory per array (they are written lazily);
/// the bound is above what any query body (at most 64 MiB, three bytes per `[],`) can
/// ask a handler to echo, and refuses shapes like `[2^64 - 1, 0]`.
const MAX_EMPTY_ARRAYS: u64 = 1 << 25;

/// The checked answer to a query, serialized as `{"predictions": ...}`.
pub struct Predictions<'a> {
    layout: Layout<'a>,
}

enum Layout<'a> {
    /// One output: its values nested by its shape.
    One(&'a Tensor),
    /// Several outputs sharing a first dimension: one object per row.
    Rows(u64, Vec<&'a Tensor>),
    /// Several unrelated outputs (or none): an object keyed by output name.
    Object(Vec<&'a Tensor>),
}

/// The whole response body, `{"predictions": ...}`, for the handler's outputs.
///
/// One output: its values nested by its shape (a scalar for shape `[]`). Several outputs
/// sharing a first dimension `n`: a list of `n` objects, one per row, mapping each output
/// name to its row. Otherwise: an object mapping each output name to its nested values.
/// BYTES elements become strings, non-finite floats `null`.
pub fn predictions(response: &Response) -> Result<Predictions<'_>, CodecError> {
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
        check_output(tensor)?;
        outputs.push(tensor);
    }
    let first_dim = |t: &Tensor| t.shape.first().copied();
    let shared_rows = match outputs.first() {
        Some(first) if outputs.len() > 1 => first_dim(first)
            .filter(|&n| outputs.iter().all(|t| first_dim(t) == Some(n)))
            .filter(|&n| usize::try_from(n).is_ok()),
        _ => None,
    };
    let layout = match (outputs.as_slice(), shared_rows) {
        ([one], _) => Layout::One(one),
        (_, Some(n)) => Layout::Rows(n, outputs),
        _ => Layout::Object(outputs),
    };
    Ok(Predictions { layout })
}

/// Checks that an output's bytes fit its element type and shape, and that the shape is
/// small enough to write.
fn check_output(tensor: &Tensor) -> Result<(), CodecError> {
    let field = || format!("outputs.{}", tensor.name);
    let elements = element_count(tensor.element_type, &tensor.data).ok_or_else(|| {
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
    if count != elements {
        return Err(CodecError::field(
            field(),
            format!(
                "handler returned {elements} elements for shape {:?}, which needs {count}",
                tensor.shape
            ),
        ));
    }
    // With a zero dimension the elements bound nothing: bound the empty arrays instead.
    let limit = count.saturating_add(MAX_EMPTY_ARRAYS);
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
    Ok(())
}

impl Serialize for Predictions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut body = serializer.serialize_map(Some(1))?;
        body.serialize_entry("predictions", &Body(&self.layout))?;
        body.end()
    }
}

struct Body<'l, 'a>(&'l Layout<'a>);

impl Serialize for Body<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Layout::One(tensor) => Cursor::new(tensor)
                .nested(&tensor.shape)
                .serialize(serializer),
            Layout::Rows(n, outputs) => {
                let cursors: Vec<Cursor<'_>> = outputs.iter().map(|t| Cursor::new(t)).collect();
                let mut rows = serializer.serialize_seq(usize::try_from(*n).ok())?;
                for _ in 0..*n {
                    rows.serialize_element(&Row {
                        outputs,
                        cursors: &cursors,
                    })?;
                }
                rows.end()
            }
            Layout::Object(outputs) => {
                let mut map = serializer.serialize_map(Some(outputs.len()))?;
                for tensor in outputs {
                    map.serialize_entry(&tensor.name, &Cursor::new(tensor).nested(&tensor.shape))?;
                }
                map.end()
            }
        }
    }
}

/// The next row of every output, as one object.
struct Row<'r, 'a> {
    outputs: &'r [&'a Tensor],
    cursors: &'r [Cursor<'a>],
}

impl Serialize for Row<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.outputs.len()))?;
        for (tensor, cursor) in self.outputs.iter().zip(self.cursors) {
            let row_shape = tensor.shape.get(1..).unwrap_or_default();
            map.serialize_entry(&tensor.name, &cursor.nested(row_shape))?;
        }
        map.end()
    }
}
