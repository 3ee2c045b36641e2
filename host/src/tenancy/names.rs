//! Names of tenants, models and endpoints: 1-64 characters of `a-z 0-9 _ -`, starting with a
//! letter or digit, so they are safe in paths, keys and logs.

use thiserror::Error;

/// A name that breaks the rules.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{field} `{value}` is not a valid name: use 1-64 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit")]
pub struct NameError {
    /// Which field.
    pub field: &'static str,
    /// The value given.
    pub value: String,
}

/// Checks a resource name.
pub fn validate_name(field: &'static str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NameError {
            field,
            value: value.chars().take(80).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_simple_names_only() {
        assert!(validate_name("name", "acme-2_x").is_ok());
        for bad in ["", "Acme", "-a", "a/b", "a b", "..", &"x".repeat(65)] {
            assert!(validate_name("name", bad).is_err(), "{bad}");
        }
    }
}
