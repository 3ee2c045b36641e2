//! Authoring model packages beyond Rust handler crates: Python handlers built into
//! components with componentize-py ([`python`]), and packages with a model file and a
//! signature but no handler code, served by the built-in generic handler ([`model_only`]).
//! The CLI (`sandserve package`, `sandserve new`) calls these; nothing here runs in the
//! server.

mod error;
pub mod model_only;
pub mod python;

pub use error::AuthoringError;
