//! sandserve host library: the sandboxed runtime that runs tenants' model handlers.
//! The `sandserve` binary (`main.rs`) is a thin CLI over it.

pub mod api;
pub mod authoring;
pub mod blobs;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod governance;
pub mod images;
pub mod inference;
pub mod listener;
pub mod package;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod serving;
pub mod telemetry;
pub mod tenancy;
