//! Nested JSON arrays parsed straight into a tensor, in one pass over their text: the
//! `inputs` and `instances` payloads, which can be as large as the body.
//!
//! The same rules as the tree walk of [`super::tensors`] (dimensions read along the first
//! elements, raggedness named at the exact index, element types declared or inferred),
//! applied as the text is read: every element goes straight into the tensor's bytes and
//! no JSON value is kept. The dimensions of a level are known once its first array
//! closes, so every later array is checked against them as it arrives. When a body is
//! wrong in several ways, the first problem in reading order is the one reported.

use super::json::describe_value;
use super::names::indexed;
use super::CodecError;
use crate::codec::elements::{encode, push_float};
use crate::codec::stream::{reparse_f64_exactly, ElementsError, MAX_DATA_DEPTH};
use crate::runtime::{ElementType, Tensor};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// One tensor named `name` from the nested array (or single value) `raw`, found at
/// `base` in the body; `element_type` when the signature declares it, else inferred.
pub(super) fn nested_tensor(
    name: &str,
    raw: &RawValue,
    base: &str,
    element_type: Option<ElementType>,
) -> Result<Tensor, CodecError> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let mut tensor =
        read_nested_tensor(&mut de, name, base, element_type).map_err(|e| match e {
            ElementsError::Data(error) => error,
            ElementsError::Json(e) => CodecError::field(base, e.to_string()),
        })?;
    reparse_f64_exactly(tensor.element_type, raw.get(), &mut tensor.data);
    Ok(tensor)
}

/// One tensor named `name` from the nested array (or single value) the deserializer `d`
/// stands at, found at `base` in the body; `element_type` when the signature declares it,
/// else inferred. Reads the value only: FP64's exact second pass needs its text
/// ([`nested_tensor`]).
pub(super) fn read_nested_tensor<'de, D: Deserializer<'de>>(
    d: D,
    name: &str,
    base: &str,
    element_type: Option<ElementType>,
) -> Result<Tensor, ElementsError<D::Error>> {
    let mut walk = Walk::new(move |at: &[usize]| indexed(base, at), element_type);
    let parsed = walk.node(0).deserialize(d);
    if let Some(error) = walk.error.take() {
        return Err(ElementsError::Data(error));
    }
    parsed.map_err(ElementsError::Json)?;
    let (shape, element_type, data) = walk.finish().map_err(ElementsError::Data)?;
    Ok(Tensor {
        name: name.to_owned(),
        shape,
        element_type,
        data,
    })
}

/// How a walk names the value at some indices, for messages.
type PathOf<'b> = Box<dyn Fn(&[usize]) -> String + 'b>;

/// One tensor being read: what the walk has learned so far.
pub(super) struct Walk<'b> {
    /// The path of the value at some indices, for messages.
    path: PathOf<'b>,
    /// `dims[d]`: the length of the first array at depth `d`, once it has closed.
    dims: Vec<u64>,
    /// The depth at which single values sit, once the first one (or an empty array) is met.
    rank: Option<usize>,
    /// Indices of the value being read.
    pub(super) at: Vec<usize>,
    elements: Elements,
    /// Our error, when the walk stopped with one.
    pub(super) error: Option<CodecError>,
}

impl<'b> Walk<'b> {
    /// A walk whose elements have `element_type`, or an inferred one.
    pub(super) fn new(
        path: impl Fn(&[usize]) -> String + 'b,
        element_type: Option<ElementType>,
    ) -> Self {
        Self {
            path: Box::new(path),
            dims: Vec::new(),
            rank: None,
            at: Vec::new(),
            elements: match element_type {
                Some(t) => Elements::Declared(t, Vec::new()),
                None => Elements::Inferred(Inferred::Empty),
            },
            error: None,
        }
    }

    /// A walk whose single values sit at depth `rank`, whatever the first one says (the
    /// caller reads the arrays above it and checks their lengths).
    pub(super) fn with_rank(
        path: impl Fn(&[usize]) -> String + 'b,
        element_type: Option<ElementType>,
        rank: usize,
    ) -> Self {
        Self {
            rank: Some(rank),
            ..Self::new(path, element_type)
        }
    }

    /// The visitor for a value at `depth` (its indices in [`Walk::at`]).
    pub(super) fn node(&mut self, depth: usize) -> Node<'_, 'b> {
        Node { walk: self, depth }
    }

    /// The dimensions below depth `from` of what was read (all of them for 0).
    pub(super) fn dims_from(&self, from: usize) -> Vec<u64> {
        let rank = self.rank.unwrap_or(from).max(from);
        (from..rank)
            .map(|d| self.dims.get(d).copied().unwrap_or(0))
            .collect()
    }

    /// The element type it has so far (inferred ones may still change).
    pub(super) fn element_type(&self) -> Option<ElementType> {
        self.elements.element_type()
    }

    /// The elements of a walk declared FP64 that holds exactly `count` of them, to be
    /// overwritten by an exact parse (`crate::codec::stream::reparse_f64_exactly`).
    pub(super) fn declared_f64_elements(&mut self, count: usize) -> Option<&mut [u8]> {
        match &mut self.elements {
            Elements::Declared(ElementType::F64, out) if out.len() == count.saturating_mul(8) => {
                Some(out)
            }
            _ => None,
        }
    }

    /// Shape, element type and bytes.
    pub(super) fn finish(self) -> Result<(Vec<u64>, ElementType, Vec<u8>), CodecError> {
        let shape = self.dims_from(0);
        let (element_type, data) = self.elements.finish()?;
        Ok((shape, element_type, data))
    }

    fn here(&self) -> String {
        (self.path)(&self.at)
    }

    fn fail<E: de::Error>(&mut self, error: CodecError) -> E {
        let text = error.to_string();
        self.error = Some(error);
        E::custom(text)
    }

    fn ragged<E: de::Error>(&mut self, problem: String) -> E {
        let error = CodecError::field(self.here(), format!("ragged array: {problem}"));
        self.fail(error)
    }

    /// A number with a fraction or an exponent, at `depth`: straight into the bytes where
    /// floats belong (most tensor data; no JSON value is made for it), else as any other
    /// single value.
    fn float<E: de::Error>(&mut self, depth: usize, v: f64) -> Result<(), E> {
        if self.rank == Some(depth) && self.elements.push_float(v) {
            return Ok(());
        }
        self.single(depth, Leaf::Value(Value::from(v)))
    }

    /// A value that is not an array, at `depth`.
    fn single<E: de::Error>(&mut self, depth: usize, value: Leaf) -> Result<(), E> {
        match self.rank {
            None => self.rank = Some(depth),
            Some(rank) if depth < rank => {
                let want = self.dims.get(depth).copied().unwrap_or(0);
                let got = match &value {
                    Leaf::Value(v) => describe_value(v),
                    Leaf::Object => "an object".to_owned(),
                };
                return Err(self.ragged(format!("expected an array of {want} elements, got {got}")));
            }
            Some(_) => {}
        }
        let (at, path) = (&self.at, &self.path);
        let pushed = self.elements.push(value, &|| path(at));
        pushed.map_err(|e| self.fail(e))
    }
}

/// A value where a single element belongs.
enum Leaf {
    Value(Value),
    Object,
}

/// Counts the remaining elements of `seq` without keeping them.
fn count_rest<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<u64, A::Error> {
    let mut n = 0;
    while seq.next_element::<IgnoredAny>()?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// The visitor over one value at `depth`.
pub(super) struct Node<'w, 'b> {
    walk: &'w mut Walk<'b>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a nested array")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.walk.single(self.depth, Leaf::Value(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.walk.single(self.depth, Leaf::Value(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.walk.single(self.depth, Leaf::Value(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.walk.float(self.depth, v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.walk
            .single(self.depth, Leaf::Value(Value::String(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.walk.single(self.depth, Leaf::Value(Value::Null))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.walk.single(self.depth, Leaf::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (walk, depth) = (self.walk, self.depth);
        if depth >= MAX_DATA_DEPTH {
            let error = CodecError::field(
                walk.here(),
                format!("arrays nested deeper than {MAX_DATA_DEPTH} levels"),
            );
            return Err(walk.fail(error));
        }
        // Until the first single value (or empty array), we are on the first path down,
        // which sets the dimensions; after it, every array is checked against them.
        let want = match walk.rank {
            None => None,
            Some(rank) if depth < rank => Some(walk.dims.get(depth).copied().unwrap_or(0)),
            Some(_) => {
                let n = count_rest(&mut seq)?;
                return Err(
                    walk.ragged(format!("expected a single value here, got an array of {n}"))
                );
            }
        };
        walk.at.push(0);
        let mut len = 0u64;
        loop {
            if want == Some(len) {
                let extra = count_rest(&mut seq)?;
                walk.at.pop();
                if extra > 0 {
                    let got = len + extra;
                    return Err(walk.ragged(format!("expected {len} elements, got {got}")));
                }
                return Ok(());
            }
            if let Some(i) = walk.at.last_mut() {
                *i = usize::try_from(len).unwrap_or(usize::MAX);
            }
            let node = Node {
                walk: &mut *walk,
                depth: depth + 1,
            };
            if seq.next_element_seed(node)?.is_none() {
                break;
            }
            len += 1;
        }
        walk.at.pop();
        match want {
            Some(want) => Err(walk.ragged(format!("expected {want} elements, got {len}"))),
            None => {
                if walk.dims.len() <= depth {
                    walk.dims.resize(depth + 1, 0);
                }
                walk.dims[depth] = len;
                if len == 0 {
                    walk.rank = Some(depth + 1);
                }
                Ok(())
            }
        }
    }
}

/// The tensor's bytes as they are written.
enum Elements {
    /// The signature declares the type: each element is encoded as it arrives.
    Declared(ElementType, Vec<u8>),
    /// Nothing declares it: inferred from the values (see [`Inferred`]).
    Inferred(Inferred),
}

/// The type of a tensor's elements inferred as they arrive: BOOL for booleans, INT64 for
/// integers, FP32 once any number has a fraction or exponent (integers read so far are
/// converted), BYTES for strings. Mixing kinds is an error naming the first element that
/// differs; an integer out of range for INT64 is an error only if no fraction follows.
enum Inferred {
    Empty,
    Bool(Vec<u8>),
    Int(Vec<u8>, Vec<(usize, u64)>, Option<CodecError>),
    Float(Vec<u8>),
    Bytes(Vec<u8>),
}

impl Elements {
    fn element_type(&self) -> Option<ElementType> {
        match self {
            Self::Declared(t, _) => Some(*t),
            Self::Inferred(Inferred::Bool(_)) => Some(ElementType::Bool),
            Self::Inferred(Inferred::Int(..)) => Some(ElementType::I64),
            Self::Inferred(Inferred::Float(_)) => Some(ElementType::F32),
            Self::Inferred(Inferred::Bytes(_)) => Some(ElementType::Bytes),
            Self::Inferred(Inferred::Empty) => None,
        }
    }

    /// Writes a float where the elements are floats (declared, or inferred FP32 so far),
    /// and says so; else writes nothing.
    fn push_float(&mut self, v: f64) -> bool {
        match self {
            Self::Declared(t, out) => push_float(*t, v, out),
            Self::Inferred(Inferred::Float(out)) => push_float(ElementType::F32, v, out),
            Self::Inferred(_) => false,
        }
    }

    fn push(&mut self, leaf: Leaf, path: &dyn Fn() -> String) -> Result<(), CodecError> {
        let value = match (leaf, &*self) {
            (Leaf::Value(v), _) => v,
            (Leaf::Object, Self::Declared(..)) => {
                return Err(CodecError::field(
                    path(),
                    "expected a single value, got an object",
                ))
            }
            (Leaf::Object, Self::Inferred(_)) => {
                return Err(CodecError::field(
                    path(),
                    "expected a number, a string or true or false, got an object",
                ))
            }
        };
        match self {
            Self::Declared(t, out) => encode(*t, &value, path, out),
            Self::Inferred(inferred) => inferred.push(value, path),
        }
    }

    fn finish(self) -> Result<(ElementType, Vec<u8>), CodecError> {
        Ok(match self {
            Self::Declared(t, out) => (t, out),
            Self::Inferred(Inferred::Empty) => (ElementType::F32, Vec::new()),
            Self::Inferred(Inferred::Bool(out)) => (ElementType::Bool, out),
            Self::Inferred(Inferred::Int(_, _, Some(error))) => return Err(error),
            Self::Inferred(Inferred::Int(out, _, None)) => (ElementType::I64, out),
            Self::Inferred(Inferred::Float(out)) => (ElementType::F32, out),
            Self::Inferred(Inferred::Bytes(out)) => (ElementType::Bytes, out),
        })
    }
}

impl Inferred {
    fn noun(&self) -> &'static str {
        match self {
            Self::Bool(_) => "true or false",
            Self::Bytes(_) => "a string",
            Self::Empty | Self::Int(..) | Self::Float(_) => "a number",
        }
    }

    fn push(&mut self, value: Value, path: &dyn Fn() -> String) -> Result<(), CodecError> {
        let mixed = |this: &Self, value: &Value| {
            CodecError::field(
                path(),
                format!(
                    "expected {}, got {} (the elements of one tensor share a type)",
                    this.noun(),
                    describe_value(value)
                ),
            )
        };
        match (&mut *self, &value) {
            (_, Value::Null | Value::Array(_) | Value::Object(_)) => Err(CodecError::field(
                path(),
                format!(
                    "expected a number, a string or true or false, got {}",
                    describe_value(&value)
                ),
            )),
            (Self::Empty, Value::Bool(_)) => {
                *self = Self::Bool(Vec::new());
                self.push(value, path)
            }
            (Self::Empty, Value::String(_)) => {
                *self = Self::Bytes(Vec::new());
                self.push(value, path)
            }
            (Self::Empty, Value::Number(n)) => {
                *self = if n.is_i64() || n.is_u64() {
                    Self::Int(Vec::new(), Vec::new(), None)
                } else {
                    Self::Float(Vec::new())
                };
                self.push(value, path)
            }
            (Self::Bool(out), Value::Bool(b)) => {
                out.push(u8::from(*b));
                Ok(())
            }
            (Self::Bytes(out), Value::String(_)) => encode(ElementType::Bytes, &value, path, out),
            (Self::Float(out), Value::Number(_)) => encode(ElementType::F32, &value, path, out),
            (Self::Int(out, big, pending), Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    out.extend_from_slice(&i.to_le_bytes());
                } else if let Some(u) = n.as_u64() {
                    // Out of range for INT64, fine as FP32: decided by what follows.
                    big.push((out.len() / 8, u));
                    out.extend_from_slice(&0i64.to_le_bytes());
                    if pending.is_none() {
                        *pending = Some(CodecError::field(
                            path(),
                            format!("{u} is out of range for INT64"),
                        ));
                    }
                } else {
                    // A fraction: every integer so far becomes FP32.
                    let mut floats = Vec::with_capacity(out.len() / 2 + 4);
                    let mut big = big.iter().peekable();
                    for (i, chunk) in out.chunks_exact(8).enumerate() {
                        let mut raw = [0u8; 8];
                        raw.copy_from_slice(chunk);
                        // `big` lists its positions in increasing order.
                        let v = match big.next_if(|(at, _)| *at == i) {
                            Some(&(_, u)) => u as f64,
                            None => i64::from_le_bytes(raw) as f64,
                        };
                        floats.extend_from_slice(&(v as f32).to_le_bytes());
                    }
                    *self = Self::Float(floats);
                    return self.push(value, path);
                }
                Ok(())
            }
            (this, other) => Err(mixed(this, other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, t: Option<ElementType>) -> Result<Tensor, String> {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        nested_tensor("x", &raw, "inputs.x", t).map_err(|e| e.to_string())
    }

    #[test]
    fn shapes_and_types_are_learned_as_the_text_is_read() {
        let t = parse("[[1, 2, 3], [4, 5, 6]]", None).unwrap();
        assert_eq!(
            (t.shape.as_slice(), t.element_type),
            (&[2, 3][..], ElementType::I64)
        );
        let t = parse("[[1, 2], [3, 4.5]]", None).unwrap();
        assert_eq!(t.element_type, ElementType::F32);
        let values: Vec<f32> = t
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values, [1.0, 2.0, 3.0, 4.5]);
        let t = parse("[[], []]", None).unwrap();
        assert_eq!((t.shape.as_slice(), t.data.len()), (&[2, 0][..], 0));
        let t = parse("2.5", Some(ElementType::F64)).unwrap();
        assert_eq!(
            (t.shape.as_slice(), t.data),
            (&[][..], 2.5f64.to_le_bytes().to_vec())
        );
        // Beyond INT64 is an error only while every number is an integer.
        let big = u64::MAX;
        let e = parse(&format!("[1, {big}]"), None).unwrap_err();
        assert_eq!(e, format!("`inputs.x[1]`: {big} is out of range for INT64"));
        let t = parse(&format!("[1, {big}, 0.5]"), None).unwrap();
        assert_eq!(&t.data[4..8], &(big as f32).to_le_bytes());
    }

    #[test]
    fn ragged_arrays_and_wrong_values_name_the_index() {
        let e = |text: &str| parse(text, None).unwrap_err();
        assert_eq!(
            e("[[1, 2], [3, 4, 5, 6]]"),
            "`inputs.x[1]`: ragged array: expected 2 elements, got 4"
        );
        assert_eq!(
            e("[[[1], [2]], [[1], {\"a\": 1}]]"),
            "`inputs.x[1][1]`: ragged array: expected an array of 1 elements, got an object"
        );
        assert_eq!(
            e("[[1], [[2, 3]]]"),
            "`inputs.x[1][0]`: ragged array: expected a single value here, got an array of 2"
        );
        assert_eq!(
            e("[[], [1]]"),
            "`inputs.x[1]`: ragged array: expected 0 elements, got 1"
        );
        assert_eq!(
            e("[{\"a\": 1}]"),
            "`inputs.x[0]`: expected a number, a string or true or false, got an object"
        );
        assert_eq!(
            e("[true, 1]"),
            "`inputs.x[1]`: expected true or false, got 1 (the elements of one tensor share a type)"
        );
        let deep = format!("{}1{}", "[".repeat(80), "]".repeat(80));
        assert!(e(&deep).contains("nested deeper than 64"));
        let declared = parse("[1, {}]", Some(ElementType::F32)).unwrap_err();
        assert_eq!(
            declared,
            "`inputs.x[1]`: expected a single value, got an object"
        );
    }
}
