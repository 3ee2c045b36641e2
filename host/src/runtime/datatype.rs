//! The name of each element type as the KServe V2 protocol and model manifests spell it
//! (`FP32`, `INT64`, `BYTES`, ...): the one table both ways, here so that `package`
//! (manifests) and `codec` (request bodies) share it without depending on each other.

use super::ElementType;

/// The KServe V2 datatype name of an element type.
pub fn v2_datatype(t: ElementType) -> &'static str {
    match t {
        ElementType::Bool => "BOOL",
        ElementType::U8 => "UINT8",
        ElementType::U16 => "UINT16",
        ElementType::U32 => "UINT32",
        ElementType::U64 => "UINT64",
        ElementType::I8 => "INT8",
        ElementType::I16 => "INT16",
        ElementType::I32 => "INT32",
        ElementType::I64 => "INT64",
        ElementType::F16 => "FP16",
        ElementType::Bf16 => "BF16",
        ElementType::F32 => "FP32",
        ElementType::F64 => "FP64",
        ElementType::Bytes => "BYTES",
    }
}

/// The element type a KServe V2 datatype name stands for.
pub fn element_type_from_v2(name: &str) -> Option<ElementType> {
    Some(match name {
        "BOOL" => ElementType::Bool,
        "UINT8" => ElementType::U8,
        "UINT16" => ElementType::U16,
        "UINT32" => ElementType::U32,
        "UINT64" => ElementType::U64,
        "INT8" => ElementType::I8,
        "INT16" => ElementType::I16,
        "INT32" => ElementType::I32,
        "INT64" => ElementType::I64,
        "FP16" => ElementType::F16,
        "BF16" => ElementType::Bf16,
        "FP32" => ElementType::F32,
        "FP64" => ElementType::F64,
        "BYTES" => ElementType::Bytes,
        _ => return None,
    })
}
