//! Inference through wasi-nn: load one of your image's named graphs, run it on tensors.
//!
//! The host loads the graphs your image's manifest lists once per deployed version and
//! shares them between requests; [`Graph::load`] only looks one up by name.
//!
//! ```no_run
//! use sandserve_sdk::{nn::Graph, Tensor};
//! # fn run() -> Result<(), sandserve_sdk::HandlerError> {
//! let graph = Graph::load("digits")?;
//! let input = Tensor::from_values("input", vec![1, 64], &[0f32; 64])?;
//! let outputs = graph.run(&[input])?;
//! let probabilities = outputs.iter().find(|t| t.name == "probabilities");
//! # Ok(()) }
//! ```

use crate::bindings::wasi::nn::{errors, graph, tensor as nn_tensor};
use crate::{ElementType, Tensor};
use std::fmt;

/// A failed wasi-nn call: which step failed, the wasi-nn error code and the host's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NnError {
    /// The step that failed (`load`, `init`, `compute`, `convert`).
    pub step: &'static str,
    /// The wasi-nn error code, in kebab case (`not-found`, `invalid-argument`, ...).
    pub code: String,
    /// What the host said.
    pub message: String,
}

impl fmt::Display for NnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wasi-nn {} failed ({}): {}",
            self.step, self.code, self.message
        )
    }
}

impl std::error::Error for NnError {}

impl NnError {
    /// True when the host rejected the inputs themselves (wrong name, element type or
    /// shape): the caller's mistake rather than the handler's.
    pub fn is_invalid_input(&self) -> bool {
        self.code == "invalid-argument" || self.message.starts_with("invalid input: ")
    }
}

impl NnError {
    fn from_wasi(step: &'static str, error: errors::Error) -> Self {
        let code = match error.code() {
            errors::ErrorCode::InvalidArgument => "invalid-argument",
            errors::ErrorCode::InvalidEncoding => "invalid-encoding",
            errors::ErrorCode::Timeout => "timeout",
            errors::ErrorCode::RuntimeError => "runtime-error",
            errors::ErrorCode::UnsupportedOperation => "unsupported-operation",
            errors::ErrorCode::TooLarge => "too-large",
            errors::ErrorCode::NotFound => "not-found",
            errors::ErrorCode::Security => "security",
            errors::ErrorCode::Unknown => "unknown",
        };
        let data = error.data();
        // The host's backends carry their message in wasi-nn's "unsupported tensor type"
        // error text (the only one with a free-form message); drop that fixed prefix.
        let message = data
            .strip_prefix("Unsupported tensor type: ")
            .map_or_else(|| data.clone(), str::to_string);
        Self {
            step,
            code: code.to_string(),
            message,
        }
    }

    fn convert(message: String) -> Self {
        Self {
            step: "convert",
            code: "invalid-argument".to_string(),
            message,
        }
    }
}

/// A model graph of this handler's image, loaded by the host.
pub struct Graph {
    inner: graph::Graph,
}

impl Graph {
    /// Looks up the graph the image manifest names `name`.
    pub fn load(name: &str) -> Result<Self, NnError> {
        graph::load_by_name(name)
            .map(|inner| Self { inner })
            .map_err(|e| NnError::from_wasi("load", e))
    }

    /// Loads a graph from ONNX bytes the handler carries itself, on the CPU.
    ///
    /// Refused unless the image's manifest allows guest-loaded graphs, and then only up
    /// to its size limit; prefer named graphs, which the host loads once and shares.
    pub fn from_onnx_bytes(model: &[u8]) -> Result<Self, NnError> {
        graph::load(
            &[model.to_vec()],
            graph::GraphEncoding::Onnx,
            graph::ExecutionTarget::Cpu,
        )
        .map(|inner| Self { inner })
        .map_err(|e| NnError::from_wasi("load", e))
    }

    /// Runs the graph on named inputs and returns its named outputs.
    ///
    /// Element types wasi-nn carries: f16, bf16, f32, f64, u8, i32, i64.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
        let context = self
            .inner
            .init_execution_context()
            .map_err(|e| NnError::from_wasi("init", e))?;
        let mut named = Vec::with_capacity(inputs.len());
        for input in inputs {
            named.push((input.name.clone(), to_nn_tensor(input)?));
        }
        let outputs = context
            .compute(named)
            .map_err(|e| NnError::from_wasi("compute", e))?;
        outputs
            .into_iter()
            .map(|(name, t)| from_nn_tensor(name, &t))
            .collect()
    }
}

fn to_nn_type(t: ElementType) -> Option<nn_tensor::TensorType> {
    use nn_tensor::TensorType as N;
    Some(match t {
        ElementType::F16 => N::Fp16,
        ElementType::Bf16 => N::Bf16,
        ElementType::F32 => N::Fp32,
        ElementType::F64 => N::Fp64,
        ElementType::U8 | ElementType::Bool => N::U8,
        ElementType::I32 => N::I32,
        ElementType::I64 => N::I64,
        _ => return None,
    })
}

fn from_nn_type(t: nn_tensor::TensorType) -> ElementType {
    use nn_tensor::TensorType as N;
    match t {
        N::Fp16 => ElementType::F16,
        N::Bf16 => ElementType::Bf16,
        N::Fp32 => ElementType::F32,
        N::Fp64 => ElementType::F64,
        N::U8 => ElementType::U8,
        N::I32 => ElementType::I32,
        N::I64 => ElementType::I64,
    }
}

fn to_nn_tensor(t: &Tensor) -> Result<nn_tensor::Tensor, NnError> {
    let ty = to_nn_type(t.element_type).ok_or_else(|| {
        NnError::convert(format!(
            "tensor `{}`: wasi-nn cannot carry {} elements",
            t.name, t.element_type
        ))
    })?;
    let dims = t
        .shape
        .iter()
        .map(|&d| u32::try_from(d))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| NnError::convert(format!("tensor `{}`: dimension over u32", t.name)))?;
    Ok(nn_tensor::Tensor::new(&dims, ty, &t.data))
}

fn from_nn_tensor(name: String, t: &nn_tensor::Tensor) -> Result<Tensor, NnError> {
    let shape = t.dimensions().into_iter().map(u64::from).collect();
    Tensor::new(name, shape, from_nn_type(t.ty()), t.data())
        .map_err(|e| NnError::convert(e.to_string()))
}
