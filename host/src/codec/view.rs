//! Serializing a handler's output tensors straight from their little-endian bytes: flat
//! (V2 `data`) or nested by shape (Databricks `predictions`). Nothing is decoded ahead of
//! time, so encoding an answer costs the JSON text it writes and nothing per element.
//!
//! Callers check the tensor first ([`super::elements::element_count`] and the shape):
//! a view that runs out of elements writes `null` rather than failing half-way.

use super::elements::Elements;
use crate::runtime::Tensor;
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use std::cell::RefCell;

/// A tensor's elements as one flat JSON array.
pub(crate) struct Flat<'a>(pub &'a Tensor);

impl Serialize for Flat<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for element in Elements::new(self.0.element_type, &self.0.data) {
            seq.serialize_element(&element)?;
        }
        seq.end()
    }
}

/// A cursor over a tensor's elements, handed out in row-major order to nested views.
pub(crate) struct Cursor<'a>(RefCell<Elements<'a>>);

impl<'a> Cursor<'a> {
    pub(crate) fn new(tensor: &'a Tensor) -> Self {
        Self(RefCell::new(Elements::new(
            tensor.element_type,
            &tensor.data,
        )))
    }

    /// The next `shape`-shaped block of elements, serialized as nested arrays (a single
    /// value for shape `[]`). Blocks must be serialized in the order they are taken.
    pub(crate) fn nested<'c>(&'c self, shape: &'c [u64]) -> Nested<'c, 'a> {
        Nested {
            cursor: self,
            shape,
        }
    }
}

/// See [`Cursor::nested`].
pub(crate) struct Nested<'c, 'a> {
    cursor: &'c Cursor<'a>,
    shape: &'c [u64],
}

impl Serialize for Nested<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.shape.split_first() {
            None => {
                let next = self.cursor.0.borrow_mut().next();
                match next {
                    Some(element) => element.serialize(serializer),
                    None => serializer.serialize_unit(),
                }
            }
            Some((&d, rest)) => {
                let mut seq = serializer.serialize_seq(usize::try_from(d).ok())?;
                for _ in 0..d {
                    seq.serialize_element(&self.cursor.nested(rest))?;
                }
                seq.end()
            }
        }
    }
}
