//! What our ONNX Runtime and OpenVINO backends share: the wasi-nn execution context (inputs
//! set so far, last outputs, both the WIT `compute(inputs)` and the WITX set/compute/get
//! styles) over any graph that can run named tensors, and the checks of a guest tensor
//! against a declared input's shape and data length.

use super::invalid;
use super::types::wasi_nn_size;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::{ExecutionContext, Tensor};

/// A declared input or output: its name and dimensions (-1 where free).
#[derive(Debug, Clone)]
pub struct Declared {
    /// Tensor name.
    pub name: String,
    /// Dimensions; -1 where free.
    pub dims: Vec<i64>,
}

impl Declared {
    /// Declarations from (name, dimensions) pairs.
    pub fn list<'a>(specs: impl Iterator<Item = (&'a String, &'a Vec<i64>)>) -> Vec<Self> {
        specs
            .map(|(name, dims)| Self {
                name: name.clone(),
                dims: dims.clone(),
            })
            .collect()
    }
}

/// A loaded graph that runs named tensors.
pub trait RunGraph: Send + Sync + 'static {
    /// Name of input number `index`.
    fn input_name(&self, index: u32) -> Option<String>;
    /// Its declared inputs and outputs.
    fn declared(&self) -> (Vec<Declared>, Vec<Declared>);
    /// Checks inputs as `run` would (names, types, shapes, none missing) without running.
    fn check(&self, inputs: &[(String, &Tensor)]) -> Result<(), BackendError>;
    /// Runs the graph; every input checked, every output named.
    fn run(&self, inputs: &[(String, &Tensor)]) -> Result<Vec<NamedTensor>, BackendError>;
}

/// A `BackendGraph` over a shared [`RunGraph`].
pub struct SharedGraph<G: RunGraph + ?Sized>(pub std::sync::Arc<G>);

impl<G: RunGraph + ?Sized> BackendGraph for SharedGraph<G> {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let context: Box<dyn BackendExecutionContext> = Box::new(Context {
            graph: self.0.clone(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        });
        Ok(context.into())
    }
}

struct Context<G: RunGraph + ?Sized> {
    graph: std::sync::Arc<G>,
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<NamedTensor>,
}

impl<G: RunGraph + ?Sized> BackendExecutionContext for Context<G> {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        let name = match id {
            Id::Name(name) => name,
            Id::Index(i) => self
                .graph
                .input_name(i)
                .ok_or_else(|| invalid(format!("the graph has no input #{i}")))?,
        };
        self.inputs.retain(|(n, _)| *n != name);
        self.inputs.push((name, tensor.clone()));
        Ok(())
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        let found = match &id {
            Id::Index(i) => self.outputs.get(*i as usize),
            Id::Name(name) => self.outputs.iter().find(|o| o.name == *name),
        };
        found
            .map(|o| o.tensor.clone())
            .ok_or_else(|| invalid(format!("no output {id:?}; call compute first")))
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let started = std::time::Instant::now();
        let result = self.compute_now(inputs);
        // Named in telemetry/metrics.rs (`sandserve_wasi_nn_compute_seconds`).
        metrics::histogram!("sandserve_wasi_nn_compute_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }
}

impl<G: RunGraph + ?Sized> Context<G> {
    fn compute_now(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        match inputs {
            Some(named) => {
                let refs: Vec<(String, &Tensor)> =
                    named.iter().map(|n| (n.name.clone(), &n.tensor)).collect();
                self.graph.run(&refs).map(Some)
            }
            None => {
                let refs: Vec<(String, &Tensor)> =
                    self.inputs.iter().map(|(n, t)| (n.clone(), t)).collect();
                self.outputs = self.graph.run(&refs)?;
                Ok(None)
            }
        }
    }
}

/// Checks a guest tensor's dimensions against the declared ones (-1 = any) and its data
/// length against dimensions and type; returns the dimensions as i64.
pub fn check_shape(
    name: &str,
    declared: &[i64],
    tensor: &Tensor,
) -> Result<Vec<i64>, BackendError> {
    let shape: Vec<i64> = tensor.dimensions.iter().map(|&d| i64::from(d)).collect();
    let fits = shape.len() == declared.len()
        && declared
            .iter()
            .zip(&shape)
            .all(|(&want, &have)| want < 0 || want == have);
    if !fits {
        return Err(invalid(format!(
            "input `{name}` must have shape {declared:?} (-1 = any), got {shape:?}"
        )));
    }
    // Checked: guest-chosen dimensions whose product wraps would let too little data
    // "match" its shape.
    let count = tensor
        .dimensions
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d as usize));
    let expected = count.and_then(|n| n.checked_mul(wasi_nn_size(tensor.ty)));
    let Some(expected) = expected else {
        return Err(invalid(format!(
            "input `{name}`: shape {:?} holds more elements than can be addressed",
            tensor.dimensions
        )));
    };
    if tensor.data.len() != expected {
        return Err(invalid(format!(
            "input `{name}` holds {} bytes, its shape and type need {expected}",
            tensor.data.len()
        )));
    }
    Ok(shape)
}

/// The error for a graph input nobody declared.
pub fn unknown_input(graph: &str, name: &str, declared: &[&str]) -> BackendError {
    invalid(format!(
        "graph `{graph}` has no input `{name}`; its inputs are {declared:?}"
    ))
}

/// The error when a declared input is missing.
pub fn missing_input(graph: &str, name: &str) -> BackendError {
    invalid(format!("graph `{graph}` needs input `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi_nn::wit::TensorType;

    fn tensor(dimensions: Vec<u32>, bytes: usize) -> Tensor {
        Tensor {
            dimensions,
            ty: TensorType::Fp32,
            data: vec![0; bytes],
        }
    }

    #[test]
    fn shapes_whose_element_count_overflows_are_refused() {
        // 65536^4 elements wraps to 0 in 64 bits: empty data must not "match".
        let huge = tensor(vec![65_536; 4], 0);
        let e = check_shape("x", &[-1, -1, -1, -1], &huge).unwrap_err();
        assert!(e.to_string().contains("more elements"), "{e}");
        assert!(check_shape("x", &[-1, 2], &tensor(vec![3, 2], 24)).is_ok());
        let short = check_shape("x", &[-1, 2], &tensor(vec![3, 2], 20)).unwrap_err();
        assert!(short.to_string().contains("need 24"), "{short}");
    }
}
