//! The [`Handler`] trait and the request / response a handler sees.

use crate::{HandlerError, Tensor, TensorError};

/// A model handler: one `predict` per request, each in a fresh sandbox.
///
/// Nothing survives between requests (every request gets a new instance), so keep state
/// in your model graphs, which the host loads once per image version and shares.
pub trait Handler {
    /// Run one inference.
    fn predict(request: Request) -> Result<Response, HandlerError>;
}

/// One inference request, already decoded by the host into typed tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Input tensors, in signature order.
    pub inputs: Vec<Tensor>,
    /// Request parameters (Databricks `params`, V2 `parameters`) as JSON object text.
    pub parameters: Option<String>,
    /// The raw HTTP request body, present only when the image manifest asks for it.
    pub raw_body: Option<Vec<u8>>,
}

impl Request {
    /// A request carrying `inputs` and nothing else: what a handler's unit tests build
    /// (`MyHandler::predict(Request::new(...))` runs natively under `cargo test`).
    pub fn new(inputs: Vec<Tensor>) -> Self {
        Self {
            inputs,
            parameters: None,
            raw_body: None,
        }
    }

    /// This request with `parameters` (any value that serializes to a JSON object).
    pub fn with_params(mut self, parameters: &impl serde::Serialize) -> Self {
        self.parameters = serde_json::to_string(parameters).ok();
        self
    }

    /// The request's parameters (Databricks `params`, V2 `parameters`) as `T`.
    ///
    /// A request without parameters reads as `{}`, so a `T` whose fields have
    /// `#[serde(default)]` gets its defaults. A parameter of the wrong type or shape is an
    /// invalid-input error that names it (HTTP 400).
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Params {
    ///     #[serde(default = "one")]
    ///     scale: f32,
    /// }
    /// fn one() -> f32 { 1.0 }
    ///
    /// let request = sandserve_sdk::Request::new(vec![])
    ///     .with_params(&serde_json::json!({"scale": 2.5}));
    /// let params: Params = request.params().unwrap();
    /// assert_eq!(params.scale, 2.5);
    /// ```
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        let text = self.parameters.as_deref().unwrap_or("{}");
        serde_json::from_str(text)
            .map_err(|e| HandlerError::invalid_input(format!("parameters: {e}")))
    }

    /// The input tensor called `name`, or an invalid-input error naming it.
    pub fn input(&self, name: &str) -> Result<&Tensor, TensorError> {
        self.inputs
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| TensorError::MissingInput(name.to_string()))
    }

    /// The only input tensor, whatever its name; an error when there is not exactly one.
    pub fn single_input(&self) -> Result<&Tensor, TensorError> {
        match self.inputs.as_slice() {
            [only] => Ok(only),
            other => Err(TensorError::InputCount {
                expected: 1,
                actual: other.len(),
            }),
        }
    }
}

/// A successful inference result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    /// Output tensors.
    pub outputs: Vec<Tensor>,
    /// Optional response parameters as JSON object text.
    pub parameters: Option<String>,
}

impl Response {
    /// A response carrying `outputs` and no parameters.
    pub fn new(outputs: Vec<Tensor>) -> Self {
        Self {
            outputs,
            parameters: None,
        }
    }
}
