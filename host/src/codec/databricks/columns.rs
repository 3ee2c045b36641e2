//! A table read column by column (one [`Walk`] per column, each cell a block of rows)
//! turned into tensors: one `[rows, ...cell dims]` tensor per column, or the columns
//! joined into one `[rows, columns]` tensor when they are all single values of one type.

use super::names::declared;
use super::stream::Walk;
use super::CodecError;
use crate::codec::elements::fixed_size;
use crate::package::Signature;
use crate::runtime::{ElementType, Tensor};

/// The tensors of `columns`, read into `walks` over `rows` rows.
///
/// A column of single values declared with shape `[-1, 1]` (or `[-1, -1]`) becomes
/// `[rows, 1]`. With `join`, columns that are all single values of one element type
/// become one `[rows, columns]` tensor of that name instead.
pub(super) fn column_tensors<S: AsRef<str>>(
    columns: &[S],
    walks: Vec<Walk<'_>>,
    rows: u64,
    signature: Option<&Signature>,
    join: Option<&str>,
) -> Result<Vec<Tensor>, CodecError> {
    let joinable = walks.iter().all(|w| w.dims_from(1).is_empty())
        && walks
            .windows(2)
            .all(|w| w[0].element_type() == w[1].element_type());
    let mut tensors = Vec::with_capacity(columns.len());
    for (column, walk) in columns.iter().zip(walks) {
        let column = column.as_ref();
        let mut shape = vec![rows];
        shape.extend(walk.dims_from(1));
        let column_of_values = shape.len() == 1
            && declared(signature, column)
                .is_some_and(|d| matches!(d.shape.as_slice(), [_, 1 | -1]));
        if column_of_values {
            shape.push(1);
        }
        let (_, element_type, data) = walk.finish()?;
        tensors.push(Tensor {
            name: column.to_owned(),
            shape,
            element_type,
            data,
        });
    }
    match join {
        Some(name) if joinable => Ok(vec![joined(name, tensors, rows)]),
        _ => Ok(tensors),
    }
}

/// Columns of single values of one element type, interleaved into `[rows, columns]`.
fn joined(name: &str, columns: Vec<Tensor>, rows: u64) -> Tensor {
    let element_type = columns.first().map_or(ElementType::F32, |t| t.element_type);
    let total: usize = columns.iter().map(|t| t.data.len()).sum();
    let mut data = Vec::with_capacity(total);
    let mut offsets = vec![0usize; columns.len()];
    for _ in 0..rows {
        for (column, offset) in columns.iter().zip(&mut offsets) {
            let rest = column.data.get(*offset..).unwrap_or_default();
            let len = match fixed_size(element_type) {
                Some(size) => size,
                None => rest
                    .first_chunk::<4>()
                    .map_or(0, |len| 4 + u32::from_le_bytes(*len) as usize),
            };
            let cell = rest.get(..len).unwrap_or_default();
            data.extend_from_slice(cell);
            *offset += cell.len();
        }
    }
    Tensor {
        name: name.to_owned(),
        shape: vec![rows, columns.len() as u64],
        element_type,
        data,
    }
}
