//! `dataframe_split` (`{columns: [...], data: [[...], ...], index?: [...]}`) read straight
//! from the body text: the column names first (a small tree, wherever they appear in the
//! object), then `data` row by row, every cell going straight into its tensor's bytes.
//!
//! With a signature of exactly one rank-2 input (and columns other than that input's
//! name) the rows fill one `[rows, columns]` tensor in place. Otherwise each column is
//! its own tensor, `[rows, ...cell dims]`; without a signature, columns of single values
//! that all infer to one type are then joined into one `[rows, columns]` tensor named
//! `input` (the only case that holds the table twice, briefly).
//!
//! Columns declared FP64 are read again with an exactly rounded parser when every cell of
//! the table is a number (serde_json's fast one can be one ulp off for float64); see
//! [`exact_f64_columns`].

use super::columns::column_tensors;
use super::json::{describe_raw, describe_value, first_element_start, tree, Json, RawObject};
use super::names::{declared, indexed};
use super::stream::Walk;
use super::{CodecError, DEFAULT_INPUT};
use crate::codec::stream::{exact_number_table, reparse_f64_exactly};
use crate::package::{Signature, TensorSignature};
use crate::runtime::{ElementType, Tensor};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashSet;
use std::fmt;

/// `dataframe_split` to tensors.
pub(super) fn from_split(
    raw: &RawValue,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    let object: RawObject<'_> =
        serde_json::from_str(raw.get()).map_err(|e| CodecError::Json(e.to_string()))?;
    let Some(entries) = object.0 else {
        return Err(CodecError::field(
            "dataframe_split",
            format!(
                "expected an object with `columns` and `data`, got {}",
                describe_raw(raw)
            ),
        ));
    };
    let mut columns = None;
    let mut data = None;
    for (key, v) in &entries {
        match key.as_str() {
            "columns" => columns = Some(*v),
            "data" => data = Some(*v),
            "index" => {}
            other => {
                return Err(CodecError::field(
                    format!("dataframe_split.{other}"),
                    "unknown field; expected `columns`, `data` and optionally `index`",
                ))
            }
        }
    }
    let missing = |f: &str| CodecError::field(format!("dataframe_split.{f}"), "missing");
    let names = tree(columns.ok_or_else(|| missing("columns"))?)?;
    let columns = column_names(&names)?;
    let data = data.ok_or_else(|| missing("data"))?;
    if !data.get().trim_start().starts_with('[') {
        return Err(CodecError::field(
            "dataframe_split.data",
            format!("expected a list of rows, got {}", describe_raw(data)),
        ));
    }
    if first_element_start(data).is_none() {
        return Err(CodecError::field(
            "dataframe_split.data",
            "expected at least one row",
        ));
    }
    match signature.map(|s| s.inputs.as_slice()) {
        Some([only]) if only.shape.len() == 2 && columns.as_slice() != [only.name.as_str()] => Ok(
            vec![whole(data, columns.len(), &only.name, only.element_type())?],
        ),
        _ => per_column(data, &columns, signature),
    }
}

/// The column names: a non-empty list of distinct strings.
fn column_names(names: &Json) -> Result<Vec<&str>, CodecError> {
    let names = match names {
        Json::Array(names) if names.is_empty() => {
            return Err(CodecError::field(
                "dataframe_split.columns",
                "expected at least one column",
            ))
        }
        Json::Array(names) => names,
        other => {
            return Err(CodecError::field(
                "dataframe_split.columns",
                format!("expected a list of column names, got {}", other.describe()),
            ))
        }
    };
    let mut columns = Vec::with_capacity(names.len());
    let mut seen = HashSet::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let field = || format!("dataframe_split.columns[{i}]");
        let Json::Scalar(Value::String(name)) = name else {
            return Err(CodecError::field(
                field(),
                format!("expected a column name, got {}", name.describe()),
            ));
        };
        if !seen.insert(name.as_str()) {
            return Err(CodecError::field(
                field(),
                format!("column `{name}` appears twice"),
            ));
        }
        columns.push(name.as_str());
    }
    Ok(columns)
}

/// The whole table as one `[rows, columns]` tensor; every cell must be a single value.
fn whole(
    data_text: &RawValue,
    width: usize,
    name: &str,
    element_type: Option<ElementType>,
) -> Result<Tensor, CodecError> {
    let path = |at: &[usize]| indexed("dataframe_split.data", at);
    let mut cells = Cells::Whole(Box::new(Walk::with_rank(path, element_type, 2)));
    let rows = read_rows(data_text, width, &mut cells)?;
    let Cells::Whole(walk) = cells else {
        return Err(CodecError::field("dataframe_split.data", "unreadable"));
    };
    let (_, element_type, mut data) = walk.finish()?;
    reparse_f64_exactly(element_type, data_text.get(), &mut data);
    Ok(Tensor {
        name: name.to_owned(),
        shape: vec![rows, width as u64],
        element_type,
        data,
    })
}

/// One tensor per column (or, without a signature, one joined tensor; see the module).
fn per_column(
    data: &RawValue,
    columns: &[&str],
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    let walks = columns
        .iter()
        .enumerate()
        .map(|(c, column)| {
            let path = move |at: &[usize]| match at.split_first() {
                Some((r, rest)) => indexed(&format!("dataframe_split.data[{r}][{c}]"), rest),
                None => "dataframe_split.data".to_owned(),
            };
            let element_type = declared(signature, column).and_then(TensorSignature::element_type);
            Walk::new(path, element_type)
        })
        .collect();
    let mut cells = Cells::Columns(walks);
    let rows = read_rows(data, columns.len(), &mut cells)?;
    let Cells::Columns(mut walks) = cells else {
        return Err(CodecError::field("dataframe_split.data", "unreadable"));
    };
    exact_f64_columns(data, &mut walks, rows);
    let join = signature.is_none().then_some(DEFAULT_INPUT);
    column_tensors(columns, walks, rows, signature, join)
}

/// Reads the cells of the columns declared FP64 again, exactly (see
/// `crate::codec::stream::reparse_f64_exactly`), when every cell of the table is a single
/// number: then the table's numbers, row by row, are its cells in order. A table with
/// other cells (strings, lists) keeps the first parse, which can be one ulp off.
fn exact_f64_columns(data: &RawValue, walks: &mut [Walk<'_>], rows: u64) {
    let rows = usize::try_from(rows).unwrap_or(usize::MAX);
    if !walks
        .iter_mut()
        .any(|w| w.declared_f64_elements(rows).is_some())
    {
        return;
    }
    let width = walks.len();
    let Some(cells) = exact_number_table(data.get()) else {
        return;
    };
    if cells.len() != rows.saturating_mul(width) {
        return;
    }
    for (c, walk) in walks.iter_mut().enumerate() {
        if let Some(out) = walk.declared_f64_elements(rows) {
            for (slot, exact) in out
                .chunks_exact_mut(8)
                .zip(cells.iter().skip(c).step_by(width))
            {
                slot.copy_from_slice(&exact.to_le_bytes());
            }
        }
    }
}

/// Where each cell goes.
enum Cells<'b> {
    /// One tensor; the cell at row `r`, column `c` is its element `[r, c]`.
    Whole(Box<Walk<'b>>),
    /// One tensor per column; the cell at row `r` is its element (or block) `[r]`.
    Columns(Vec<Walk<'b>>),
}

/// Reads the rows of `data`, each of `width` cells; returns how many there were.
fn read_rows(data: &RawValue, width: usize, cells: &mut Cells<'_>) -> Result<u64, CodecError> {
    let mut table = Table {
        cells,
        width,
        rows: 0,
        error: None,
    };
    let mut de = serde_json::Deserializer::from_str(data.get());
    let parsed = Rows(&mut table)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    let walk_error = match &mut *table.cells {
        Cells::Whole(walk) => walk.error.take(),
        Cells::Columns(walks) => walks.iter_mut().find_map(|w| w.error.take()),
    };
    if let Some(error) = table.error.take().or(walk_error) {
        return Err(error);
    }
    parsed.map_err(|e| CodecError::field("dataframe_split.data", e.to_string()))?;
    Ok(table.rows)
}

struct Table<'c, 'b> {
    cells: &'c mut Cells<'b>,
    width: usize,
    rows: u64,
    error: Option<CodecError>,
}

impl Table<'_, '_> {
    fn fail<E: de::Error>(&mut self, row: u64, problem: String) -> E {
        let error = CodecError::field(format!("dataframe_split.data[{row}]"), problem);
        let text = error.to_string();
        self.error = Some(error);
        E::custom(text)
    }
}

/// The visitor over `data`, a list of rows.
struct Rows<'t, 'c, 'b>(&'t mut Table<'c, 'b>);

impl<'de> DeserializeSeed<'de> for Rows<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let table = self.0;
        while seq.next_element_seed(Row(&mut *table))?.is_some() {
            table.rows += 1;
        }
        Ok(())
    }
}

/// The visitor over one row, a list of cells.
struct Row<'t, 'c, 'b>(&'t mut Table<'c, 'b>);

impl<'de> DeserializeSeed<'de> for Row<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Row<'_, '_, '_> {
    fn not_a_row<E: de::Error>(self, got: String) -> E {
        let row = self.0.rows;
        self.0
            .fail(row, format!("expected a row (a list), got {got}"))
    }
}

impl<'de> Visitor<'de> for Row<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        Err(self.not_a_row(describe_value(&Value::Bool(v))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        Err(self.not_a_row(describe_value(&Value::from(v))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        Err(self.not_a_row(describe_value(&Value::from(v))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        Err(self.not_a_row(describe_value(&Value::from(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        Err(self.not_a_row(describe_value(&Value::from(v))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_a_row("null".to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.not_a_row("an object".to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let table = self.0;
        let (row, width) = (table.rows, table.width);
        let r = usize::try_from(row).unwrap_or(usize::MAX);
        let mut c = 0;
        loop {
            if c == width {
                let mut extra = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    extra += 1;
                }
                if extra > 0 {
                    let got = width + extra;
                    return Err(table.fail(
                        row,
                        format!("expected {width} values (one per column), got {got}"),
                    ));
                }
                return Ok(());
            }
            let node = match &mut *table.cells {
                Cells::Whole(walk) => {
                    walk.at.clear();
                    walk.at.extend([r, c]);
                    walk.node(2)
                }
                Cells::Columns(walks) => match walks.get_mut(c) {
                    Some(walk) => {
                        walk.at.clear();
                        walk.at.push(r);
                        walk.node(1)
                    }
                    None => return Ok(()),
                },
            };
            if seq.next_element_seed(node)?.is_none() {
                break;
            }
            c += 1;
        }
        Err(table.fail(
            row,
            format!("expected {width} values (one per column), got {c}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, signature: Option<&Signature>) -> Result<Vec<Tensor>, String> {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        from_split(&raw, signature).map_err(|e| e.to_string())
    }

    #[test]
    fn columns_may_follow_the_data_and_join_when_they_agree() {
        let t = parse(
            r#"{"data": [["a", "bc"], ["", "d"]], "columns": ["x", "y"]}"#,
            None,
        )
        .unwrap();
        assert_eq!((t.len(), t[0].name.as_str()), (1, "input"));
        assert_eq!(
            (t[0].shape.as_slice(), t[0].element_type),
            (&[2, 2][..], ElementType::Bytes)
        );
        assert_eq!(t[0].data, b"\x01\0\0\0a\x02\0\0\0bc\0\0\0\0\x01\0\0\0d");
        let t = parse(
            r#"{"columns": ["x", "v"], "data": [[1, [2, 3]], [4, [5, 6]]]}"#,
            None,
        )
        .unwrap();
        let shapes: Vec<&[u64]> = t.iter().map(|t| t.shape.as_slice()).collect();
        assert_eq!(shapes, [&[2][..], &[2, 2][..]]);
    }

    #[test]
    fn rows_and_cells_are_named_in_errors() {
        let e = |text: &str| parse(text, None).unwrap_err();
        assert_eq!(
            e(r#"{"columns": ["a"], "data": [[1], 2]}"#),
            "`dataframe_split.data[1]`: expected a row (a list), got 2"
        );
        assert_eq!(
            e(r#"{"columns": ["a"], "data": [[1], [2, 3, 4]]}"#),
            "`dataframe_split.data[1]`: expected 1 values (one per column), got 3"
        );
        assert_eq!(
            e(r#"{"columns": ["a", "b"], "data": [[1, [2]], [3, [4, 5]]]}"#),
            "`dataframe_split.data[1][1]`: ragged array: expected 1 elements, got 2"
        );
        assert_eq!(
            e(r#"{"columns": ["a"], "data": {}}"#),
            "`dataframe_split.data`: expected a list of rows, got an object"
        );
        assert_eq!(
            e(r#"{"columns": ["a"], "data": [ ]}"#),
            "`dataframe_split.data`: expected at least one row"
        );
    }
}
