//! Encoding JSON values into little-endian tensor elements and back, for every element
//! type, including f16 / bf16 rounding and length-prefixed BYTES. Decoding is lazy
//! ([`Elements`]): answers are serialized element by element, never held as JSON values.

use super::CodecError;
use crate::runtime::{v2_datatype, ElementType};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// Appends `value` as one element of type `t` to `out`; `field` names it in errors.
pub(crate) fn encode(
    t: ElementType,
    value: &Value,
    field: &dyn Fn() -> String,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let int = |min: i128, max: i128| -> Result<i128, CodecError> {
        let n = value
            .as_i64()
            .map(i128::from)
            .or_else(|| value.as_u64().map(i128::from))
            .ok_or_else(|| {
                CodecError::field(field(), format!("expected an integer, got {value}"))
            })?;
        if n < min || n > max {
            return Err(CodecError::field(
                field(),
                format!("{n} is out of range for {}", v2_datatype(t)),
            ));
        }
        Ok(n)
    };
    let float = || -> Result<f64, CodecError> {
        value
            .as_f64()
            .ok_or_else(|| CodecError::field(field(), format!("expected a number, got {value}")))
    };
    match t {
        ElementType::Bool => {
            let b = value.as_bool().ok_or_else(|| {
                CodecError::field(field(), format!("expected true or false, got {value}"))
            })?;
            out.push(u8::from(b));
        }
        ElementType::U8 => out.push(int(0, u8::MAX.into())? as u8),
        ElementType::I8 => {
            out.extend_from_slice(&(int(i8::MIN.into(), i8::MAX.into())? as i8).to_le_bytes())
        }
        ElementType::U16 => out.extend_from_slice(&(int(0, u16::MAX.into())? as u16).to_le_bytes()),
        ElementType::I16 => {
            out.extend_from_slice(&(int(i16::MIN.into(), i16::MAX.into())? as i16).to_le_bytes())
        }
        ElementType::U32 => out.extend_from_slice(&(int(0, u32::MAX.into())? as u32).to_le_bytes()),
        ElementType::I32 => {
            out.extend_from_slice(&(int(i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes())
        }
        ElementType::U64 => out.extend_from_slice(&(int(0, u64::MAX.into())? as u64).to_le_bytes()),
        ElementType::I64 => {
            out.extend_from_slice(&(int(i64::MIN.into(), i64::MAX.into())? as i64).to_le_bytes())
        }
        ElementType::F16 => out.extend_from_slice(&f32_to_f16(float()? as f32).to_le_bytes()),
        ElementType::Bf16 => out.extend_from_slice(&f32_to_bf16(float()? as f32).to_le_bytes()),
        ElementType::F32 => out.extend_from_slice(&(float()? as f32).to_le_bytes()),
        ElementType::F64 => out.extend_from_slice(&float()?.to_le_bytes()),
        ElementType::Bytes => {
            let s = value.as_str().ok_or_else(|| {
                CodecError::field(field(), format!("expected a string, got {value}"))
            })?;
            let len = u32::try_from(s.len())
                .map_err(|_| CodecError::field(field(), "string longer than 4 GiB"))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    Ok(())
}

/// Whether `t` is a float type (FP16, BF16, FP32, FP64).
pub(crate) fn is_float(t: ElementType) -> bool {
    matches!(
        t,
        ElementType::F16 | ElementType::Bf16 | ElementType::F32 | ElementType::F64
    )
}

/// Writes the number `v` as an element of the float type `t`, converted as [`encode`]
/// converts a JSON number, and says so; writes nothing for any other type (the caller
/// then goes through [`encode`]). The codecs' fast path for float data.
pub(crate) fn push_float(t: ElementType, v: f64, out: &mut Vec<u8>) -> bool {
    match t {
        ElementType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        ElementType::F64 => out.extend_from_slice(&v.to_le_bytes()),
        ElementType::F16 => out.extend_from_slice(&f32_to_f16(v as f32).to_le_bytes()),
        ElementType::Bf16 => out.extend_from_slice(&f32_to_bf16(v as f32).to_le_bytes()),
        _ => return false,
    }
    true
}

/// Bytes per element of a fixed-size type; `None` for BYTES (length-prefixed).
pub(crate) fn fixed_size(t: ElementType) -> Option<usize> {
    Some(match t {
        ElementType::Bool | ElementType::U8 | ElementType::I8 => 1,
        ElementType::U16 | ElementType::I16 | ElementType::F16 | ElementType::Bf16 => 2,
        ElementType::U32 | ElementType::I32 | ElementType::F32 => 4,
        ElementType::U64 | ElementType::I64 | ElementType::F64 => 8,
        ElementType::Bytes => return None,
    })
}

/// How many elements of type `t` `data` holds; `None` when its length does not fit the
/// type (or a BYTES length prefix runs past the end). Reads nothing into memory.
pub(crate) fn element_count(t: ElementType, data: &[u8]) -> Option<u64> {
    if let Some(size) = fixed_size(t) {
        return data
            .len()
            .is_multiple_of(size)
            .then_some((data.len() / size) as u64);
    }
    let mut count = 0u64;
    let mut rest = data;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        rest = tail.get(len..)?;
        count += 1;
    }
    Some(count)
}

/// One element of a tensor, decoded on demand, serialized as its JSON value: BYTES as a
/// (lossy UTF-8) string, non-finite floats as `null`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Element<'a> {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bytes(&'a [u8]),
}

impl Serialize for Element<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Bool(b) => serializer.serialize_bool(b),
            Self::Int(n) => serializer.serialize_i64(n),
            Self::UInt(n) => serializer.serialize_u64(n),
            Self::Float(v) if v.is_finite() => serializer.serialize_f64(v),
            Self::Float(_) => serializer.serialize_unit(),
            Self::Bytes(b) => serializer.serialize_str(&String::from_utf8_lossy(b)),
        }
    }
}

/// The elements of `data` (of type `t`) in order, decoded one at a time. Stops early at
/// anything that does not fit the type: check with [`element_count`] first.
#[derive(Debug, Clone)]
pub(crate) struct Elements<'a> {
    t: ElementType,
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    pub(crate) fn new(t: ElementType, data: &'a [u8]) -> Self {
        Self { t, rest: data }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (raw, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(*raw)
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Element<'a>> {
        let float = |v: f32| Element::Float(f64::from(v));
        Some(match self.t {
            ElementType::Bool => Element::Bool(self.take::<1>()?[0] != 0),
            ElementType::U8 => Element::UInt(self.take::<1>()?[0].into()),
            ElementType::I8 => Element::Int(i8::from_le_bytes(self.take()?).into()),
            ElementType::U16 => Element::UInt(u16::from_le_bytes(self.take()?).into()),
            ElementType::I16 => Element::Int(i16::from_le_bytes(self.take()?).into()),
            ElementType::U32 => Element::UInt(u32::from_le_bytes(self.take()?).into()),
            ElementType::I32 => Element::Int(i32::from_le_bytes(self.take()?).into()),
            ElementType::U64 => Element::UInt(u64::from_le_bytes(self.take()?)),
            ElementType::I64 => Element::Int(i64::from_le_bytes(self.take()?)),
            ElementType::F16 => float(f16_to_f32(u16::from_le_bytes(self.take()?))),
            ElementType::Bf16 => float(f32::from_bits(
                u32::from(u16::from_le_bytes(self.take()?)) << 16,
            )),
            ElementType::F32 => float(f32::from_le_bytes(self.take()?)),
            ElementType::F64 => Element::Float(f64::from_le_bytes(self.take()?)),
            ElementType::Bytes => {
                let len = u32::from_le_bytes(self.take()?) as usize;
                if self.rest.len() < len {
                    self.rest = &[];
                    return None;
                }
                let (item, tail) = self.rest.split_at(len);
                self.rest = tail;
                Element::Bytes(item)
            }
        })
    }
}

/// Rounds an f32 to the nearest IEEE half (ties to even), saturating to infinity.
pub(crate) fn f32_to_f16(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exponent = ((x >> 23) & 0xff) as i32;
    let mantissa = x & 0x7f_ffff;
    if exponent == 0xff {
        return sign | 0x7c00 | if mantissa != 0 { 0x200 } else { 0 };
    }
    let e = exponent - 127 + 15;
    let round = |value: u32, shift: u32| -> u32 {
        let kept = value >> shift;
        let rest = value & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        if rest > halfway || (rest == halfway && kept & 1 == 1) {
            kept + 1
        } else {
            kept
        }
    };
    if e >= 0x1f {
        sign | 0x7c00
    } else if e <= 0 {
        if e < -10 {
            return sign;
        }
        sign | round(mantissa | 0x80_0000, (14 - e) as u32) as u16
    } else {
        // A carry out of the mantissa correctly bumps the exponent (up to infinity).
        sign | round(((e as u32) << 23) | mantissa, 13) as u16
    }
}

/// Widens an IEEE half to f32 (exact).
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
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

/// Rounds an f32 to the nearest bfloat16 (ties to even).
pub(crate) fn f32_to_bf16(v: f32) -> u16 {
    let x = v.to_bits();
    if v.is_nan() {
        return ((x >> 16) as u16) | 0x40;
    }
    let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1));
    (rounded >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_round_trips_and_rounds() {
        for v in [
            0.0f32,
            1.0,
            -2.5,
            65504.0,
            6.1035156e-5,
            5.9604645e-8,
            0.333,
        ] {
            let back = f16_to_f32(f32_to_f16(v));
            assert!((back - v).abs() <= v.abs() * 1e-3 + 6e-8, "{v} -> {back}");
        }
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00, "tie rounds to even");
    }

    #[test]
    fn bfloat16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(-2.0), 0xc000);
        assert!(f32::from_bits(u32::from(f32_to_bf16(f32::NAN)) << 16).is_nan());
    }

    #[test]
    fn integers_are_range_checked() {
        let mut out = Vec::new();
        let field = || "x".to_string();
        assert!(encode(ElementType::U8, &Value::from(256), &field, &mut out).is_err());
        assert!(encode(ElementType::I64, &Value::from(1.5), &field, &mut out).is_err());
        encode(ElementType::I16, &Value::from(-3), &field, &mut out).unwrap();
        assert_eq!(element_count(ElementType::I16, &out), Some(1));
        assert_eq!(
            Elements::new(ElementType::I16, &out).collect::<Vec<_>>(),
            [Element::Int(-3)]
        );
        assert_eq!(element_count(ElementType::I16, &out[..1]), None);
        assert_eq!(
            element_count(ElementType::Bytes, b"\x02\0\0\0ab\0\0\0\0"),
            Some(2)
        );
        assert_eq!(element_count(ElementType::Bytes, b"\x03\0\0\0ab"), None);
    }
}
