//! Conversions between the SDK's types and the bindings generated from the WIT contract.
//! Data buffers move; nothing is copied.

use crate::bindings::sandserve::handler::types as wit;
use crate::{ElementType, HandlerError, Request, Response, Tensor};

impl From<wit::ElementType> for ElementType {
    fn from(t: wit::ElementType) -> Self {
        match t {
            wit::ElementType::Bool => Self::Bool,
            wit::ElementType::U8 => Self::U8,
            wit::ElementType::U16 => Self::U16,
            wit::ElementType::U32 => Self::U32,
            wit::ElementType::U64 => Self::U64,
            wit::ElementType::I8 => Self::I8,
            wit::ElementType::I16 => Self::I16,
            wit::ElementType::I32 => Self::I32,
            wit::ElementType::I64 => Self::I64,
            wit::ElementType::F16 => Self::F16,
            wit::ElementType::Bf16 => Self::Bf16,
            wit::ElementType::F32 => Self::F32,
            wit::ElementType::F64 => Self::F64,
            wit::ElementType::Bytes => Self::Bytes,
        }
    }
}

impl From<ElementType> for wit::ElementType {
    fn from(t: ElementType) -> Self {
        match t {
            ElementType::Bool => Self::Bool,
            ElementType::U8 => Self::U8,
            ElementType::U16 => Self::U16,
            ElementType::U32 => Self::U32,
            ElementType::U64 => Self::U64,
            ElementType::I8 => Self::I8,
            ElementType::I16 => Self::I16,
            ElementType::I32 => Self::I32,
            ElementType::I64 => Self::I64,
            ElementType::F16 => Self::F16,
            ElementType::Bf16 => Self::Bf16,
            ElementType::F32 => Self::F32,
            ElementType::F64 => Self::F64,
            ElementType::Bytes => Self::Bytes,
        }
    }
}

impl From<wit::Tensor> for Tensor {
    fn from(t: wit::Tensor) -> Self {
        Self {
            name: t.name,
            shape: t.shape,
            element_type: t.element_type.into(),
            data: t.data,
        }
    }
}

impl From<Tensor> for wit::Tensor {
    fn from(t: Tensor) -> Self {
        Self {
            name: t.name,
            shape: t.shape,
            element_type: t.element_type.into(),
            data: t.data,
        }
    }
}

impl From<wit::Request> for Request {
    fn from(r: wit::Request) -> Self {
        Self {
            inputs: r.inputs.into_iter().map(Into::into).collect(),
            parameters: r.parameters,
            raw_body: r.raw_body,
        }
    }
}

impl From<Response> for wit::Response {
    fn from(r: Response) -> Self {
        Self {
            outputs: r.outputs.into_iter().map(Into::into).collect(),
            parameters: r.parameters,
        }
    }
}

impl From<HandlerError> for wit::HandlerError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::InvalidInput(m) => Self::InvalidInput(m),
            HandlerError::Unavailable(m) => Self::Unavailable(m),
            HandlerError::Internal(m) => Self::Internal(m),
        }
    }
}
