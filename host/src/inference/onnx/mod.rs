//! Our ONNX Runtime backend for wasi-nn: one session per graph, shared by every instance
//! and run concurrently (no lock), inputs borrowed from the guest's bytes, every element
//! type wasi-nn carries in and out, session options from the manifest.

mod ffi;

use super::context::{check_shape, missing_input, unknown_input, Declared, RunGraph, SharedGraph};
use super::options::{GraphOptions, Optimization, Target};
use super::stats::GraphStats;
use super::types::{
    onnx_for_input, onnx_name, onnx_size, wasi_nn_for_output, wasi_nn_name, wasi_nn_size,
};
use super::{failed, invalid, EngineStatus, GraphFile, InferenceError, LoadedGraphInfo};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::sys::ONNXTensorElementDataType as Onnx;
use ort::value::ValueType;
use std::ffi::CString;
use std::sync::Arc;
use wasmtime_wasi_nn::backend::{BackendError, NamedTensor};
use wasmtime_wasi_nn::Tensor;

/// A declared graph input or output.
#[derive(Debug, Clone)]
struct TensorSpec {
    name: String,
    element_type: Onnx,
    /// Dimensions; -1 where free.
    dims: Vec<i64>,
}

/// One ONNX Runtime session and what it declares.
pub struct GraphInner {
    name: String,
    session: Session,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    output_names: Vec<CString>,
    stats: Arc<GraphStats>,
}

/// A loaded ONNX graph.
pub type OnnxGraph = SharedGraph<GraphInner>;

/// Compiles `model` into a session with `options`. Fails (never panics) when ONNX Runtime
/// is not loaded, the target cannot be served, or the model does not load.
pub fn load(
    name: &str,
    model: &GraphFile,
    options: &GraphOptions,
    gpu: &EngineStatus,
    stats: Arc<GraphStats>,
) -> Result<(OnnxGraph, LoadedGraphInfo), InferenceError> {
    let rejected = |reason: String| InferenceError::GraphRejected {
        graph: name.to_string(),
        engine: "onnx",
        reason,
    };
    let gpu_refused = |reason: String| InferenceError::TargetUnavailable {
        graph: name.to_string(),
        target: options.target.to_string(),
        reason,
    };
    let gpu_reason = || {
        gpu.error.clone().unwrap_or_else(|| "no CUDA device".into())
            + " (run on a GPU host with a `cuda` build, or ask for `gpu-or-cpu`)"
    };
    let want_gpu = match options.target {
        Target::Cpu => false,
        Target::Gpu if !gpu.loaded => return Err(gpu_refused(gpu_reason())),
        Target::Gpu => true,
        Target::GpuOrCpu => gpu.loaded,
    };
    let level = match options.optimization {
        Optimization::Disabled => GraphOptimizationLevel::Disable,
        Optimization::Basic => GraphOptimizationLevel::Level1,
        Optimization::Extended => GraphOptimizationLevel::Level2,
        Optimization::All => GraphOptimizationLevel::Level3,
    };
    let mut builder = Session::builder()
        .and_then(|b| b.with_optimization_level(level))
        .and_then(|b| b.with_inter_threads(1))
        .map_err(|e| rejected(e.to_string()))?;
    if options.intra_op_threads > 0 {
        builder = builder
            .with_intra_threads(options.intra_op_threads)
            .and_then(|b| b.with_intra_op_spinning(false))
            .map_err(|e| rejected(e.to_string()))?;
    }
    let (session, device) = if want_gpu {
        match commit(
            with_cuda(builder.clone()).map_err(|e| rejected(e.to_string()))?,
            model,
        ) {
            Ok(session) => (
                session,
                format!("gpu ({})", gpu.version.as_deref().unwrap_or("CUDA")),
            ),
            Err(e) if options.target == Target::GpuOrCpu => {
                let session = commit(builder, model).map_err(|e| rejected(e.to_string()))?;
                (
                    session,
                    format!("cpu (gpu-or-cpu: the CUDA provider failed: {e})"),
                )
            }
            Err(e) => return Err(gpu_refused(format!("the CUDA provider failed: {e}"))),
        }
    } else {
        let device = match options.target {
            Target::GpuOrCpu => format!("cpu (gpu-or-cpu: {})", gpu_reason()),
            _ => "cpu".to_string(),
        };
        (
            commit(builder, model).map_err(|e| rejected(e.to_string()))?,
            device,
        )
    };
    let spec = |name: &str, ty: &ValueType| -> Result<TensorSpec, InferenceError> {
        match ty {
            ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                name: name.to_string(),
                element_type: (*ty).into(),
                dims: shape.iter().copied().collect(),
            }),
            other => Err(rejected(format!(
                "`{name}` is {other:?}, not a tensor; export classifiers without ZipMap"
            ))),
        }
    };
    let inputs = session
        .inputs
        .iter()
        .map(|i| spec(&i.name, &i.input_type))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = session
        .outputs
        .iter()
        .map(|o| spec(&o.name, &o.output_type))
        .collect::<Result<Vec<_>, _>>()?;
    for output in &outputs {
        if onnx_size(output.element_type).is_none() {
            return Err(rejected(format!(
                "output `{}` has element type {}, which wasi-nn cannot carry",
                output.name,
                onnx_name(output.element_type)
            )));
        }
    }
    let output_names = outputs
        .iter()
        .map(|o| CString::new(o.name.as_str()).map_err(|_| rejected("output name has NUL".into())))
        .collect::<Result<Vec<_>, _>>()?;
    let info = LoadedGraphInfo {
        device,
        inputs: inputs.iter().map(describe).collect(),
        outputs: outputs.iter().map(describe).collect(),
    };
    Ok((
        SharedGraph(Arc::new(GraphInner {
            name: name.to_string(),
            session,
            inputs,
            outputs,
            output_names,
            stats,
        })),
        info,
    ))
}

fn commit(builder: SessionBuilder, model: &GraphFile) -> ort::Result<Session> {
    match model {
        GraphFile::Bytes(bytes) => builder.commit_from_memory(bytes),
        GraphFile::Stored { path, .. } => builder.commit_from_file(path),
    }
}

/// Registers the CUDA execution provider, failing (never silently falling back) when it
/// does not load.
#[cfg(feature = "cuda")]
fn with_cuda(builder: SessionBuilder) -> ort::Result<SessionBuilder> {
    use ort::execution_providers::CUDAExecutionProvider;
    builder.with_execution_providers([CUDAExecutionProvider::default()
        .with_device_id(0)
        .build()
        .error_on_failure()])
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(_builder: SessionBuilder) -> ort::Result<SessionBuilder> {
    Err(ort::Error::new("built without the `cuda` feature"))
}

fn describe(spec: &TensorSpec) -> String {
    format!(
        "{}: {}{:?}",
        spec.name,
        onnx_name(spec.element_type),
        spec.dims
    )
}

impl GraphInner {
    /// Fails when a declared input is missing from `inputs`.
    fn check_complete(&self, inputs: &[(String, &Tensor)]) -> Result<(), BackendError> {
        match self
            .inputs
            .iter()
            .find(|s| !inputs.iter().any(|(n, _)| *n == s.name))
        {
            Some(missing) => Err(missing_input(&self.name, &missing.name)),
            None => Ok(()),
        }
    }

    /// Checks one guest tensor against the declared input it feeds.
    fn check_input(&self, name: &str, tensor: &Tensor) -> Result<(Onnx, Vec<i64>), BackendError> {
        let spec = self.inputs.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
            unknown_input(&self.name, name, &names)
        })?;
        let element_type = onnx_for_input(tensor.ty, spec.element_type).ok_or_else(|| {
            invalid(format!(
                "input `{name}` must be {}, got {}",
                onnx_name(spec.element_type),
                wasi_nn_name(tensor.ty)
            ))
        })?;
        let shape = check_shape(name, &spec.dims, tensor)?;
        Ok((element_type, shape))
    }

    fn run_inner(&self, inputs: &[(String, &Tensor)]) -> Result<Vec<NamedTensor>, BackendError> {
        let mut checked = Vec::with_capacity(inputs.len());
        let mut realigned = Vec::new();
        for (name, tensor) in inputs {
            let (element_type, shape) = self.check_input(name, tensor)?;
            checked.push((name.as_str(), element_type, shape, *tensor));
        }
        self.check_complete(inputs)?;
        // Engines read elements in place; copy only when the guest's buffer is misaligned.
        for (_, _, _, tensor) in &checked {
            let align = wasi_nn_size(tensor.ty);
            realigned.push(
                (!(tensor.data.as_ptr() as usize).is_multiple_of(align))
                    .then(|| aligned_copy(&tensor.data)),
            );
        }
        let refs: Vec<ffi::InputRef<'_>> = checked
            .iter()
            .zip(&realigned)
            .map(
                |((name, element_type, shape, tensor), copy)| ffi::InputRef {
                    name,
                    element_type: *element_type,
                    shape: shape.clone(),
                    data: copy.as_ref().map_or(tensor.data.as_slice(), |c| {
                        aligned_bytes(c, tensor.data.len())
                    }),
                },
            )
            .collect();
        let guard = self.stats.start_run();
        let outputs = ffi::run(&self.session, &refs, &self.output_names, onnx_size)
            .map_err(|e| failed(format!("graph `{}`: {e}", self.name)))?;
        guard.succeeded();
        outputs
            .into_iter()
            .zip(&self.outputs)
            .map(|(out, spec)| {
                let ty = wasi_nn_for_output(out.element_type).ok_or_else(|| {
                    failed(format!("output `{}` has an unsupported type", spec.name))
                })?;
                let dimensions = out
                    .shape
                    .iter()
                    .map(|&d| u32::try_from(d))
                    .collect::<Result<Vec<u32>, _>>()
                    .map_err(|_| {
                        failed(format!("output `{}` has a dimension over u32", spec.name))
                    })?;
                Ok(NamedTensor {
                    name: spec.name.clone(),
                    tensor: Tensor::new(dimensions, ty, out.data),
                })
            })
            .collect()
    }
}

/// Copies `data` into a buffer aligned for any element type.
fn aligned_copy(data: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; data.len().div_ceil(8)];
    // SAFETY: `words` has at least `data.len()` bytes; u64 has no invalid bit patterns.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    bytes[..data.len()].copy_from_slice(data);
    words
}

fn aligned_bytes(words: &[u64], len: usize) -> &[u8] {
    // SAFETY: `words` holds at least `len` initialised bytes.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
}

impl RunGraph for GraphInner {
    fn input_name(&self, index: u32) -> Option<String> {
        self.inputs.get(index as usize).map(|s| s.name.clone())
    }

    fn declared(&self) -> (Vec<Declared>, Vec<Declared>) {
        let list = |specs: &[TensorSpec]| Declared::list(specs.iter().map(|s| (&s.name, &s.dims)));
        (list(&self.inputs), list(&self.outputs))
    }

    fn check(&self, inputs: &[(String, &Tensor)]) -> Result<(), BackendError> {
        for (name, tensor) in inputs {
            self.check_input(name, tensor)?;
        }
        self.check_complete(inputs)
    }

    fn run(&self, inputs: &[(String, &Tensor)]) -> Result<Vec<NamedTensor>, BackendError> {
        self.run_inner(inputs)
    }
}
