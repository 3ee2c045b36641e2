//! Dynamic batching at the wasi-nn boundary: a graph whose manifest declares `batching`
//! is wrapped in [`Batched`], so that the `compute` calls of concurrent sandboxes (every
//! instance of the image version shares the graph, so every entity serving that version
//! too, and for a version shared by its owner every tenant serving it) are gathered for up to the graph's delay and run as one batched inference; each
//! guest gets its own slice of the outputs and its code does not change. The batcher is
//! in `queue`, joining and cutting tensors in `tensors`, the settings in `policy`, and how
//! the request's deadline reaches a host call in `deadline`; `executions` counts the runs
//! by batch size (Triton's `batch_stats`).

pub mod executions;
mod in_flight;
mod policy;
mod queue;
mod tensors;

#[cfg(test)]
mod tests;

pub use in_flight::{InFlight, InFlightScope, RequestInFlight};
pub use policy::{
    default_running_batches, BatchPolicy, DEFAULT_MAX_BATCH_MIB, DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_DELAY_US,
};
pub use queue::{BatchStatsSnapshot, Batcher};

use super::context::{Declared, RunGraph};
use std::sync::Arc;
use wasmtime_wasi_nn::backend::{BackendError, NamedTensor};
use wasmtime_wasi_nn::Tensor;

/// A graph whose runs go through a [`Batcher`].
pub struct Batched(Arc<Batcher>);

impl Batched {
    /// Wraps `graph` (named `name`, of image version `image`), after checking that every declared input and output
    /// has a free batch dimension; the error says which does not.
    pub fn new(
        name: &str,
        image: &str,
        graph: Arc<dyn RunGraph>,
        policy: BatchPolicy,
    ) -> Result<Self, String> {
        let d = policy.batch_dimension;
        let (inputs, outputs) = graph.declared();
        for (kind, list) in [("input", &inputs), ("output", &outputs)] {
            for Declared { name: tensor, dims } in list.iter() {
                match dims.get(d) {
                    Some(&size) if size < 0 => {}
                    _ => {
                        return Err(format!(
                            "batching: {kind} `{tensor}` has shape {dims:?}; dimension {d} \
                             (batch_dimension) must be free (-1) to batch"
                        ))
                    }
                }
            }
        }
        Ok(Self(Arc::new(Batcher::new(name, image, graph, policy))))
    }

    /// Its batcher (for its counters).
    pub fn batcher(&self) -> Arc<Batcher> {
        self.0.clone()
    }
}

/// Whether this thread may block waiting for a batch: not an async worker (the server runs
/// small requests inline on those; blocking one would stall its connections).
fn may_wait() -> bool {
    tokio::runtime::Handle::try_current().is_err()
}

impl RunGraph for Batched {
    fn input_name(&self, index: u32) -> Option<String> {
        self.0.graph().input_name(index)
    }

    fn declared(&self) -> (Vec<Declared>, Vec<Declared>) {
        self.0.graph().declared()
    }

    fn check(&self, inputs: &[(String, &Tensor)]) -> Result<(), BackendError> {
        self.0.graph().check(inputs)
    }

    fn run(&self, inputs: &[(String, &Tensor)]) -> Result<Vec<NamedTensor>, BackendError> {
        let outputs = self
            .0
            .run(inputs, crate::runtime::call_scope::current(), may_wait());
        in_flight::answered_here(&self.0);
        outputs
    }
}
