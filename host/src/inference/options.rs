//! How a graph is loaded: engine, execution target policy, threads, optimisation, precision,
//! batching.

use super::batching::BatchPolicy;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which engine runs a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// ONNX Runtime, from an `.onnx` file.
    Onnx,
    /// OpenVINO, from an `.onnx` file or IR (`.xml` + `.bin`).
    Openvino,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Onnx => "onnx",
            Self::Openvino => "openvino",
        })
    }
}

/// Where a graph should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The CPU.
    #[default]
    Cpu,
    /// A GPU, or refuse to load.
    Gpu,
    /// A GPU when the host has one, else the CPU (said so in the graph's status).
    GpuOrCpu,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::GpuOrCpu => "gpu-or-cpu",
        })
    }
}

/// Graph-level optimisation the engine applies when loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Optimization {
    /// No graph rewrites.
    Disabled,
    /// Redundancy elimination and constant folding.
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything, including layout changes.
    #[default]
    All,
}

/// Numeric precision OpenVINO computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full single precision (default: results match ONNX Runtime).
    #[default]
    F32,
    /// bfloat16 where the CPU has it (faster, about 0.5% off).
    Bf16,
    /// Half precision.
    F16,
}

/// Everything that decides how one graph is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphOptions {
    /// Execution target policy.
    pub target: Target,
    /// Threads one run may use inside the engine (`0` = engine default).
    pub intra_op_threads: usize,
    /// Graph optimisation level.
    pub optimization: Optimization,
    /// OpenVINO inference precision.
    pub precision: Precision,
    /// Dynamic batching across requests (`None`: every request runs alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchPolicy>,
}

impl Default for GraphOptions {
    fn default() -> Self {
        Self {
            target: Target::Cpu,
            intra_op_threads: 1,
            optimization: Optimization::All,
            precision: Precision::F32,
            batching: None,
        }
    }
}
