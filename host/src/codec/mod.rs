//! Request and response codecs: turning the JSON formats clients speak into the typed
//! tensors handlers see, and back. Handlers never parse JSON themselves. Each query
//! protocol is one [`QueryCodec`].

pub mod binary;
pub mod databricks;
mod elements;
mod error;
mod query;
pub mod signature;
mod stream;
pub mod v2;
mod view;

pub use crate::runtime::{element_type_from_v2, v2_datatype};
pub use error::CodecError;
pub use query::{DatabricksCodec, QueryCodec, V2Codec};
