//! The fast path for the bulk of tensor data: a JSON array (flat or nested) of plain
//! numbers read into a floating-point tensor with a byte scanner and the standard
//! library's float parser, instead of serde's per-element visitor (which builds a JSON
//! value for every element and parses floats more slowly). A profile of 2048-float V2
//! requests put ~30% of the server's CPU in that visitor.
//!
//! It accepts only what it reads exactly as the general path ([`super::stream`]) would:
//! well-formed arrays of JSON numbers, finite, nested at most [`MAX_DATA_DEPTH`], exactly
//! the expected count. Anything else (strings, `null`, a wrong count, odd syntax) returns
//! `None` and the general path reads the text again and reports what is wrong.

use super::elements::push_float;
use super::stream::MAX_DATA_DEPTH;
use crate::runtime::ElementType;

/// Reads `text` as exactly `expected` elements of the floating-point type `t`, or `None`
/// when it is not a plain array of numbers of that count (or `t` is not a float type).
/// `reserve` bounds the room taken up front (the caller derives it from the text's size,
/// so a lying shape cannot ask for more than the text could hold).
pub(crate) fn read_floats(
    text: &str,
    t: ElementType,
    expected: u64,
    reserve: usize,
) -> Option<Vec<u8>> {
    if !matches!(
        t,
        ElementType::F16 | ElementType::Bf16 | ElementType::F32 | ElementType::F64
    ) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(reserve);
    let mut count = 0u64;
    let mut depth = 0usize;
    // What may come next: a value (after `,`), a value or `]` (after `[`), or `,` / `]` /
    // the end (after a value).
    #[derive(PartialEq)]
    enum Next {
        Value,
        ValueOrClose,
        CommaOrClose,
    }
    let mut next = Next::Value;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
            continue;
        }
        match (b, &next) {
            (b'[', Next::Value | Next::ValueOrClose) => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return None;
                }
                next = Next::ValueOrClose;
                i += 1;
            }
            (b']', Next::ValueOrClose | Next::CommaOrClose) if depth > 0 => {
                depth -= 1;
                next = Next::CommaOrClose;
                i += 1;
            }
            (b',', Next::CommaOrClose) if depth > 0 => {
                next = Next::Value;
                i += 1;
            }
            (b'-' | b'0'..=b'9', Next::Value | Next::ValueOrClose) => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &bytes[start..i];
                if count >= expected || !is_json_number(token) {
                    return None;
                }
                // ASCII only, so always valid UTF-8 at these bounds.
                let value: f64 = text.get(start..i)?.parse().ok()?;
                if !value.is_finite() {
                    return None;
                }
                push_float(t, value, &mut out);
                count += 1;
                next = Next::CommaOrClose;
            }
            _ => return None,
        }
    }
    (depth == 0 && next == Next::CommaOrClose && count == expected).then_some(out)
}

/// Whether `token` is a JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(token: &[u8]) -> bool {
    let digits = |from: usize| {
        token[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut i = usize::from(token.first() == Some(&b'-'));
    match token.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return false,
    }
    if token.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(token.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(token.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == token.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(text: &str, expected: u64) -> Option<Vec<f32>> {
        read_floats(text, ElementType::F32, expected, 0).map(|bytes| {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    #[test]
    fn plain_arrays_of_numbers_are_read() {
        assert_eq!(
            floats("[1, -2.5, 3e2, 0.125E-1]", 4),
            Some(vec![1.0, -2.5, 300.0, 0.0125])
        );
        assert_eq!(
            floats(" [[1,2] ,\n[3,4]] ", 4),
            Some(vec![1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(floats("7", 1), Some(vec![7.0]));
        assert_eq!(floats("[[], [5]]", 1), Some(vec![5.0]));
        assert_eq!(floats("[]", 0), Some(vec![]));
    }

    #[test]
    fn anything_but_well_formed_numbers_goes_to_the_general_path() {
        for text in [
            "[1, 2",
            "[1, 2]]",
            "[1,, 2]",
            "[1 2]",
            "[,1, 2]",
            "[1, 2,]",
            "1, 2",
            "[1, null]",
            "[1, \"2\"]",
            "[1, true]",
            "[01, 2]",
            "[1., 2]",
            "[.5, 2]",
            "[+1, 2]",
            "[1e, 2]",
            "[1, 2e+]",
            "[--1, 2]",
            "[1-2, 3]",
            "[NaN, 1]",
            "[1e400, 2]",
            "[{}, 1]",
            "]",
        ] {
            assert_eq!(floats(text, 2), None, "{text}");
        }
        // A count other than the shape's: the general path reports it.
        assert_eq!(floats("[1, 2, 3]", 2), None);
        assert_eq!(floats("[1]", 2), None);
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(floats(&deep, 1), None);
        let deepest = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(floats(&deepest, 1), Some(vec![1.0]));
        // Integer types are not this path's.
        assert_eq!(read_floats("[1, 2]", ElementType::I32, 2, 0), None);
    }
}
