//! The echo handler: no ML. It validates every input tensor (data length against shape and
//! element type), echoes each one back unchanged, and appends an `element_counts` output
//! (u64, one entry per input). Copy it as the skeleton of a new handler.

use sandserve_sdk::{export_handler, info, Handler, HandlerError, Request, Response, Tensor};

struct Echo;

impl Handler for Echo {
    fn predict(request: Request) -> Result<Response, HandlerError> {
        if request.inputs.is_empty() {
            return Err(HandlerError::invalid_input("send at least one input tensor"));
        }
        let mut counts = Vec::with_capacity(request.inputs.len());
        for input in &request.inputs {
            input.check_data_length()?;
            counts.push(input.element_count());
        }
        info!("echoing {} tensor(s)", request.inputs.len());
        let summary = Tensor::from_values("element_counts", vec![counts.len() as u64], &counts)?;
        let mut outputs = request.inputs;
        outputs.push(summary);
        Ok(Response {
            outputs,
            parameters: request.parameters,
        })
    }
}

export_handler!(Echo);
