//! Element types across the boundary: wasi-nn's tensor types and the engines' own.

use ort::sys::ONNXTensorElementDataType as Onnx;
use wasmtime_wasi_nn::wit::TensorType;

/// Bytes per element of a wasi-nn tensor type.
pub fn wasi_nn_size(t: TensorType) -> usize {
    match t {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
    }
}

/// The wasi-nn name of a tensor type, for messages.
pub fn wasi_nn_name(t: TensorType) -> &'static str {
    match t {
        TensorType::U8 => "u8",
        TensorType::Fp16 => "fp16",
        TensorType::Bf16 => "bf16",
        TensorType::Fp32 => "fp32",
        TensorType::I32 => "i32",
        TensorType::Fp64 => "fp64",
        TensorType::I64 => "i64",
    }
}

/// The ONNX element type a wasi-nn tensor of type `t` can feed, given what the graph
/// declares (`u8` also feeds `bool`, which has the same layout).
pub fn onnx_for_input(t: TensorType, declared: Onnx) -> Option<Onnx> {
    let natural = match t {
        TensorType::U8 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
        TensorType::Fp16 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
        TensorType::Bf16 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16,
        TensorType::Fp32 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
        TensorType::Fp64 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE,
        TensorType::I32 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
        TensorType::I64 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
    };
    if natural == declared {
        Some(natural)
    } else if t == TensorType::U8 && declared == Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL {
        Some(declared)
    } else {
        None
    }
}

/// The wasi-nn type an ONNX output is handed back as (`bool` as `u8`).
pub fn wasi_nn_for_output(t: Onnx) -> Option<TensorType> {
    Some(match t {
        Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 | Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL => {
            TensorType::U8
        }
        Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 => TensorType::Fp16,
        Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 => TensorType::Bf16,
        Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT => TensorType::Fp32,
        Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE => TensorType::Fp64,
        Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 => TensorType::I32,
        Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 => TensorType::I64,
        _ => return None,
    })
}

/// Bytes per element of an ONNX type wasi-nn can carry.
pub fn onnx_size(t: Onnx) -> Option<usize> {
    wasi_nn_for_output(t).map(wasi_nn_size)
}

/// A short name of an ONNX element type, for messages.
pub fn onnx_name(t: Onnx) -> String {
    format!("{t:?}")
        .trim_start_matches("ONNX_TENSOR_ELEMENT_DATA_TYPE_")
        .to_lowercase()
}
