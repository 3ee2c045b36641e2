//! Tensor data parsed straight from JSON text into a typed little-endian buffer.
//!
//! A KServe V2 tensor's `data` (flat or nested, any nesting counts as row-major order) is
//! kept as borrowed raw JSON until its datatype and shape are known, then walked once with
//! a streaming visitor that encodes each element as it is read. No JSON tree exists at
//! any point: parsing costs the body plus the tensor it becomes. The shape's element
//! count is checked as elements arrive, so data longer than its shape stops at the first
//! element too many, and nesting is bounded.

use super::elements::{encode, fixed_size, is_float, push_float};
use super::CodecError;
use crate::runtime::ElementType;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// Deepest nesting of arrays accepted in tensor data.
pub(crate) const MAX_DATA_DEPTH: usize = 64;

/// Parses `raw` (a JSON array, nested or flat, or a single value) into exactly
/// `expected` elements of type `t`. `field` is the path of the data (`inputs[0].data`).
pub(crate) fn parse_elements(
    raw: &RawValue,
    t: ElementType,
    shape: &[u64],
    expected: u64,
    field: &str,
) -> Result<Vec<u8>, CodecError> {
    // Every element takes at least two characters of JSON text (a digit and a comma or
    // bracket), so the text bounds the element count a lying shape could ask room for.
    let mut reader = ElementReader::new(t, shape, expected, raw.get().len(), field);
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let parsed = reader.seed().deserialize(&mut de).and_then(|()| de.end());
    let mut out = reader.finish(parsed.map_err(|e| CodecError::field(field, e.to_string())))?;
    reparse_f64_exactly(t, raw.get(), &mut out);
    Ok(out)
}

/// Reads one tensor's data from wherever a deserializer stands: from its own raw text
/// ([`parse_elements`]) or in the middle of a request body, during the one pass over it
/// (`codec::v2::request`). Give [`ElementReader::seed`] to the deserializer, then hand
/// its result to [`ElementReader::finish`].
pub(crate) struct ElementReader<'f> {
    sink: Sink<'f>,
}

impl<'f> ElementReader<'f> {
    /// A reader of exactly `expected` elements of type `t` (shape `shape`, for messages)
    /// from JSON text of at most `text_len` bytes, which bounds the room reserved ahead
    /// (every element takes at least two characters), whatever the shape claims.
    pub(crate) fn new(
        t: ElementType,
        shape: &'f [u64],
        expected: u64,
        text_len: usize,
        field: &'f str,
    ) -> Self {
        let most = (text_len as u64 / 2 + 1).min(expected);
        let mut out = Vec::new();
        if let Some(size) = fixed_size(t) {
            out.reserve_exact(usize::try_from(most).unwrap_or(0).saturating_mul(size));
        }
        Self {
            sink: Sink {
                t,
                shape,
                expected,
                count: 0,
                depth: 0,
                out,
                field,
                error: None,
            },
        }
    }

    /// The seed that reads the data's value into this reader.
    pub(crate) fn seed(&mut self) -> Data<'_, 'f> {
        Data(&mut self.sink)
    }

    /// The data's bytes, given how the read went: our own error first (a bad element, too
    /// many elements, too deep), then the deserializer's (`parsed`), then too few.
    pub(crate) fn finish<E>(mut self, parsed: Result<(), E>) -> Result<Vec<u8>, ElementsError<E>> {
        if let Some(error) = self.sink.error.take() {
            return Err(ElementsError::Data(error));
        }
        parsed.map_err(ElementsError::Json)?;
        if self.sink.count != self.sink.expected {
            return Err(ElementsError::Data(
                self.sink.count_error(self.sink.count.to_string()),
            ));
        }
        Ok(self.sink.out)
    }
}

/// Why [`ElementReader::finish`] has no data: the data itself is wrong, or the text
/// around it is not JSON (the deserializer's own error).
#[derive(Debug)]
pub(crate) enum ElementsError<E> {
    /// A wrong element, count or nesting, named by its field.
    Data(CodecError),
    /// The deserializer's error.
    Json(E),
}

impl From<ElementsError<CodecError>> for CodecError {
    fn from(error: ElementsError<CodecError>) -> Self {
        match error {
            ElementsError::Data(e) | ElementsError::Json(e) => e,
        }
    }
}

/// Parses again, exactly, the numbers of FP64 data that the first pass has checked (does
/// nothing for data of any other type `t`).
/// serde_json's default float parser is fast but not exactly rounded: a float64 with a
/// long mantissa (`0.17004902735071079`) can come out one ulp off, which would change a
/// client's float64 data on the way in. FP32 and narrower lose nothing to it (their
/// rounding is far coarser), so only FP64 pays for this second pass, with the standard
/// library's exactly rounded parser. The first pass accepted only arrays and numbers (an
/// FP64 element must be a number), so every token between brackets, commas and whitespace
/// is one element, in order.
pub(crate) fn reparse_f64_exactly(t: ElementType, text: &str, out: &mut [u8]) {
    if t != ElementType::F64 {
        return;
    }
    for (token, slot) in number_tokens(text).zip(out.chunks_exact_mut(8)) {
        if let Ok(exact) = token.parse::<f64>() {
            slot.copy_from_slice(&exact.to_le_bytes());
        }
    }
}

/// The tokens of JSON text made of arrays and numbers: what lies between brackets, commas
/// and whitespace.
fn number_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| matches!(c, '[' | ']' | ',') || c.is_ascii_whitespace())
        .filter(|token| !token.is_empty())
}

/// The cells of a JSON table (a list of rows, each a list of single values) parsed exactly
/// as float64, in row-major order; `None` unless every cell is a number (a string, a
/// literal, an object or a nested array in any cell: the table has other cells than
/// numbers, and a caller keeps its first parse). Already checked by a first pass.
pub(crate) fn exact_number_table(text: &str) -> Option<Vec<f64>> {
    let mut depth = 0usize;
    for c in text.bytes() {
        match c {
            b'[' => {
                depth += 1;
                if depth > 2 {
                    return None;
                }
            }
            b']' => depth = depth.saturating_sub(1),
            b'{' | b'"' => return None,
            _ => {}
        }
    }
    number_tokens(text).map(|t| t.parse::<f64>().ok()).collect()
}

struct Sink<'f> {
    t: ElementType,
    shape: &'f [u64],
    expected: u64,
    count: u64,
    depth: usize,
    out: Vec<u8>,
    field: &'f str,
    /// The error to report, when the visitor stopped with one of ours.
    error: Option<CodecError>,
}

impl Sink<'_> {
    fn count_error(&self, has: String) -> CodecError {
        CodecError::field(
            self.field,
            format!(
                "shape {:?} needs {} elements, data has {has}",
                self.shape, self.expected
            ),
        )
    }

    /// Stops the walk with `error`.
    fn fail<E: de::Error>(&mut self, error: CodecError) -> E {
        let text = error.to_string();
        self.error = Some(error);
        E::custom(text)
    }

    fn leaf<E: de::Error>(&mut self, value: &Value) -> Result<(), E> {
        let i = self.take_slot()?;
        let field = self.field;
        encode(self.t, value, &|| format!("{field}[{i}]"), &mut self.out).map_err(|e| self.fail(e))
    }

    /// A number as an element: straight into the buffer when the tensor holds floats (any
    /// number is one, converted as [`encode`] converts it), else through [`Sink::leaf`].
    /// Most tensor data is float data, and this skips a JSON value per element.
    fn number<E: de::Error>(&mut self, v: f64, value: impl FnOnce() -> Value) -> Result<(), E> {
        if !is_float(self.t) {
            return self.leaf(&value());
        }
        self.take_slot()?;
        push_float(self.t, v, &mut self.out);
        Ok(())
    }

    /// The index of the next element, counted; an error past the shape's count.
    fn take_slot<E: de::Error>(&mut self) -> Result<u64, E> {
        let i = self.count;
        if i >= self.expected {
            let error = self.count_error(format!("more than {}", self.expected));
            return Err(self.fail(error));
        }
        self.count += 1;
        Ok(i)
    }
}

/// The visitor over one value of the data.
pub(crate) struct Data<'s, 'f>(&'s mut Sink<'f>);

impl<'de> DeserializeSeed<'de> for Data<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Data<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor elements")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.leaf(&Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.number(v as f64, || Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.number(v as f64, || Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.number(v, || Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.leaf(&Value::String(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.leaf(&Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        // Never a valid element: read it whole only to name it in the message.
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.0.leaf(&value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.0.depth >= MAX_DATA_DEPTH {
            let error = CodecError::field(
                self.0.field,
                format!("arrays nested deeper than {MAX_DATA_DEPTH} levels"),
            );
            return Err(self.0.fail(error));
        }
        self.0.depth += 1;
        while seq.next_element_seed(Data(&mut *self.0))?.is_some() {}
        self.0.depth -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, t: ElementType, shape: &[u64]) -> Result<Vec<u8>, String> {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        let expected = shape.iter().product();
        parse_elements(&raw, t, shape, expected, "inputs[0].data").map_err(|e| e.to_string())
    }

    #[test]
    fn nested_and_flat_data_read_the_same() {
        let nested = parse("[[1, 2], [3, 4]]", ElementType::I16, &[2, 2]).unwrap();
        let flat = parse("[1, 2, 3, 4]", ElementType::I16, &[2, 2]).unwrap();
        assert_eq!(nested, flat);
        assert_eq!(nested, [1, 0, 2, 0, 3, 0, 4, 0]);
        assert_eq!(parse("7", ElementType::U8, &[]).unwrap(), [7]);
    }

    #[test]
    fn numbers_in_float_tensors_encode_as_json_values_do() {
        let text = "[1, -2, 3.5, 18446744073709551615, -9223372036854775808, 1e-40, 65519.9]";
        let values: Vec<Value> = serde_json::from_str(text).unwrap();
        for t in [
            ElementType::F32,
            ElementType::F64,
            ElementType::F16,
            ElementType::Bf16,
        ] {
            let mut want = Vec::new();
            for v in &values {
                encode(t, v, &String::new, &mut want).unwrap();
            }
            assert_eq!(parse(text, t, &[7]).unwrap(), want, "{t:?}");
        }
        assert_eq!(
            parse("[1, 2, 3]", ElementType::F32, &[2]).unwrap_err(),
            "`inputs[0].data`: shape [2] needs 2 elements, data has more than 2"
        );
    }

    #[test]
    fn a_wrong_shape_stops_at_the_first_element_too_many() {
        assert_eq!(
            parse("[1, 2, 3]", ElementType::F32, &[2]).unwrap_err(),
            "`inputs[0].data`: shape [2] needs 2 elements, data has more than 2"
        );
        assert_eq!(
            parse("[1]", ElementType::F32, &[3]).unwrap_err(),
            "`inputs[0].data`: shape [3] needs 3 elements, data has 1"
        );
    }

    #[test]
    fn bad_elements_and_deep_nesting_name_the_field() {
        assert_eq!(
            parse(r#"[1, {"a": 1}]"#, ElementType::F32, &[2]).unwrap_err(),
            r#"`inputs[0].data[1]`: expected a number, got {"a":1}"#
        );
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let e = parse(&deep, ElementType::F32, &[1]).unwrap_err();
        assert!(e.contains("nested deeper than 64"), "{e}");
        assert_eq!(
            parse(r#"["é", ""]"#, ElementType::Bytes, &[2]).unwrap(),
            b"\x02\0\0\0\xc3\xa9\0\0\0\0"
        );
    }
}
