//! The JSON structure of a Databricks body: object keys kept in the order they were sent
//! (column order matters) and duplicate keys rejected. Objects whose values may be large
//! (the body, `inputs`) are read as [`RawObject`]s, their values left as raw text for a
//! streaming parse; small structure (tables, `params`) as a [`Json`] tree.

use super::CodecError;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

/// A short description of a value for messages: the value itself (cut at 40 characters)
/// when it is a scalar.
pub(super) fn describe_value(v: &Value) -> String {
    match v {
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        _ => {
            let text = v.to_string();
            if text.chars().count() > 40 {
                format!("{}...", text.chars().take(40).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// Reads all of `text` with `seed`, a pass that keeps the first error it meets in the
/// data in `data_error` (a wrong element, a ragged array, a field of the wrong kind) and
/// stops: that error when there is one, else the deserializer's, as malformed JSON.
pub(super) fn read_in_one_pass<'de, S: DeserializeSeed<'de>>(
    text: &'de str,
    seed: S,
    data_error: &RefCell<Option<CodecError>>,
) -> Result<S::Value, CodecError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, data_error.take()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(error)) => Err(error),
        (Err(e), None) => Err(CodecError::Json(e.to_string())),
    }
}

/// The `visit_*` methods of a visitor that wants an array or an object, for every single
/// value (true or false, a number, a string, null): each calls `self.$refuse(what it
/// got, in a few words)`, which makes the error.
macro_rules! refuse_single_values {
    ($refuse:ident) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
            Err(self.$refuse(describe_value(&Value::Bool(v))))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            Err(self.$refuse(describe_value(&Value::from(v))))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            Err(self.$refuse(describe_value(&Value::from(v))))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
            Err(self.$refuse(describe_value(&Value::from(v))))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            Err(self.$refuse(describe_value(&Value::from(v))))
        }

        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Err(self.$refuse("null".to_owned()))
        }
    };
}
pub(super) use refuse_single_values;

/// An object key as sent: borrowed from the body unless it has escapes.
pub(super) struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

/// What JSON text `raw` holds, in a few words (without reading an array or object).
pub(super) fn describe_raw(raw: &RawValue) -> String {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'[') => "an array".to_owned(),
        Some(b'{') => "an object".to_owned(),
        _ => serde_json::from_str::<Value>(raw.get())
            .map(|v| describe_value(&v))
            .unwrap_or_default(),
    }
}

/// The first character of the first element of the array `raw`, if it is a non-empty array.
pub(super) fn first_element_start(raw: &RawValue) -> Option<u8> {
    let text = raw.get().trim_start().strip_prefix('[')?;
    text.trim_start()
        .as_bytes()
        .first()
        .copied()
        .filter(|&c| c != b']')
}

/// Parses `raw` (already known to be valid JSON) as a tree; errors are the client's.
pub(super) fn tree(raw: &RawValue) -> Result<Json, CodecError> {
    serde_json::from_str(raw.get()).map_err(|e| CodecError::Json(e.to_string()))
}

/// An object's entries in the order they were sent, each value left as raw JSON text;
/// duplicate keys are rejected. Not an object: `None`.
pub(super) struct RawObject<'a>(pub Option<Vec<(String, &'a RawValue)>>);

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawObjectVisitor(std::marker::PhantomData))
    }
}

struct RawObjectVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for RawObjectVisitor<'a> {
    type Value = RawObject<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject<'a>, A::Error> {
        let mut entries: Vec<(String, &'a RawValue)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, &'a RawValue>()? {
            entries.push((key, value));
        }
        if let Some(key) = duplicate(entries.iter().map(|(k, _)| k.as_str())) {
            return Err(de::Error::custom(format!("duplicate key `{key}`")));
        }
        Ok(RawObject(Some(entries)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawObject<'a>, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(RawObject(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawObject<'a>, E> {
        Ok(RawObject(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawObject<'a>, E> {
        Ok(RawObject(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawObject<'a>, E> {
        Ok(RawObject(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawObject<'a>, E> {
        Ok(RawObject(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawObject<'a>, E> {
        Ok(RawObject(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawObject<'a>, E> {
        Ok(RawObject(None))
    }
}

/// A JSON value that keeps object keys in the order they were sent (`serde_json::Value`
/// sorts them) and rejects duplicate keys.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Json {
    /// `null`, a boolean, a number or a string.
    Scalar(Value),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// A short description for messages: the value itself when it is a scalar.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Scalar(v) => describe_value(v),
            Self::Array(_) => "an array".to_owned(),
            Self::Object(_) => "an object".to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Scalar(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Scalar(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Scalar(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Scalar(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::Scalar(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Scalar(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Scalar(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value()?;
            entries.push((key, value));
        }
        if let Some(key) = duplicate(entries.iter().map(|(k, _)| k.as_str())) {
            return Err(de::Error::custom(format!("duplicate key `{key}`")));
        }
        Ok(Json::Object(entries))
    }
}

/// The first key that appears twice, if any.
fn duplicate<'k>(keys: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let mut keys: Vec<&str> = keys.collect();
    if keys.len() <= 16 {
        return keys
            .iter()
            .enumerate()
            .find(|(i, k)| keys[..*i].contains(k))
            .map(|(_, k)| *k);
    }
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Scalar(v) => v.serialize(serializer),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}
