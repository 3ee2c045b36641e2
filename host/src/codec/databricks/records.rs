//! Rows of objects (`dataframe_records`, and `instances` given as objects) read straight
//! from the body text into one tensor per column.
//!
//! The first object names the columns, in the order it lists them (it is held as raw text
//! while its keys are read, then its cells are parsed like every other row); every later
//! object must have exactly those keys, in any order, and its cells go straight into
//! their column's bytes. The columns then become tensors as for `dataframe_split`.

use super::columns::column_tensors;
use super::json::{describe_raw, describe_value, refuse_single_values, Key, RawObject};
use super::names::{declared, indexed};
use super::stream::Walk;
use super::{CodecError, DEFAULT_INPUT};
use crate::package::{Signature, TensorSignature};
use crate::runtime::Tensor;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// Which list of objects is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// `dataframe_records`: mapped like a dataframe (see [`from_objects`]).
    Records,
    /// `instances` as objects: always one tensor per key.
    Instances,
}

impl Source {
    fn base(self) -> &'static str {
        match self {
            Self::Records => "dataframe_records",
            Self::Instances => "instances",
        }
    }
}

/// `dataframe_records`, or `instances` given as objects, to tensors.
///
/// Records with a signature of exactly one rank-2 input (and columns other than that
/// input's name): one `[rows, columns]` tensor named after it. With any other signature,
/// and for instances: one tensor per column. Records without a signature: one
/// `[rows, columns]` tensor named `input` when every cell is a single value and all
/// columns have the same inferred type, else one tensor per column.
pub(super) fn from_objects(
    raw: &RawValue,
    source: Source,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    let base = source.base();
    if source == Source::Records && !raw.get().trim_start().starts_with('[') {
        return Err(CodecError::field(
            base,
            format!("expected a list of records, got {}", describe_raw(raw)),
        ));
    }
    let mut reader = Reader {
        source,
        signature,
        columns: Vec::new(),
        index: HashMap::new(),
        walks: Vec::new(),
        whole: None,
        rows: 0,
        error: None,
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let parsed = Objects(&mut reader)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    let walk_error = reader.walks.iter_mut().find_map(|w| w.error.take());
    if let Some(error) = reader.error.take().or(walk_error) {
        return Err(error);
    }
    parsed.map_err(|e| CodecError::field(base, e.to_string()))?;
    if reader.rows == 0 {
        return Err(CodecError::field(
            base,
            "expected at least one record, got an empty list",
        ));
    }
    let Reader {
        columns,
        walks,
        whole,
        rows,
        ..
    } = reader;
    match (source, whole) {
        (Source::Records, Some(name)) => column_tensors(&columns, walks, rows, None, Some(&name)),
        (Source::Records, None) if signature.is_none() => {
            column_tensors(&columns, walks, rows, None, Some(DEFAULT_INPUT))
        }
        _ => column_tensors(&columns, walks, rows, signature, None),
    }
}

struct Reader<'s> {
    source: Source,
    signature: Option<&'s Signature>,
    columns: Vec<String>,
    index: HashMap<String, usize>,
    walks: Vec<Walk<'static>>,
    /// The input the whole table fills, when it is one `[rows, columns]` tensor.
    whole: Option<String>,
    rows: u64,
    error: Option<CodecError>,
}

impl Reader<'_> {
    fn fail<E: de::Error>(&mut self, problem: String) -> E {
        let field = format!("{}[{}]", self.source.base(), self.rows);
        let error = CodecError::field(field, problem);
        let text = error.to_string();
        self.error = Some(error);
        E::custom(text)
    }

    /// Sets up the columns from the keys of the first object.
    fn start(&mut self, keys: Vec<String>) {
        let base = self.source.base();
        let whole = match self.signature.map(|s| s.inputs.as_slice()) {
            Some([only])
                if self.source == Source::Records
                    && only.shape.len() == 2
                    && keys != [only.name.as_str()] =>
            {
                Some(only)
            }
            _ => None,
        };
        self.whole = whole.map(|only| only.name.clone());
        for (c, key) in keys.iter().enumerate() {
            let key_text = key.clone();
            let path = move |at: &[usize]| match at.split_first() {
                Some((r, rest)) => indexed(&format!("{base}[{r}].{key_text}"), rest),
                None => base.to_owned(),
            };
            let walk = match whole {
                // Every cell of a whole table is a single value.
                Some(only) => Walk::with_rank(path, only.element_type(), 1),
                None => Walk::new(
                    path,
                    declared(self.signature, key).and_then(TensorSignature::element_type),
                ),
            };
            self.walks.push(walk);
            self.index.insert(key.clone(), c);
        }
        self.columns = keys;
    }

    /// Reads the cell of column `c` in the current row from `deserializer`.
    fn cell<'de, D: Deserializer<'de>>(
        &mut self,
        c: usize,
        deserializer: D,
    ) -> Result<(), D::Error> {
        let r = usize::try_from(self.rows).unwrap_or(usize::MAX);
        match self.walks.get_mut(c) {
            Some(walk) => {
                walk.at.clear();
                walk.at.push(r);
                walk.node(1).deserialize(deserializer)
            }
            None => Ok(()),
        }
    }
}

/// The visitor over the list of objects.
struct Objects<'r, 's>(&'r mut Reader<'s>);

impl<'de> DeserializeSeed<'de> for Objects<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Objects<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let reader = self.0;
        let base = reader.source.base();
        // The first object, as raw text: its keys are the columns.
        let Some(first) = seq.next_element::<&RawValue>()? else {
            return Ok(());
        };
        let entries = match serde_json::from_str::<RawObject<'_>>(first.get()) {
            Ok(RawObject(Some(entries))) => entries,
            Ok(RawObject(None)) => {
                let got = describe_raw(first);
                return Err(reader.fail(format!("expected an object like {base}[0], got {got}")));
            }
            Err(e) => return Err(reader.fail(e.to_string())),
        };
        if entries.is_empty() {
            return Err(reader.fail("expected at least one column".to_owned()));
        }
        reader.start(entries.iter().map(|(k, _)| k.clone()).collect());
        for (c, (_, cell)) in entries.iter().enumerate() {
            let mut de = serde_json::Deserializer::from_str(cell.get());
            reader.cell(c, &mut de).map_err(de::Error::custom)?;
        }
        reader.rows = 1;
        while seq.next_element_seed(Object(&mut *reader))?.is_some() {
            reader.rows += 1;
        }
        Ok(())
    }
}

/// The visitor over one later object.
struct Object<'r, 's>(&'r mut Reader<'s>);

impl<'de> DeserializeSeed<'de> for Object<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Object<'_, '_> {
    fn not_an_object<E: de::Error>(self, got: String) -> E {
        let base = self.0.source.base();
        self.0
            .fail(format!("expected an object like {base}[0], got {got}"))
    }
}

impl<'de> Visitor<'de> for Object<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    refuse_single_values!(not_an_object);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(self.not_an_object("an array".to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reader = self.0;
        let base = reader.source.base();
        let mut seen = vec![false; reader.columns.len()];
        let mut next = 0;
        while let Some(Key(key)) = map.next_key()? {
            // Records mostly list their keys in the first one's order: try that column
            // before the index.
            let in_order = reader.columns.get(next).is_some_and(|c| *c == key);
            let column = if in_order {
                Some(next)
            } else {
                reader.index.get(key.as_ref()).copied()
            };
            let Some(c) = column else {
                return Err(reader.fail(format!(
                    "unexpected key `{key}`: {base}[0] has no such column"
                )));
            };
            if seen.get_mut(c).is_some_and(|s| std::mem::replace(s, true)) {
                return Err(reader.fail(format!("duplicate key `{key}`")));
            }
            next = c + 1;
            map.next_value_seed(Cell { reader, c })?;
        }
        if let Some(c) = seen.iter().position(|s| !s) {
            let column = reader.columns.get(c).cloned().unwrap_or_default();
            return Err(reader.fail(format!("missing key `{column}`, which {base}[0] has")));
        }
        Ok(())
    }
}

/// One cell of a later object.
struct Cell<'r, 's> {
    reader: &'r mut Reader<'s>,
    c: usize,
}

impl<'de> DeserializeSeed<'de> for Cell<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.reader.cell(self.c, deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Tensor>, String> {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        from_objects(&raw, Source::Records, None).map_err(|e| e.to_string())
    }

    #[test]
    fn later_rows_may_reorder_but_not_repeat_their_keys() {
        let t = parse(r#"[{"a": [1], "b": "x"}, {"b": "y", "a": [2]}]"#).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(t[0].shape, [2, 1]);
        assert_eq!(t[1].data, b"\x01\0\0\0x\x01\0\0\0y");
        assert_eq!(
            parse(r#"[{"a": 1}, {"a": 2, "a": 3}]"#).unwrap_err(),
            "`dataframe_records[1]`: duplicate key `a`"
        );
        let e = parse(r#"[{"a": 1, "a": 2}]"#).unwrap_err();
        assert!(
            e.starts_with("`dataframe_records[0]`: duplicate key `a`"),
            "{e}"
        );
        assert_eq!(
            parse(r#"[{"a": 1}, {"a": [2]}]"#).unwrap_err(),
            "`dataframe_records[1].a`: ragged array: expected a single value here, got an array of 1"
        );
        assert_eq!(
            parse(r#"[[1]]"#).unwrap_err(),
            "`dataframe_records[0]`: expected an object like dataframe_records[0], got an array"
        );
    }
}
