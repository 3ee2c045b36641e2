//! The four Databricks request formats mapped onto tensors: `inputs` and `instances`
//! (nested arrays, or rows of objects), `dataframe_split` and `dataframe_records` (tables
//! of named columns), with the signature deciding between one tensor per column and one
//! `[rows, columns]` tensor.

use super::json::{describe_raw, first_element_start, tree, Json, RawObject};
use super::stream::nested_tensor;
use super::tensors::{
    collect_leaves, declared, declared_type, encode_tensor, indexed, infer, probe_dims,
    single_input, unravel,
};
use super::{CodecError, DEFAULT_INPUT};
use crate::package::{Signature, TensorSignature};
use crate::runtime::{ElementType, Tensor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// `inputs`: `{name: nested array | scalar, ...}`, or one bare nested array. Each tensor
/// is parsed straight from the body text.
pub(super) fn from_inputs(
    raw: &RawValue,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    let object: RawObject<'_> =
        serde_json::from_str(raw.get()).map_err(|e| CodecError::Json(e.to_string()))?;
    match object.0 {
        Some(entries) if entries.is_empty() => Err(CodecError::field(
            "inputs",
            "expected at least one input, got an empty object",
        )),
        Some(entries) => entries
            .iter()
            .map(|(name, v)| {
                nested_tensor(
                    name,
                    v,
                    &format!("inputs.{name}"),
                    declared_type(signature, name),
                )
            })
            .collect(),
        None => {
            let name = single_input(signature, "inputs")?;
            let element_type = declared_type(signature, &name);
            Ok(vec![nested_tensor(&name, raw, "inputs", element_type)?])
        }
    }
}

/// `instances`: a list of objects (one tensor per key, stacked along a new first axis), or
/// a list of values (one tensor, the list itself, parsed straight from the body text).
pub(super) fn from_instances(
    raw: &RawValue,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    if !raw.get().trim_start().starts_with('[') {
        return Err(CodecError::field(
            "instances",
            format!("expected a list, got {}", describe_raw(raw)),
        ));
    }
    match first_element_start(raw) {
        None => Err(CodecError::field(
            "instances",
            "expected at least one instance, got an empty list",
        )),
        Some(b'{') => {
            let Json::Array(items) = tree(raw)? else {
                return Err(CodecError::field("instances", "expected a list"));
            };
            per_column(&objects_table(&items, Source::Instances)?, signature)
        }
        Some(_) => {
            let name = single_input(signature, "instances")?;
            let element_type = declared_type(signature, &name);
            Ok(vec![nested_tensor(&name, raw, "instances", element_type)?])
        }
    }
}

/// Where a table came from, for naming its cells in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Split,
    Records,
    Instances,
}

/// Rows of named cells: a dataframe, or `instances` given as objects.
pub(super) struct Table<'a> {
    source: Source,
    columns: Vec<&'a str>,
    /// `rows[r][c]` is the cell of column `c` in row `r`; every row has every column.
    rows: Vec<Vec<&'a Json>>,
}

impl Table<'_> {
    /// The path of cell (`row`, `column`).
    fn cell_path(&self, row: usize, column: usize) -> String {
        let name = self.columns.get(column).copied().unwrap_or("?");
        match self.source {
            Source::Split => format!("dataframe_split.data[{row}][{column}]"),
            Source::Records => format!("dataframe_records[{row}].{name}"),
            Source::Instances => format!("instances[{row}].{name}"),
        }
    }
}

/// `dataframe_split`: `{columns: [...], data: [[...], ...], index?: [...]}`.
pub(super) fn split_table(value: &Json) -> Result<Table<'_>, CodecError> {
    let Json::Object(entries) = value else {
        return Err(CodecError::field(
            "dataframe_split",
            format!(
                "expected an object with `columns` and `data`, got {}",
                value.describe()
            ),
        ));
    };
    let mut columns = None;
    let mut data = None;
    for (key, v) in entries {
        match key.as_str() {
            "columns" => columns = Some(v),
            "data" => data = Some(v),
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
    let columns = match columns.ok_or_else(|| missing("columns"))? {
        Json::Array(names) if names.is_empty() => {
            return Err(CodecError::field(
                "dataframe_split.columns",
                "expected at least one column",
            ))
        }
        Json::Array(names) => {
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
            columns
        }
        other => {
            return Err(CodecError::field(
                "dataframe_split.columns",
                format!("expected a list of column names, got {}", other.describe()),
            ))
        }
    };
    let rows = match data.ok_or_else(|| missing("data"))? {
        Json::Array(rows) if rows.is_empty() => {
            return Err(CodecError::field(
                "dataframe_split.data",
                "expected at least one row",
            ))
        }
        Json::Array(rows) => rows
            .iter()
            .enumerate()
            .map(|(r, row)| match row {
                Json::Array(cells) if cells.len() == columns.len() => Ok(cells.iter().collect()),
                Json::Array(cells) => Err(CodecError::field(
                    format!("dataframe_split.data[{r}]"),
                    format!(
                        "expected {} values (one per column), got {}",
                        columns.len(),
                        cells.len()
                    ),
                )),
                other => Err(CodecError::field(
                    format!("dataframe_split.data[{r}]"),
                    format!("expected a row (a list), got {}", other.describe()),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(CodecError::field(
                "dataframe_split.data",
                format!("expected a list of rows, got {}", other.describe()),
            ))
        }
    };
    Ok(Table {
        source: Source::Split,
        columns,
        rows,
    })
}

/// `dataframe_records`: `[{column: value, ...}, ...]`.
pub(super) fn records_table(value: &Json) -> Result<Table<'_>, CodecError> {
    let Json::Array(items) = value else {
        return Err(CodecError::field(
            "dataframe_records",
            format!("expected a list of records, got {}", value.describe()),
        ));
    };
    if items.is_empty() {
        return Err(CodecError::field(
            "dataframe_records",
            "expected at least one record, got an empty list",
        ));
    }
    objects_table(items, Source::Records)
}

/// A table from a non-empty list of objects: the columns are the first object's keys, in
/// order, and every object must have exactly those keys.
fn objects_table(items: &[Json], source: Source) -> Result<Table<'_>, CodecError> {
    let base = match source {
        Source::Instances => "instances",
        Source::Records | Source::Split => "dataframe_records",
    };
    let mut columns: Vec<&str> = Vec::new();
    let mut rows = Vec::with_capacity(items.len());
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (r, item) in items.iter().enumerate() {
        let field = || format!("{base}[{r}]");
        let Json::Object(entries) = item else {
            return Err(CodecError::field(
                field(),
                format!("expected an object like {base}[0], got {}", item.describe()),
            ));
        };
        if r == 0 {
            if entries.is_empty() {
                return Err(CodecError::field(field(), "expected at least one column"));
            }
            columns = entries.iter().map(|(k, _)| k.as_str()).collect();
            index = columns.iter().enumerate().map(|(c, k)| (*k, c)).collect();
        }
        let in_order = entries.len() == columns.len()
            && entries.iter().zip(&columns).all(|((k, _), c)| k == c);
        if in_order {
            rows.push(entries.iter().map(|(_, v)| v).collect());
            continue;
        }
        let mut row: Vec<Option<&Json>> = vec![None; columns.len()];
        for (key, v) in entries {
            let c = index.get(key.as_str()).copied().ok_or_else(|| {
                CodecError::field(
                    field(),
                    format!("unexpected key `{key}`: {base}[0] has no such column"),
                )
            })?;
            if let Some(slot) = row.get_mut(c) {
                *slot = Some(v);
            }
        }
        let row = row
            .into_iter()
            .zip(&columns)
            .map(|(cell, c)| {
                cell.ok_or_else(|| {
                    CodecError::field(field(), format!("missing key `{c}`, which {base}[0] has"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(Table {
        source,
        columns,
        rows,
    })
}

/// A dataframe to tensors.
///
/// With a signature of exactly one rank-2 input (and columns other than that input's
/// name): one `[rows, columns]` tensor named after it. With any other signature: one
/// tensor per column. Without a signature: one `[rows, columns]` tensor named `input`
/// when every cell is a single value and all columns have the same inferred type, else
/// one tensor per column.
pub(super) fn from_dataframe(
    table: &Table<'_>,
    signature: Option<&Signature>,
) -> Result<Vec<Tensor>, CodecError> {
    match signature.map(|s| s.inputs.as_slice()) {
        Some([only])
            if only.shape.len() == 2 && table.columns.as_slice() != [only.name.as_str()] =>
        {
            Ok(vec![whole_table(table, &only.name, only.element_type())?])
        }
        Some(_) => per_column(table, signature),
        None => match common_type(table)? {
            Some(t) => Ok(vec![whole_table(table, DEFAULT_INPUT, Some(t))?]),
            None => per_column(table, None),
        },
    }
}

/// The element type every column infers to, when every cell is a single value and the
/// columns agree; `None` otherwise.
fn common_type(table: &Table<'_>) -> Result<Option<ElementType>, CodecError> {
    let scalars = table
        .rows
        .iter()
        .flatten()
        .all(|cell| matches!(cell, Json::Scalar(_)));
    if !scalars {
        return Ok(None);
    }
    let mut common = None;
    for c in 0..table.columns.len() {
        let leaves: Vec<&Json> = table
            .rows
            .iter()
            .filter_map(|row| row.get(c))
            .copied()
            .collect();
        let t = infer(&leaves, &|r| table.cell_path(r, c))?;
        match common {
            None => common = Some(t),
            Some(seen) if seen == t => {}
            Some(_) => return Ok(None),
        }
    }
    Ok(common)
}

/// The whole table as one `[rows, columns]` tensor; every cell must be a single value.
fn whole_table(
    table: &Table<'_>,
    name: &str,
    element_type: Option<ElementType>,
) -> Result<Tensor, CodecError> {
    let width = table.columns.len().max(1);
    let leaves: Vec<&Json> = table.rows.iter().flatten().copied().collect();
    let path = |i: usize| table.cell_path(i / width, i % width);
    let shape = vec![table.rows.len() as u64, table.columns.len() as u64];
    encode_tensor(name, shape, element_type, &leaves, &path)
}

/// One tensor per column: the column's cells stacked along a new first axis, so
/// `[rows, ...cell dims]`. A column of single values declared with shape `[-1, 1]` (or
/// `[-1, -1]`) becomes `[rows, 1]`.
fn per_column(table: &Table<'_>, signature: Option<&Signature>) -> Result<Vec<Tensor>, CodecError> {
    let mut tensors = Vec::with_capacity(table.columns.len());
    for (c, column) in table.columns.iter().enumerate() {
        let declaration = declared(signature, column);
        let cell_dims = table
            .rows
            .first()
            .and_then(|row| row.get(c))
            .map(|cell| probe_dims(cell))
            .unwrap_or_default();
        let mut leaves = Vec::new();
        for (r, row) in table.rows.iter().enumerate() {
            if let Some(cell) = row.get(c) {
                collect_leaves(cell, &cell_dims, &mut leaves, &mut Vec::new(), &|| {
                    table.cell_path(r, c)
                })?;
            }
        }
        let mut shape = Vec::with_capacity(cell_dims.len() + 2);
        shape.push(table.rows.len() as u64);
        shape.extend_from_slice(&cell_dims);
        let column_of_values = cell_dims.is_empty()
            && declaration.is_some_and(|d| matches!(d.shape.as_slice(), [_, 1 | -1]));
        if column_of_values {
            shape.push(1);
        }
        let per_cell = cell_dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
            .unwrap_or(usize::MAX)
            .max(1);
        let path = |i: usize| {
            indexed(
                &table.cell_path(i / per_cell, c),
                &unravel(i % per_cell, &cell_dims),
            )
        };
        let element_type = declaration.and_then(TensorSignature::element_type);
        tensors.push(encode_tensor(column, shape, element_type, &leaves, &path)?);
    }
    Ok(tensors)
}
