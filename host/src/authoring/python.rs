//! Python handler projects (componentize-py). Not built in this change: the Python
//! authoring work provides [`scaffold`]; until then `sandserve new --lang python` says so.

use super::{AuthoringError, Template};

/// The files of a new Python project called `name`, from `template`.
pub fn scaffold(
    _name: &str,
    _template: Template,
) -> Result<Vec<(String, Vec<u8>)>, AuthoringError> {
    Err(AuthoringError::NotBuilt(
        "python templates: not built yet; use `--lang rust`".to_string(),
    ))
}
