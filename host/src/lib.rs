//! sandserve host library: the sandboxed runtime that runs tenants' model handlers.
//! The `sandserve` binary (`main.rs`) is a thin CLI over it.

pub mod codec;
pub mod inference;
pub mod runtime;
