//! Encoding JSON values into little-endian tensor elements and back, for every element
//! type, including f16 / bf16 rounding and length-prefixed BYTES.

use super::CodecError;
use crate::runtime::ElementType;
use serde_json::Value;

/// The KServe V2 datatype name of an element type.
pub fn v2_datatype(t: ElementType) -> &'static str {
    match t {
        ElementType::Bool => "BOOL",
        ElementType::U8 => "UINT8",
        ElementType::U16 => "UINT16",
        ElementType::U32 => "UINT32",
        ElementType::U64 => "UINT64",
        ElementType::I8 => "INT8",
        ElementType::I16 => "INT16",
        ElementType::I32 => "INT32",
        ElementType::I64 => "INT64",
        ElementType::F16 => "FP16",
        ElementType::Bf16 => "BF16",
        ElementType::F32 => "FP32",
        ElementType::F64 => "FP64",
        ElementType::Bytes => "BYTES",
    }
}

/// The element type a KServe V2 datatype name stands for.
pub fn element_type_from_v2(name: &str) -> Option<ElementType> {
    Some(match name {
        "BOOL" => ElementType::Bool,
        "UINT8" => ElementType::U8,
        "UINT16" => ElementType::U16,
        "UINT32" => ElementType::U32,
        "UINT64" => ElementType::U64,
        "INT8" => ElementType::I8,
        "INT16" => ElementType::I16,
        "INT32" => ElementType::I32,
        "INT64" => ElementType::I64,
        "FP16" => ElementType::F16,
        "BF16" => ElementType::Bf16,
        "FP32" => ElementType::F32,
        "FP64" => ElementType::F64,
        "BYTES" => ElementType::Bytes,
        _ => return None,
    })
}

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

/// Decodes every element of `data` (of type `t`) into JSON values.
/// `None` when the data length does not fit the type.
pub(crate) fn decode(t: ElementType, data: &[u8]) -> Option<Vec<Value>> {
    fn chunks<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Option<Vec<T>> {
        if !data.len().is_multiple_of(N) {
            return None;
        }
        Some(
            data.chunks_exact(N)
                .map(|c| {
                    let mut raw = [0u8; N];
                    raw.copy_from_slice(c);
                    f(raw)
                })
                .collect(),
        )
    }
    let number = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
    Some(match t {
        ElementType::Bool => data.iter().map(|&b| Value::Bool(b != 0)).collect(),
        ElementType::U8 => data.iter().map(|&b| Value::from(b)).collect(),
        ElementType::I8 => data.iter().map(|&b| Value::from(b as i8)).collect(),
        ElementType::U16 => chunks(data, |r| Value::from(u16::from_le_bytes(r)))?,
        ElementType::I16 => chunks(data, |r| Value::from(i16::from_le_bytes(r)))?,
        ElementType::U32 => chunks(data, |r| Value::from(u32::from_le_bytes(r)))?,
        ElementType::I32 => chunks(data, |r| Value::from(i32::from_le_bytes(r)))?,
        ElementType::U64 => chunks(data, |r| Value::from(u64::from_le_bytes(r)))?,
        ElementType::I64 => chunks(data, |r| Value::from(i64::from_le_bytes(r)))?,
        ElementType::F16 => chunks(data, |r| {
            number(f64::from(f16_to_f32(u16::from_le_bytes(r))))
        })?,
        ElementType::Bf16 => chunks(data, |r| {
            number(f64::from(f32::from_bits(
                u32::from(u16::from_le_bytes(r)) << 16,
            )))
        })?,
        ElementType::F32 => chunks(data, |r| number(f64::from(f32::from_le_bytes(r))))?,
        ElementType::F64 => chunks(data, |r| number(f64::from_le_bytes(r)))?,
        ElementType::Bytes => {
            let mut items = Vec::new();
            let mut rest = data;
            while !rest.is_empty() {
                let (len, tail) = rest.split_first_chunk::<4>()?;
                let len = u32::from_le_bytes(*len) as usize;
                if tail.len() < len {
                    return None;
                }
                let (item, tail) = tail.split_at(len);
                items.push(Value::String(String::from_utf8_lossy(item).into_owned()));
                rest = tail;
            }
            items
        }
    })
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
        assert_eq!(
            decode(ElementType::I16, &out).unwrap(),
            vec![Value::from(-3)]
        );
    }
}
