//! The one interface every query protocol implements ([`QueryCodec`]): how a body
//! becomes the handler's request and how the handler's response becomes the answer.
//! The query pipeline (`serving::query`) drives it; a protocol adds a codec, never a path
//! of its own, so everything the pipeline does around a query (authorization, routing,
//! the signature check, fallback, statistics and the hooks that come after them) holds
//! for every protocol.

use super::databricks::{self, QueryFormat};
use super::v2::{self, EncodedResponse, RequestMeta};
use super::CodecError;
use crate::package::Signature;
use crate::runtime::{Request, Response};

/// A query protocol's body format, both ways.
///
/// A codec value carries what the request told it besides its body (V2: the binary
/// extension's header and the name the answer carries); it is cloned only when a large
/// body is decoded or a large answer encoded off the async worker.
pub trait QueryCodec: Clone + Send + Sync + 'static {
    /// What decoding learned that encoding needs (V2: the requested outputs and id).
    type Decoded: Send + 'static;
    /// The encoded answer.
    type Answer: Send + 'static;

    /// Parses `body` into the handler's request. `signature` (the served image's, when it
    /// has one) guides the mapping onto tensors; checking the request against it is the
    /// pipeline's next stage, not the codec's. `raw_body` is left `None`.
    fn decode(
        &self,
        body: &[u8],
        signature: Option<&Signature>,
    ) -> Result<(Self::Decoded, Request), CodecError>;

    /// Encodes the handler's `response` to the request `decoded` came from, served by
    /// image version `version`.
    fn encode(
        &self,
        version: u64,
        decoded: Self::Decoded,
        response: Response,
    ) -> Result<Self::Answer, CodecError>;

    /// The answer's size in bytes and its leading text part (the JSON), for usage and
    /// inference tables.
    fn answer_bytes(answer: &Self::Answer) -> (usize, &[u8]);
}

/// Databricks Model Serving: the four request formats in, `{"predictions": ...}` out.
#[derive(Debug, Clone, Copy, Default)]
pub struct DatabricksCodec;

impl QueryCodec for DatabricksCodec {
    type Decoded = QueryFormat;
    /// The JSON text of the answer.
    type Answer = Vec<u8>;

    fn decode(
        &self,
        body: &[u8],
        signature: Option<&Signature>,
    ) -> Result<(QueryFormat, Request), CodecError> {
        databricks::parse_query(body, signature)
    }

    fn encode(
        &self,
        _version: u64,
        _format: QueryFormat,
        response: Response,
    ) -> Result<Vec<u8>, CodecError> {
        let predictions = databricks::predictions(&response)?;
        serde_json::to_vec(&predictions)
            .map_err(|e| CodecError::field("predictions", format!("cannot be encoded: {e}")))
    }

    fn answer_bytes(answer: &Vec<u8>) -> (usize, &[u8]) {
        (answer.len(), answer)
    }
}

/// KServe Open Inference Protocol V2, in JSON or with the binary tensor data extension.
#[derive(Debug, Clone)]
pub struct V2Codec {
    /// The name the request used (an endpoint's or a model's): the answer's `model_name`.
    pub model_name: String,
    /// The request's `Inference-Header-Content-Length`, when it has binary tensor data.
    pub header_length: Option<String>,
}

impl QueryCodec for V2Codec {
    type Decoded = RequestMeta;
    type Answer = EncodedResponse;

    fn decode(
        &self,
        body: &[u8],
        _signature: Option<&Signature>,
    ) -> Result<(RequestMeta, Request), CodecError> {
        v2::parse_request(body, self.header_length.as_deref())
    }

    fn encode(
        &self,
        version: u64,
        decoded: RequestMeta,
        response: Response,
    ) -> Result<EncodedResponse, CodecError> {
        v2::encode_response(
            &self.model_name,
            Some(version.to_string()),
            &decoded,
            response,
        )
    }

    fn answer_bytes(answer: &EncodedResponse) -> (usize, &[u8]) {
        let total = answer.chunks.iter().map(|c| c.len()).sum();
        (total, answer.chunks.first().map_or(&[][..], |c| &c[..]))
    }
}
