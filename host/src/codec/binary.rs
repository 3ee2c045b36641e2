//! The binary tensor data extension of KServe V2 (as Triton and tritonclient speak it).
//!
//! A request body may be a JSON header followed by raw tensor bytes: the
//! `Inference-Header-Content-Length` HTTP header gives the JSON's length, and each input
//! whose data travels in binary form says how many bytes it takes with
//! `parameters.binary_data_size` (inputs take their bytes in order). Fixed-size elements
//! are little-endian, BYTES elements a 4-byte little-endian length and the bytes: exactly
//! the form handlers see, so an input's bytes are copied once, into its tensor, and
//! never decoded (BOOL bytes and BYTES prefixes are checked, not converted). An answer
//! with binary outputs is a JSON header and then each binary output's bytes, moved out of
//! the handler's response, never copied.
//!
//! Every size is checked against what is really there before anything is allocated: a
//! request costs its body plus the tensors it becomes, as the JSON form does.

use super::elements::{element_count, fixed_size};
use super::{v2_datatype, CodecError};
use crate::runtime::ElementType;

/// The HTTP header that gives the JSON part's length in bytes.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

/// Splits a body into its JSON header and the binary data after it. `header_length`
/// is the raw value of [`HEADER_LENGTH`], when the request had one.
pub fn split_body<'b>(
    body: &'b [u8],
    header_length: Option<&str>,
) -> Result<(&'b [u8], &'b [u8]), CodecError> {
    let Some(text) = header_length else {
        return Ok((body, &[]));
    };
    let length = text
        .trim()
        .parse::<u64>()
        .map_err(|_| {
            CodecError::field(
                HEADER_LENGTH,
                format!("`{text}` is not a byte count (a non-negative integer)"),
            )
        })
        .and_then(|n| {
            usize::try_from(n)
                .ok()
                .filter(|&n| n <= body.len())
                .ok_or_else(|| {
                    CodecError::field(
                        HEADER_LENGTH,
                        format!(
                            "{n} bytes of JSON header, but the body has only {} bytes",
                            body.len()
                        ),
                    )
                })
        })?;
    Ok(body.split_at(length))
}

/// The binary data after the JSON header, handed out to inputs in order.
#[derive(Debug)]
pub struct BinarySection<'b> {
    rest: &'b [u8],
    taken: usize,
}

impl<'b> BinarySection<'b> {
    /// The data after the JSON header.
    pub fn new(data: &'b [u8]) -> Self {
        Self {
            rest: data,
            taken: 0,
        }
    }

    /// The next `size` bytes; `field` names the input's `binary_data_size`.
    pub fn take(&mut self, size: u64, field: &str) -> Result<&'b [u8], CodecError> {
        let left = self.rest.len();
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= left)
            .ok_or_else(|| {
                CodecError::field(
                    field,
                    format!(
                        "{size} bytes, but only {left} bytes of binary data are left after the \
                         JSON header and the inputs before this one"
                    ),
                )
            })?;
        let (taken, rest) = self.rest.split_at(size);
        self.rest = rest;
        self.taken += size;
        Ok(taken)
    }

    /// Fails when bytes are left over: the inputs' sizes must add up to the data sent.
    pub fn finish(self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            return Ok(());
        }
        Err(CodecError::field(
            HEADER_LENGTH,
            format!(
                "the body has {} bytes of binary data after the JSON header, but the inputs' \
                 `parameters.binary_data_size` add up to {}",
                self.taken + self.rest.len(),
                self.taken
            ),
        ))
    }
}

/// Reads `parameters.binary_data_size` (a non-negative integer); `field` is its path.
pub fn data_size(value: &serde_json::Value, field: &str) -> Result<u64, CodecError> {
    value.as_u64().ok_or_else(|| {
        CodecError::field(
            field,
            format!("expected a byte count (a non-negative integer), got {value}"),
        )
    })
}

/// Checks that `bytes` hold exactly `expected` elements of type `t` in binary form and
/// copies them into a tensor's data; `field` names the input.
pub fn tensor_data(
    t: ElementType,
    shape: &[u64],
    expected: u64,
    bytes: &[u8],
    field: &str,
) -> Result<Vec<u8>, CodecError> {
    let datatype = v2_datatype(t);
    if let Some(size) = fixed_size(t) {
        let needed = expected.checked_mul(size as u64);
        if needed != Some(bytes.len() as u64) {
            return Err(CodecError::field(
                field,
                format!(
                    "shape {shape:?} of {datatype} needs {} bytes, its binary data has {}",
                    needed.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
                    bytes.len()
                ),
            ));
        }
        if t == ElementType::Bool {
            if let Some(i) = bytes.iter().position(|&b| b > 1) {
                return Err(CodecError::field(
                    format!("{field}[{i}]"),
                    format!("BOOL elements are one byte, 0 or 1; got {}", bytes[i]),
                ));
            }
        }
        return Ok(bytes.to_vec());
    }
    match element_count(t, bytes) {
        Some(count) if count == expected => Ok(bytes.to_vec()),
        Some(count) => Err(CodecError::field(
            field,
            format!("shape {shape:?} needs {expected} elements, its binary data has {count}"),
        )),
        None => Err(CodecError::field(
            field,
            "a BYTES element's 4-byte length runs past the end of the input's binary data",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_length_splits_the_body() {
        let body = b"{\"a\":1}\x01\x02";
        assert_eq!(
            split_body(body, Some("7")).unwrap(),
            (&body[..7], &body[7..])
        );
        assert_eq!(split_body(body, None).unwrap(), (&body[..], &[][..]));
        for bad in ["-1", "x", "", "1e3", "18446744073709551616"] {
            let e = split_body(body, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("Inference-Header-Content-Length"), "{bad}: {e}");
            assert!(e.contains("not a byte count"), "{bad}: {e}");
        }
        let e = split_body(body, Some("10")).unwrap_err().to_string();
        assert!(
            e.contains("10 bytes of JSON header") && e.contains("only 9"),
            "{e}"
        );
    }

    #[test]
    fn sections_hand_out_bytes_in_order_and_must_add_up() {
        let mut section = BinarySection::new(b"abcdef");
        assert_eq!(section.take(2, "f").unwrap(), b"ab");
        let e = section.take(5, "inputs[1].parameters.binary_data_size");
        let e = e.unwrap_err().to_string();
        assert!(e.contains("5 bytes, but only 4"), "{e}");
        assert!(
            e.starts_with("`inputs[1].parameters.binary_data_size`"),
            "{e}"
        );
        let e = section.take(u64::MAX, "f").unwrap_err().to_string();
        assert!(e.contains("only 4"), "{e}");
        assert_eq!(section.take(3, "f").unwrap(), b"cde");
        let e = section.finish().unwrap_err().to_string();
        assert!(
            e.contains("6 bytes of binary data") && e.contains("add up to 5"),
            "{e}"
        );
        let mut exact = BinarySection::new(b"ab");
        exact.take(2, "f").unwrap();
        exact.finish().unwrap();
    }

    #[test]
    fn sizes_must_be_non_negative_integers() {
        assert_eq!(data_size(&serde_json::json!(12), "f"), Ok(12));
        for bad in [
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!("12"),
        ] {
            let e = data_size(&bad, "inputs[0].parameters.binary_data_size").unwrap_err();
            assert!(e.to_string().contains("byte count"), "{e}");
        }
    }

    #[test]
    fn element_counts_and_values_are_checked() {
        let f32s = [0u8; 16];
        assert_eq!(
            tensor_data(ElementType::F32, &[2, 2], 4, &f32s, "x").unwrap(),
            f32s
        );
        let e = tensor_data(ElementType::F32, &[2, 2], 4, &f32s[..12], "inputs[0]");
        assert_eq!(
            e.unwrap_err().to_string(),
            "`inputs[0]`: shape [2, 2] of FP32 needs 16 bytes, its binary data has 12"
        );
        let e = tensor_data(ElementType::F64, &[u64::MAX], u64::MAX, &f32s, "x");
        assert!(e.unwrap_err().to_string().contains("more than 2^64"));
        let e = tensor_data(ElementType::Bool, &[3], 3, &[0, 1, 2], "inputs[0]");
        assert!(e.unwrap_err().to_string().starts_with("`inputs[0][2]`"));
        // FP16 bytes pass through as they are.
        let half = 1.5f32.to_bits().to_le_bytes();
        assert_eq!(
            tensor_data(ElementType::F16, &[2], 2, &half, "x").unwrap(),
            half
        );

        let strings = b"\x02\0\0\0hi\0\0\0\0";
        assert_eq!(
            tensor_data(ElementType::Bytes, &[2], 2, strings, "x").unwrap(),
            strings
        );
        let e = tensor_data(ElementType::Bytes, &[3], 3, strings, "x").unwrap_err();
        assert!(e
            .to_string()
            .contains("needs 3 elements, its binary data has 2"));
        let e = tensor_data(ElementType::Bytes, &[1], 1, b"\xff\xff\xff\xffab", "x");
        assert!(e.unwrap_err().to_string().contains("runs past the end"));
        let e = tensor_data(ElementType::Bytes, &[1], 1, b"\x01\0", "x");
        assert!(e.unwrap_err().to_string().contains("runs past the end"));
    }
}
