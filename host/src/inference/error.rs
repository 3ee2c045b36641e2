//! Errors of the inference layer: engines that did not load, graphs that did not compile,
//! targets the host cannot serve.

use thiserror::Error;

/// A failure to load an engine or a graph.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// The engine for this encoding is not loaded on this host.
    #[error(
        "the {engine} engine is not available on this host ({reason}); run scripts/setup-engines.sh \
         or point {hint} at the library"
    )]
    EngineUnavailable {
        /// Engine name (`onnx`, `openvino`).
        engine: &'static str,
        /// Why it is unavailable.
        reason: String,
        /// The setting that points at its library.
        hint: &'static str,
    },
    /// The engine library exists but could not be loaded.
    #[error("cannot load the {engine} library at {path}: {reason}")]
    EngineLoad {
        /// Engine name.
        engine: &'static str,
        /// Library path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The engine rejected the graph.
    #[error("graph `{graph}` does not load on {engine}: {reason}")]
    GraphRejected {
        /// Graph name.
        graph: String,
        /// Engine name.
        engine: &'static str,
        /// The engine's message.
        reason: String,
    },
    /// The graph asks for an execution target this host cannot provide.
    #[error("graph `{graph}` asks for target `{target}`, which this host cannot serve: {reason}")]
    TargetUnavailable {
        /// Graph name.
        graph: String,
        /// Requested target.
        target: String,
        /// Why not.
        reason: String,
    },
    /// A model file refers to files outside itself, or is not the format it claims.
    #[error("graph `{graph}` does not load: {reason}")]
    NotSelfContained {
        /// Graph name.
        graph: String,
        /// What is wrong with the file.
        reason: super::NotSelfContained,
    },
    /// An unknown graph encoding.
    #[error("unknown graph encoding `{0}`; use `onnx` or `openvino`")]
    UnknownEncoding(String),
}
