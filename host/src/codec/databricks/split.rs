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
use super::json::{
    describe_raw, describe_value, read_in_one_pass, refuse_single_values, Json, Key,
};
use super::names::{declared, indexed};
use super::stream::Walk;
use super::{CodecError, DEFAULT_INPUT};
use crate::codec::stream::{exact_number_table, reparse_f64_exactly, ElementsError};
use crate::package::{Signature, TensorSignature};
use crate::runtime::{ElementType, Tensor};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// `dataframe_split` to tensors, in the one pass over the object when `columns` comes
/// before `data` (as pandas writes it), else with `data` kept as text until the columns
/// are known. Data whose cells the signature declares FP64 is kept as text either way, for
/// the exact second pass.
pub(super) fn from_split(
    raw: &RawValue,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    if !raw.get().trim_start().starts_with('{') {
        return Err(CodecError::field(
            "dataframe_split",
            format!(
                "expected an object with `columns` and `data`, got {}",
                describe_raw(raw)
            ),
        ));
    }
    let data_error = RefCell::new(None);
    let seed = Split {
        signature,
        data_error: &data_error,
    };
    let (names, data) = read_in_one_pass(raw.get(), seed, &data_error)?;
    let missing = |f: &str| CodecError::field(format!("dataframe_split.{f}"), "missing");
    let names = names.ok_or_else(|| missing("columns"))?;
    match data.ok_or_else(|| missing("data"))? {
        SplitData::Read(tensors) => Ok(tensors),
        SplitData::Text(text) => {
            let columns = column_names(&names)?;
            let mut de = serde_json::Deserializer::from_str(text.get());
            let table = read_table(&mut de, &columns, signature);
            let table = table.and_then(|t| de.end().map(|()| t).map_err(ElementsError::Json));
            let table = table.map_err(|e| match e {
                ElementsError::Data(error) => error,
                ElementsError::Json(e) => CodecError::field("dataframe_split.data", e.to_string()),
            })?;
            table.tensors(&columns, signature, Some(text))
        }
    }
}

/// `data` as the pass over the object left it.
enum SplitData<'de> {
    /// Read already, the columns having come first.
    Read(Vec<Tensor>),
    /// Its text, for after the pass.
    Text(&'de RawValue),
}

/// The `dataframe_split` object: `columns` (a small tree), `data` read as it is met when
/// the columns are known by then, `index` skipped; another field, or one twice, is an
/// error.
struct Split<'s, 'c> {
    signature: Option<&'s Signature>,
    /// The error in the data (or the columns) that stopped the pass, if one did.
    data_error: &'c RefCell<Option<CodecError>>,
}

impl<'de> DeserializeSeed<'de> for Split<'_, '_> {
    type Value = (Option<Json>, Option<SplitData<'de>>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Split<'_, '_> {
    type Value = (Option<Json>, Option<SplitData<'de>>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with `columns` and `data`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let fail = |error: CodecError| {
            let message = error.to_string();
            *self.data_error.borrow_mut() = Some(error);
            de::Error::custom(message)
        };
        let (mut names, mut data, mut index) = (None::<Json>, None, false);
        while let Some(Key(key)) = map.next_key()? {
            let repeated = match key.as_ref() {
                "columns" => names.replace(map.next_value()?).is_some(),
                "data" => {
                    let columns = names.as_ref().map(column_names).transpose().map_err(fail)?;
                    let read = match columns {
                        Some(columns) if !holds_f64(&columns, self.signature) => {
                            let seed = TableSeed {
                                columns: &columns,
                                signature: self.signature,
                            };
                            SplitData::Read(map.next_value_seed(seed)?.map_err(fail)?)
                        }
                        _ => SplitData::Text(map.next_value()?),
                    };
                    data.replace(read).is_some()
                }
                "index" => {
                    map.next_value::<IgnoredAny>()?;
                    std::mem::replace(&mut index, true)
                }
                other => {
                    return Err(fail(CodecError::field(
                        format!("dataframe_split.{other}"),
                        "unknown field; expected `columns`, `data` and optionally `index`",
                    )))
                }
            };
            if repeated {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
        }
        Ok((names, data))
    }
}

/// `data` read where the pass stands, into the tensors of `columns`: our error in it as
/// the value, the deserializer's own as its error.
struct TableSeed<'s> {
    columns: &'s [&'s str],
    signature: Option<&'s Signature>,
}

impl<'de> DeserializeSeed<'de> for TableSeed<'_> {
    type Value = Result<Vec<Tensor>, CodecError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match read_table(d, self.columns, self.signature) {
            Ok(table) => Ok(table.tensors(self.columns, self.signature, None)),
            Err(ElementsError::Data(error)) => Ok(Err(error)),
            Err(ElementsError::Json(e)) => Err(e),
        }
    }
}

/// Whether any cell of the table is declared FP64 (then `data` is read from its text,
/// which the exact second pass needs).
fn holds_f64(columns: &[&str], signature: Option<&Signature>) -> bool {
    match whole_input(columns, signature) {
        Some(only) => only.element_type() == Some(ElementType::F64),
        None => columns.iter().any(|c| {
            declared(signature, c).and_then(TensorSignature::element_type) == Some(ElementType::F64)
        }),
    }
}

/// The input the whole table fills as one `[rows, columns]` tensor: with a signature of
/// exactly one rank-2 input, and columns other than that input's name.
fn whole_input<'s>(
    columns: &[&str],
    signature: Option<&'s Signature>,
) -> Option<&'s TensorSignature> {
    match signature.map(|s| s.inputs.as_slice()) {
        Some([only]) if only.shape.len() == 2 && columns != [only.name.as_str()] => Some(only),
        _ => None,
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

/// A table as read: where its cells went, and how many rows it had.
struct ReadTable<'b> {
    cells: Cells<'b>,
    rows: u64,
}

/// Reads `data`, a list of rows of one cell per column, from where `d` stands: into one
/// tensor for the whole table (see [`whole_input`]), else one per column.
fn read_table<'de, 'b, D: Deserializer<'de>>(
    d: D,
    columns: &[&str],
    signature: Option<&Signature>,
) -> Result<ReadTable<'b>, ElementsError<D::Error>> {
    let mut cells = match whole_input(columns, signature) {
        Some(only) => {
            let path = |at: &[usize]| indexed("dataframe_split.data", at);
            Cells::Whole(Box::new(Walk::with_rank(path, only.element_type(), 2)))
        }
        None => Cells::Columns(
            columns
                .iter()
                .enumerate()
                .map(|(c, column)| {
                    let path = move |at: &[usize]| match at.split_first() {
                        Some((r, rest)) => {
                            indexed(&format!("dataframe_split.data[{r}][{c}]"), rest)
                        }
                        None => "dataframe_split.data".to_owned(),
                    };
                    let element_type =
                        declared(signature, column).and_then(TensorSignature::element_type);
                    Walk::new(path, element_type)
                })
                .collect(),
        ),
    };
    let mut table = Table {
        cells: &mut cells,
        width: columns.len(),
        rows: 0,
        error: None,
    };
    let parsed = Rows(&mut table).deserialize(d);
    let rows = table.rows;
    let table_error = table.error.take();
    let walk_error = match &mut cells {
        Cells::Whole(walk) => walk.error.take(),
        Cells::Columns(walks) => walks.iter_mut().find_map(|w| w.error.take()),
    };
    if let Some(error) = table_error.or(walk_error) {
        return Err(ElementsError::Data(error));
    }
    parsed.map_err(ElementsError::Json)?;
    if rows == 0 {
        return Err(ElementsError::Data(CodecError::field(
            "dataframe_split.data",
            "expected at least one row",
        )));
    }
    Ok(ReadTable { cells, rows })
}

impl ReadTable<'_> {
    /// The tensors of the table: one `[rows, columns]` tensor named after the signature's
    /// only input, or one per column (without a signature joined into one when they
    /// agree; see the module). `text`: the data's text, when FP64 cells are to be read
    /// again exactly.
    fn tensors(
        self,
        columns: &[&str],
        signature: Option<&Signature>,
        text: Option<&RawValue>,
    ) -> Result<Vec<Tensor>, CodecError> {
        let rows = self.rows;
        match self.cells {
            Cells::Whole(walk) => {
                let name = whole_input(columns, signature).map_or(DEFAULT_INPUT, |o| &o.name);
                let (_, element_type, mut data) = walk.finish()?;
                if let Some(text) = text {
                    reparse_f64_exactly(element_type, text.get(), &mut data);
                }
                Ok(vec![Tensor {
                    name: name.to_owned(),
                    shape: vec![rows, columns.len() as u64],
                    element_type,
                    data,
                }])
            }
            Cells::Columns(mut walks) => {
                if let Some(text) = text {
                    exact_f64_columns(text, &mut walks, rows);
                }
                let join = signature.is_none().then_some(DEFAULT_INPUT);
                column_tensors(columns, walks, rows, signature, join)
            }
        }
    }
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

struct Table<'c, 'b> {
    cells: &'c mut Cells<'b>,
    width: usize,
    rows: u64,
    error: Option<CodecError>,
}

impl Table<'_, '_> {
    /// Stops the read with `problem` at `field`.
    fn fail_at<E: de::Error>(&mut self, field: String, problem: String) -> E {
        let error = CodecError::field(field, problem);
        let text = error.to_string();
        self.error = Some(error);
        E::custom(text)
    }

    fn fail<E: de::Error>(&mut self, row: u64, problem: String) -> E {
        self.fail_at(format!("dataframe_split.data[{row}]"), problem)
    }
}

/// The visitor over `data`, a list of rows.
struct Rows<'t, 'c, 'b>(&'t mut Table<'c, 'b>);

impl<'de> DeserializeSeed<'de> for Rows<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Rows<'_, '_, '_> {
    fn not_a_list<E: de::Error>(self, got: String) -> E {
        let problem = format!("expected a list of rows, got {got}");
        self.0.fail_at("dataframe_split.data".to_owned(), problem)
    }
}

impl<'de> Visitor<'de> for Rows<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of rows")
    }

    refuse_single_values!(not_a_list);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.not_a_list("an object".to_owned()))
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
    fn not_a_list<E: de::Error>(self, got: String) -> E {
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

    refuse_single_values!(not_a_list);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.not_a_list("an object".to_owned()))
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
mod tests;
