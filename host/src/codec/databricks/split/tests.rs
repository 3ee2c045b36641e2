//! Tests of `dataframe_split`: field order, errors naming rows and cells, FP64 exactness.

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

#[test]
fn columns_first_reads_data_in_the_pass_and_reads_as_data_first_does() {
    let inline = r#"{"index": [0, 1], "columns": ["x", "y"], "data": [[1.5, 2], [3, 4.25]]}"#;
    let text = r#"{"data": [[1.5, 2], [3, 4.25]], "columns": ["x", "y"], "index": [0, 1]}"#;
    assert_eq!(parse(inline, None).unwrap(), parse(text, None).unwrap());
    let declared = Signature {
        inputs: vec![
            TensorSignature {
                name: "x".into(),
                datatype: "FP16".into(),
                shape: vec![-1],
            },
            TensorSignature {
                name: "y".into(),
                datatype: "FP64".into(),
                shape: vec![-1],
            },
        ],
        outputs: Vec::new(),
    };
    let inline = r#"{"columns": ["x", "y"], "data": [[0.5, 0.17004902735071079]]}"#;
    let t = parse(inline, Some(&declared)).unwrap();
    assert_eq!(t[0].data, [0, 0x38]);
    // FP64 cells are read again from the text, exactly, columns first or not.
    assert_eq!(t[1].data, 0.17004902735071079f64.to_le_bytes());
}

#[test]
fn fields_are_checked_whatever_their_order() {
    let e = |text: &str| parse(text, None).unwrap_err();
    assert_eq!(
        e(r#"{"columns": ["a"], "data": [[1]], "rows": 1}"#),
        "`dataframe_split.rows`: unknown field; expected `columns`, `data` and optionally `index`"
    );
    assert!(
        e(r#"{"columns": ["a"], "data": [[1]], "data": [[2]]}"#).contains("duplicate key `data`")
    );
    assert!(e(r#"{"columns": ["a"], "columns": ["b"], "data": [[1]]}"#)
        .contains("duplicate key `columns`"));
    assert_eq!(
        e(r#"{"columns": ["a", "a"], "data": [[1, 2]]}"#),
        "`dataframe_split.columns[1]`: column `a` appears twice"
    );
    assert_eq!(
        e(r#"{"columns": ["a"]}"#),
        "`dataframe_split.data`: missing"
    );
    assert_eq!(
        e(r#"{"data": [[1]]}"#),
        "`dataframe_split.columns`: missing"
    );
    assert_eq!(
        e(r#"{"columns": ["a"], "data": 7}"#),
        "`dataframe_split.data`: expected a list of rows, got 7"
    );
    assert!(e(r#"[1]"#).contains("expected an object with `columns` and `data`"));
}
