//! The generic handler of model-only packages: passes the request's tensors, unchanged,
//! to the package's graph `model` and returns every output the graph gives. The host has
//! already checked the inputs against the package's signature (names, element types,
//! fixed dimensions); what the graph still rejects is the caller's mistake (HTTP 400).

use sandserve_sdk::nn::Graph;
use sandserve_sdk::{export_handler, Handler, HandlerError, Request, Response};

/// The graph name `sandserve package --model` gives the model.
const GRAPH: &str = "model";

struct Generic;

impl Handler for Generic {
    fn predict(request: Request) -> Result<Response, HandlerError> {
        if request.inputs.is_empty() {
            return Err(HandlerError::invalid_input(
                "the request has no input tensors; send the model's inputs by name",
            ));
        }
        let outputs = Graph::load(GRAPH)?.run(&request.inputs)?;
        Ok(Response::new(outputs))
    }
}

export_handler!(Generic);
