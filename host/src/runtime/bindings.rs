//! Host bindings generated from `wit/world.wit`: the only `bindgen!` in the host.
//!
//! wasi-nn and WASI are not generated here; they come from `wasmtime-wasi-nn` and
//! `wasmtime-wasi` and their own `add_to_linker` functions.

#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    world: "model-handler",
    path: "../wit",
    additional_derives: [PartialEq],
});

pub use sandserve::handler::logging::Level as LogLevel;
pub use sandserve::handler::types::{ElementType, HandlerError, Request, Response, Tensor};
