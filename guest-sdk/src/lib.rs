//! # sandserve-sdk: write sandserve model handlers in plain Rust
//!
//! A handler is a type implementing [`Handler`], exported with [`export_handler!`], and
//! compiled for `wasm32-wasip2`. The host turns every request format it accepts
//! (Databricks `dataframe_split` / `dataframe_records` / `instances` / `inputs`, KServe V2)
//! into typed [`Tensor`]s before the handler runs, so handlers never parse JSON.
//!
//! ```no_run
//! use sandserve_sdk::{export_handler, Handler, HandlerError, Request, Response, Tensor};
//!
//! struct Doubler;
//!
//! impl Handler for Doubler {
//!     fn predict(request: Request) -> Result<Response, HandlerError> {
//!         let input = request.input("x")?;
//!         let doubled: Vec<f32> = input.to_vec::<f32>()?.iter().map(|v| v * 2.0).collect();
//!         let output = Tensor::from_values("y", input.shape.clone(), &doubled)?;
//!         Ok(Response::new(vec![output]))
//!     }
//! }
//!
//! export_handler!(Doubler);
//! # fn main() {}
//! ```
//!
//! Inference goes through [`nn`] (wasi-nn underneath): load one of your image's named
//! graphs with [`nn::Graph::load`], then [`nn::Graph::run`] it. Log with the macros in
//! [`log`]; records land in the host's log tagged with your tenant, model and version.
#![deny(missing_docs)]

mod convert;
mod error;
mod handler;
pub mod log;
pub mod nn;
mod tensor;

pub use error::HandlerError;
pub use handler::{Handler, Request, Response};
pub use tensor::{Element, ElementType, Tensor, TensorError};

/// Bindings generated from the WIT contract. Not part of the public API.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "model-handler",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_bindings",
        default_bindings_module: "sandserve_sdk::bindings",
        generate_all,
    });
}

/// Glue used by [`export_handler!`]. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::sandserve::handler::handler::Guest;
    use crate::bindings::sandserve::handler::types as wit;

    /// Runs `H::predict` on a request lifted from the host.
    pub fn dispatch<H: crate::Handler>(
        request: wit::Request,
    ) -> Result<wit::Response, wit::HandlerError> {
        H::predict(request.into())
            .map(Into::into)
            .map_err(Into::into)
    }
}

/// Exports a [`Handler`] implementation as this component's `predict` function.
///
/// Call it once, at the top level of your crate, with the handler type.
///
/// ```no_run
/// # use sandserve_sdk::{Handler, HandlerError, Request, Response};
/// struct Echo;
/// impl Handler for Echo {
///     fn predict(request: Request) -> Result<Response, HandlerError> {
///         Ok(Response::new(request.inputs))
///     }
/// }
/// sandserve_sdk::export_handler!(Echo);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = {
            struct __SandserveExport;
            impl $crate::__private::Guest for __SandserveExport {
                fn predict(
                    request: $crate::bindings::sandserve::handler::types::Request,
                ) -> ::core::result::Result<
                    $crate::bindings::sandserve::handler::types::Response,
                    $crate::bindings::sandserve::handler::types::HandlerError,
                > {
                    $crate::__private::dispatch::<$handler>(request)
                }
            }
    $crate::bindings::__export_bindings!(__SandserveExport with_types_in $crate::bindings);
        };
    };
}

/// The README's handler example, compiled as a doctest so it cannot drift from the SDK.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
