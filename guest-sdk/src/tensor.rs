//! Typed tensors: element types, shape checks and zero-copy typed views of tensor data.

use std::borrow::Cow;
use std::fmt;

/// Element type of a tensor: the KServe V2 datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// One byte per element, 0 or 1.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// IEEE half precision, stored as its 16 raw bits.
    F16,
    /// bfloat16, stored as its 16 raw bits.
    Bf16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Byte strings: each element is a little-endian u32 length and that many bytes.
    Bytes,
}

impl ElementType {
    /// Size of one element in bytes, or `None` for variable-length [`ElementType::Bytes`].
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
            Self::Bytes => return None,
        })
    }

    /// The KServe V2 name of this type (`FP32`, `INT64`, `BYTES`, ...).
    pub fn v2_name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "UINT8",
            Self::U16 => "UINT16",
            Self::U32 => "UINT32",
            Self::U64 => "UINT64",
            Self::I8 => "INT8",
            Self::I16 => "INT16",
            Self::I32 => "INT32",
            Self::I64 => "INT64",
            Self::F16 => "FP16",
            Self::Bf16 => "BF16",
            Self::F32 => "FP32",
            Self::F64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

/// A Rust number type that is the element type of a tensor.
///
/// Implemented for `u8`, `u16`, `u32`, `u64`, `i8`, `i16`, `i32`, `i64`, `f32` and `f64`.
pub trait Element: Copy + sealed::Sealed + 'static {
    /// The tensor element type this Rust type stands for.
    const ELEMENT_TYPE: ElementType;
    /// Decodes one element from its little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// Appends this element's little-endian bytes.
    fn extend_le(self, out: &mut Vec<u8>);
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! element {
    ($($t:ty => $e:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const ELEMENT_TYPE: ElementType = ElementType::$e;
            fn from_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
            fn extend_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

element!(
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    f32 => F32, f64 => F64,
);

/// Why a tensor does not fit what a handler expects. Converts into
/// [`crate::HandlerError::InvalidInput`], so `?` reports it to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorError {
    /// The request has no input with this name.
    MissingInput(String),
    /// The request has the wrong number of inputs.
    InputCount {
        /// How many inputs the handler takes.
        expected: usize,
        /// How many the request has.
        actual: usize,
    },
    /// The tensor has another element type.
    ElementType {
        /// Tensor name.
        name: String,
        /// What the handler asked for.
        expected: ElementType,
        /// What the tensor holds.
        actual: ElementType,
    },
    /// The tensor has another shape.
    Shape {
        /// Tensor name.
        name: String,
        /// What the handler asked for (`None` = any size).
        expected: Vec<Option<u64>>,
        /// What the tensor has.
        actual: Vec<u64>,
    },
    /// The data length does not match shape and element type.
    DataLength {
        /// Tensor name.
        name: String,
        /// Bytes the shape and element type call for.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingInput(name) => write!(f, "missing input tensor `{name}`"),
            Self::InputCount { expected, actual } => {
                write!(f, "expected {expected} input tensor(s), got {actual}")
            }
            Self::ElementType {
                name,
                expected,
                actual,
            } => write!(f, "tensor `{name}` must be {expected}, got {actual}"),
            Self::Shape {
                name,
                expected,
                actual,
            } => {
                let dims: Vec<String> = expected
                    .iter()
                    .map(|d| d.map_or_else(|| "-1".to_string(), |d| d.to_string()))
                    .collect();
                write!(
                    f,
                    "tensor `{name}` must have shape [{}], got {actual:?}",
                    dims.join(", ")
                )
            }
            Self::DataLength {
                name,
                expected,
                actual,
            } => write!(
                f,
                "tensor `{name}` holds {actual} bytes but its shape and type need {expected}"
            ),
        }
    }
}

impl std::error::Error for TensorError {}

/// A named, typed, row-major tensor with little-endian data.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    /// Input or output name.
    pub name: String,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<u64>,
    /// Element type.
    pub element_type: ElementType,
    /// Row-major little-endian data.
    pub data: Vec<u8>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("element_type", &self.element_type)
            .field("data_bytes", &self.data.len())
            .finish()
    }
}

impl Tensor {
    /// A tensor from raw parts; checks that the data length fits shape and type.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<u64>,
        element_type: ElementType,
        data: Vec<u8>,
    ) -> Result<Self, TensorError> {
        let tensor = Self {
            name: name.into(),
            shape,
            element_type,
            data,
        };
        tensor.check_data_length()?;
        Ok(tensor)
    }

    /// A tensor holding `values` with the given shape.
    ///
    /// ```
    /// # use sandserve_sdk::{Tensor, ElementType};
    /// let t = Tensor::from_values("x", vec![2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    /// assert_eq!(t.element_type, ElementType::F32);
    /// assert_eq!(t.as_slice::<f32>().unwrap().as_ref(), &[1.0, 2.0, 3.0, 4.0]);
    /// ```
    pub fn from_values<T: Element>(
        name: impl Into<String>,
        shape: Vec<u64>,
        values: &[T],
    ) -> Result<Self, TensorError> {
        let mut data = Vec::with_capacity(std::mem::size_of_val(values));
        for v in values {
            v.extend_le(&mut data);
        }
        Self::new(name, shape, T::ELEMENT_TYPE, data)
    }

    /// A `BYTES` tensor of shape `[n]` holding the given strings.
    pub fn from_strings<S: AsRef<[u8]>>(
        name: impl Into<String>,
        values: &[S],
    ) -> Result<Self, TensorError> {
        let mut data = Vec::new();
        for v in values {
            let v = v.as_ref();
            data.extend_from_slice(&(v.len() as u32).to_le_bytes());
            data.extend_from_slice(v);
        }
        Self::new(name, vec![values.len() as u64], ElementType::Bytes, data)
    }

    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn element_count(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Checks that the data length matches shape and element type (for `BYTES`, that the
    /// length prefixes walk the data exactly, element by element).
    pub fn check_data_length(&self) -> Result<(), TensorError> {
        let count = self.element_count() as usize;
        let expected = match self.element_type.size() {
            Some(size) => count.saturating_mul(size),
            None => match self.bytes_elements() {
                Some(items) if items.len() == count => return Ok(()),
                _ => {
                    return Err(TensorError::DataLength {
                        name: self.name.clone(),
                        expected: count,
                        actual: self.data.len(),
                    })
                }
            },
        };
        if expected == self.data.len() {
            Ok(())
        } else {
            Err(TensorError::DataLength {
                name: self.name.clone(),
                expected,
                actual: self.data.len(),
            })
        }
    }

    /// Checks the element type.
    pub fn expect_type(&self, expected: ElementType) -> Result<&Self, TensorError> {
        if self.element_type == expected {
            Ok(self)
        } else {
            Err(TensorError::ElementType {
                name: self.name.clone(),
                expected,
                actual: self.element_type,
            })
        }
    }

    /// Checks the shape; `None` matches any size in that dimension.
    ///
    /// ```
    /// # use sandserve_sdk::Tensor;
    /// let t = Tensor::from_values("x", vec![3, 64], &[0f32; 192]).unwrap();
    /// assert!(t.expect_shape(&[None, Some(64)]).is_ok());
    /// assert!(t.expect_shape(&[None, Some(10)]).is_err());
    /// ```
    pub fn expect_shape(&self, expected: &[Option<u64>]) -> Result<&Self, TensorError> {
        let fits = expected.len() == self.shape.len()
            && expected
                .iter()
                .zip(&self.shape)
                .all(|(want, have)| want.is_none_or(|w| w == *have));
        if fits {
            Ok(self)
        } else {
            Err(TensorError::Shape {
                name: self.name.clone(),
                expected: expected.to_vec(),
                actual: self.shape.clone(),
            })
        }
    }

    /// The data as a slice of `T`: borrowed when the buffer is aligned (the usual case),
    /// copied otherwise. Fails when the element type is not `T`.
    pub fn as_slice<T: Element>(&self) -> Result<Cow<'_, [T]>, TensorError> {
        self.expect_type(T::ELEMENT_TYPE)?;
        self.check_data_length()?;
        // SAFETY: every `Element` is a plain number type for which any bit pattern is valid,
        // and `align_to` only yields the correctly aligned middle part.
        let (head, body, tail) = unsafe { self.data.align_to::<T>() };
        if head.is_empty() && tail.is_empty() {
            Ok(Cow::Borrowed(body))
        } else {
            Ok(Cow::Owned(self.decode()))
        }
    }

    /// The data copied into a `Vec<T>`. Fails when the element type is not `T`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        Ok(self.as_slice::<T>()?.into_owned())
    }

    /// Any numeric tensor converted to `f32` (f16 / bf16 widened, integers cast).
    pub fn to_f32_lossy(&self) -> Result<Vec<f32>, TensorError> {
        self.check_data_length()?;
        let d = &self.data;
        Ok(match self.element_type {
            ElementType::F32 => self.decode::<f32>(),
            ElementType::F64 => self.decode::<f64>().into_iter().map(|v| v as f32).collect(),
            ElementType::F16 => d
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            ElementType::Bf16 => d
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            ElementType::Bool | ElementType::U8 => d.iter().map(|&v| f32::from(v)).collect(),
            ElementType::I8 => d.iter().map(|&v| f32::from(v as i8)).collect(),
            ElementType::U16 => self.decode::<u16>().into_iter().map(f32::from).collect(),
            ElementType::I16 => self.decode::<i16>().into_iter().map(f32::from).collect(),
            ElementType::U32 => self.decode::<u32>().into_iter().map(|v| v as f32).collect(),
            ElementType::I32 => self.decode::<i32>().into_iter().map(|v| v as f32).collect(),
            ElementType::U64 => self.decode::<u64>().into_iter().map(|v| v as f32).collect(),
            ElementType::I64 => self.decode::<i64>().into_iter().map(|v| v as f32).collect(),
            ElementType::Bytes => {
                return Err(TensorError::ElementType {
                    name: self.name.clone(),
                    expected: ElementType::F32,
                    actual: ElementType::Bytes,
                })
            }
        })
    }

    /// The elements of a `BYTES` tensor, or `None` when the data is not well formed.
    pub fn bytes_elements(&self) -> Option<Vec<&[u8]>> {
        if self.element_type != ElementType::Bytes {
            return None;
        }
        let mut items = Vec::new();
        let mut rest = self.data.as_slice();
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return None;
            }
            let (item, tail) = tail.split_at(len);
            items.push(item);
            rest = tail;
        }
        Some(items)
    }

    fn decode<T: Element>(&self) -> Vec<T> {
        self.data
            .chunks_exact(std::mem::size_of::<T>())
            .map(T::from_le)
            .collect()
    }
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f32::from(bits & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        0x1f if mantissa == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        e => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_numeric_type() {
        let t = Tensor::from_values("a", vec![3], &[1i64, -2, 3]).unwrap();
        assert_eq!(t.to_vec::<i64>().unwrap(), vec![1, -2, 3]);
        assert!(t.to_vec::<i32>().is_err());
        let t = Tensor::from_values("b", vec![2], &[1.5f64, -2.25]).unwrap();
        assert_eq!(t.to_f32_lossy().unwrap(), vec![1.5, -2.25]);
    }

    #[test]
    fn rejects_wrong_data_length() {
        let err = Tensor::new("x", vec![2, 2], ElementType::F32, vec![0; 12]).unwrap_err();
        assert!(matches!(
            err,
            TensorError::DataLength {
                expected: 16,
                actual: 12,
                ..
            }
        ));
    }

    #[test]
    fn walks_bytes_elements() {
        let t = Tensor::from_strings("s", &["ab", "", "xyz"]).unwrap();
        let items = t.bytes_elements().unwrap();
        assert_eq!(items, vec![&b"ab"[..], b"", b"xyz"]);
        let broken = Tensor {
            data: vec![9, 0, 0, 0, 1],
            ..t
        };
        assert!(broken.check_data_length().is_err());
    }

    #[test]
    fn widens_half_precision() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
