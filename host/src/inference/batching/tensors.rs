//! Joining the inputs of several requests into one batch along the batch dimension, and
//! cutting a batched output back into each request's slice.
//!
//! Tensors are row-major: along dimension `d`, a tensor is `outer` blocks (the product of
//! the dimensions before `d`), each holding its `dims[d]` rows of `inner` bytes. Joining
//! interleaves the members' blocks; for `d = 0` that is plain concatenation.

use super::super::types::wasi_nn_size;
use wasmtime_wasi_nn::Tensor;

/// Why a batched tensor could not be joined or cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SliceError {
    /// The tensor has no dimension `d`.
    #[error("has {rank} dimensions, so no batch dimension {dimension}")]
    NoBatchDimension {
        /// Its rank.
        rank: usize,
        /// The batch dimension.
        dimension: usize,
    },
    /// The output's batch dimension is not the batch's total.
    #[error("has {got} rows along the batch dimension, the batch holds {want}")]
    RowsDiffer {
        /// Rows found.
        got: usize,
        /// Rows the batch holds.
        want: usize,
    },
    /// Data length does not match dimensions and type.
    #[error("holds {got} bytes, its shape and type need {want}")]
    Length {
        /// Bytes found.
        got: usize,
        /// Bytes needed.
        want: usize,
    },
}

/// `(outer, rows, inner_bytes)` of a tensor along dimension `d`.
fn layout(tensor: &Tensor, d: usize) -> Result<(usize, usize, usize), SliceError> {
    let dims = &tensor.dimensions;
    if d >= dims.len() {
        return Err(SliceError::NoBatchDimension {
            rank: dims.len(),
            dimension: d,
        });
    }
    let product = |ds: &[u32]| ds.iter().map(|&x| x as usize).product::<usize>();
    let outer = product(&dims[..d]);
    let rows = dims[d] as usize;
    let inner = product(&dims[d + 1..]) * wasi_nn_size(tensor.ty);
    let want = outer * rows * inner;
    if tensor.data.len() != want {
        return Err(SliceError::Length {
            got: tensor.data.len(),
            want,
        });
    }
    Ok((outer, rows, inner))
}

/// Joins `parts` (same type, same dimensions except `d`, lengths already checked by the
/// engine's input check) into one tensor along `d`.
pub fn join(parts: &[&Tensor], d: usize) -> Result<Tensor, SliceError> {
    let Some(first) = parts.first() else {
        return Err(SliceError::Length { got: 0, want: 1 });
    };
    let mut layouts = Vec::with_capacity(parts.len());
    for part in parts {
        layouts.push(layout(part, d)?);
    }
    let rows: usize = layouts.iter().map(|l| l.1).sum();
    let total: usize = parts.iter().map(|p| p.data.len()).sum();
    let mut data = Vec::with_capacity(total);
    let outer = layouts[0].0;
    for o in 0..outer {
        for (part, &(_, r, inner)) in parts.iter().zip(&layouts) {
            let block = r * inner;
            data.extend_from_slice(&part.data[o * block..(o + 1) * block]);
        }
    }
    let mut dimensions = first.dimensions.clone();
    dimensions[d] = u32::try_from(rows).map_err(|_| SliceError::RowsDiffer {
        got: rows,
        want: u32::MAX as usize,
    })?;
    Ok(Tensor::new(dimensions, first.ty, data))
}

/// Cuts `batched` along `d` into slices of `rows[i]` rows each.
pub fn split(batched: &Tensor, d: usize, rows: &[usize]) -> Result<Vec<Tensor>, SliceError> {
    let (outer, got, inner) = layout(batched, d)?;
    let want: usize = rows.iter().sum();
    if got != want {
        return Err(SliceError::RowsDiffer { got, want });
    }
    let mut parts: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| Vec::with_capacity(outer * r * inner))
        .collect();
    let mut at = 0;
    for _ in 0..outer {
        for (part, &r) in parts.iter_mut().zip(rows) {
            let block = r * inner;
            part.extend_from_slice(&batched.data[at..at + block]);
            at += block;
        }
    }
    Ok(parts
        .into_iter()
        .zip(rows)
        .map(|(data, &r)| {
            let mut dimensions = batched.dimensions.clone();
            // `r` is at most `got`, which came from a u32.
            dimensions[d] = r as u32;
            Tensor::new(dimensions, batched.ty, data)
        })
        .collect())
}
