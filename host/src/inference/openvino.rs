//! Our OpenVINO backend for wasi-nn: the C library loaded from an explicit path, one
//! compiled model per graph at the precision the manifest asks for (f32 by default, where
//! the stock backend left the CPU plugin on bf16), several CPU streams and a pool of infer
//! requests so that runs on one graph proceed in parallel.

use super::context::{check_shape, missing_input, unknown_input, Declared, RunGraph, SharedGraph};
use super::options::{GraphOptions, Precision, Target};
use super::stats::GraphStats;
use super::types::wasi_nn_name;
use super::{failed, invalid, GraphFile, InferenceError, LoadedGraphInfo};
use openvino::{
    CompiledModel, Core, DeviceType, ElementType as OvType, InferRequest, Model, RwPropertyKey,
    Shape, Tensor as OvTensor,
};
use std::path::Path;
use std::sync::{Arc, Mutex};
use wasmtime_wasi_nn::backend::{BackendError, NamedTensor};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::Tensor;

/// Loads the OpenVINO C library from `path` and returns its version.
pub fn load_library(path: &Path) -> Result<String, String> {
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    openvino_sys::library::load_from(path)?;
    // Creating a core proves the library works (plugins found, CPU usable).
    Core::new().map_err(|e| format!("OpenVINO core does not start: {e}"))?;
    Ok(openvino::version().build_number)
}

#[derive(Debug, Clone)]
struct TensorSpec {
    name: String,
    element_type: OvType,
    /// Dimensions; -1 where free.
    dims: Vec<i64>,
}

/// One compiled OpenVINO model, its idle infer requests and what it declares.
pub struct GraphInner {
    name: String,
    compiled: Mutex<CompiledModel>,
    idle_requests: Mutex<Vec<InferRequest>>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    stats: Arc<GraphStats>,
}

/// A loaded OpenVINO graph.
pub type OpenvinoGraph = SharedGraph<GraphInner>;

/// Compiles a graph for the CPU from ONNX bytes (one file) or IR (`.xml`, `.bin`).
pub fn load(
    name: &str,
    files: &[GraphFile],
    options: &GraphOptions,
    stats: Arc<GraphStats>,
) -> Result<(OpenvinoGraph, LoadedGraphInfo), InferenceError> {
    let rejected = |reason: String| InferenceError::GraphRejected {
        graph: name.to_string(),
        engine: "openvino",
        reason,
    };
    let device = match options.target {
        Target::Cpu => "cpu",
        Target::Gpu => {
            return Err(InferenceError::TargetUnavailable {
                graph: name.to_string(),
                target: options.target.to_string(),
                reason: "sandserve runs OpenVINO on the CPU only; use the onnx encoding for GPUs \
                         or ask for `gpu-or-cpu`"
                    .into(),
            })
        }
        Target::GpuOrCpu => "cpu (gpu-or-cpu: OpenVINO runs on the CPU here)",
    };
    let mut core = Core::new().map_err(|e| rejected(e.to_string()))?;
    let threads = options.intra_op_threads.max(1);
    let streams = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .div_euclid(threads)
        .max(1);
    let precision = match options.precision {
        Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
        Precision::F16 => "f16",
    };
    for (key, value) in [
        (RwPropertyKey::HintInferencePrecision, precision.to_string()),
        (RwPropertyKey::NumStreams, streams.to_string()),
        (
            RwPropertyKey::InferenceNumThreads,
            (streams * threads).to_string(),
        ),
    ] {
        core.set_property(&DeviceType::CPU, &key, &value)
            .map_err(|e| rejected(format!("setting {}: {e}", key.as_ref())))?;
    }
    let model = read_model(&mut core, files).map_err(rejected)?;
    let compiled = core
        .compile_model(&model, DeviceType::CPU)
        .map_err(|e| rejected(e.to_string()))?;
    let inputs = specs(&model, true).map_err(rejected)?;
    let outputs = specs(&model, false).map_err(rejected)?;
    for spec in inputs.iter().chain(&outputs) {
        if wasi_nn_type(spec.element_type).is_none() {
            return Err(rejected(format!(
                "`{}` has element type {:?}, which wasi-nn cannot carry",
                spec.name, spec.element_type
            )));
        }
    }
    let info = LoadedGraphInfo {
        device: device.to_string(),
        inputs: inputs.iter().map(describe).collect(),
        outputs: outputs.iter().map(describe).collect(),
    };
    Ok((
        SharedGraph(Arc::new(GraphInner {
            name: name.to_string(),
            compiled: Mutex::new(compiled),
            idle_requests: Mutex::new(Vec::new()),
            inputs,
            outputs,
            stats,
        })),
        info,
    ))
}

fn read_model(core: &mut Core, files: &[GraphFile]) -> Result<Model, String> {
    let bytes: Vec<std::borrow::Cow<'_, [u8]>> = files
        .iter()
        .map(|f| match f {
            GraphFile::Bytes(b) => Ok(std::borrow::Cow::Borrowed(b.as_slice())),
            GraphFile::Stored { file, .. } => read_whole(file)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| format!("reading a model file: {}", e.kind())),
        })
        .collect::<Result<_, _>>()?;
    match bytes.as_slice() {
        [onnx] => core
            .read_model_from_buffer(onnx, None)
            .map_err(|e| e.to_string()),
        [xml, bin] => {
            let shape = Shape::new(&[bin.len() as i64]).map_err(|e| e.to_string())?;
            let mut weights = OvTensor::new(OvType::U8, &shape).map_err(|e| e.to_string())?;
            weights
                .get_raw_data_mut()
                .map_err(|e| e.to_string())?
                .copy_from_slice(bin);
            core.read_model_from_buffer(xml, Some(&weights))
                .map_err(|e| e.to_string())
        }
        other => Err(format!(
            "expects one .onnx file or IR .xml + .bin, got {} files",
            other.len()
        )),
    }
}

/// The whole of a stored file, from its start.
fn read_whole(file: &std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut file = file;
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn specs(model: &Model, inputs: bool) -> Result<Vec<TensorSpec>, String> {
    let count = if inputs {
        model.get_inputs_len()
    } else {
        model.get_outputs_len()
    }
    .map_err(|e| e.to_string())?;
    (0..count)
        .map(|i| {
            let node = if inputs {
                model.get_input_by_index(i)
            } else {
                model.get_output_by_index(i)
            }
            .map_err(|e| e.to_string())?;
            let shape = node.get_partial_shape().map_err(|e| e.to_string())?;
            Ok(TensorSpec {
                name: node.get_name().map_err(|e| e.to_string())?,
                element_type: node.get_element_type().map_err(|e| e.to_string())?,
                dims: shape
                    .get_dimensions()
                    .iter()
                    .map(|d| if d.is_dynamic() { -1 } else { d.get_min() })
                    .collect(),
            })
        })
        .collect()
}

fn describe(spec: &TensorSpec) -> String {
    format!("{}: {:?}{:?}", spec.name, spec.element_type, spec.dims)
}

fn wasi_nn_type(t: OvType) -> Option<TensorType> {
    Some(match t {
        OvType::U8 | OvType::Boolean => TensorType::U8,
        OvType::F16 => TensorType::Fp16,
        OvType::Bf16 => TensorType::Bf16,
        OvType::F32 => TensorType::Fp32,
        OvType::F64 => TensorType::Fp64,
        OvType::I32 => TensorType::I32,
        OvType::I64 => TensorType::I64,
        _ => return None,
    })
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

    /// Checks one guest tensor against the declared input it feeds; returns the spec and
    /// the dimensions.
    fn check_only(
        &self,
        name: &str,
        tensor: &Tensor,
    ) -> Result<(&TensorSpec, Vec<i64>), BackendError> {
        let spec = self.inputs.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
            unknown_input(&self.name, name, &names)
        })?;
        if wasi_nn_type(spec.element_type) != Some(tensor.ty) {
            return Err(invalid(format!(
                "input `{name}` must be {:?}, got {}",
                spec.element_type,
                wasi_nn_name(tensor.ty)
            )));
        }
        let shape = check_shape(name, &spec.dims, tensor)?;
        Ok((spec, shape))
    }

    fn checked_input(&self, name: &str, tensor: &Tensor) -> Result<OvTensor, BackendError> {
        let (spec, shape) = self.check_only(name, tensor)?;
        let ov_shape = Shape::new(&shape).map_err(|e| failed(e.to_string()))?;
        let mut ov =
            OvTensor::new(spec.element_type, &ov_shape).map_err(|e| failed(e.to_string()))?;
        ov.get_raw_data_mut()
            .map_err(|e| failed(e.to_string()))?
            .copy_from_slice(&tensor.data);
        Ok(ov)
    }

    fn take_request(&self) -> Result<InferRequest, BackendError> {
        let idle = self
            .idle_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        match idle {
            Some(request) => Ok(request),
            None => self
                .compiled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .create_infer_request()
                .map_err(|e| failed(format!("graph `{}`: {e}", self.name))),
        }
    }

    fn run_inner(&self, inputs: &[(String, &Tensor)]) -> Result<Vec<NamedTensor>, BackendError> {
        let mut prepared = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            prepared.push((name.as_str(), self.checked_input(name, tensor)?));
        }
        self.check_complete(inputs)?;
        let mut request = self.take_request()?;
        let guard = self.stats.start_run();
        let fail = |e: openvino::InferenceError| failed(format!("graph `{}`: {e}", self.name));
        for (name, tensor) in &prepared {
            request.set_tensor(name, tensor).map_err(fail)?;
        }
        request.infer().map_err(fail)?;
        let outputs = self
            .outputs
            .iter()
            .map(|spec| {
                let out = request.get_tensor(&spec.name).map_err(fail)?;
                let ty = wasi_nn_type(out.get_element_type().map_err(fail)?).ok_or_else(|| {
                    failed(format!("output `{}` has an unsupported type", spec.name))
                })?;
                let dimensions = out
                    .get_shape()
                    .map_err(fail)?
                    .get_dimensions()
                    .iter()
                    .map(|&d| u32::try_from(d))
                    .collect::<Result<Vec<u32>, _>>()
                    .map_err(|_| {
                        failed(format!("output `{}` has a dimension over u32", spec.name))
                    })?;
                let data = out.get_raw_data().map_err(fail)?.to_vec();
                Ok(NamedTensor {
                    name: spec.name.clone(),
                    tensor: Tensor::new(dimensions, ty, data),
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        guard.succeeded();
        self.idle_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
        Ok(outputs)
    }
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
            self.check_only(name, tensor)?;
        }
        self.check_complete(inputs)
    }

    fn run(&self, inputs: &[(String, &Tensor)]) -> Result<Vec<NamedTensor>, BackendError> {
        self.run_inner(inputs)
    }
}
