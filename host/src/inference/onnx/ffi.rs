//! The one place that calls ONNX Runtime's C API directly: running a shared session from
//! many threads at once, on tensors that borrow the guest's bytes without copying.
//!
//! `ort` 2.0.0-rc.10 exposes `Session::run` as `&mut self`, which would force one lock per
//! session. ONNX Runtime itself documents `OrtApi::Run` as safe to call concurrently on one
//! session, so we call it through `ort::api()` with the session's raw pointer.

use ort::sys::{
    ONNXTensorElementDataType, ONNXType, OrtAllocatorType, OrtMemType, OrtMemoryInfo, OrtStatus,
    OrtStatusPtr, OrtTensorTypeAndShapeInfo, OrtValue,
};
use ort::AsPointer;
use std::ffi::{c_void, CStr, CString};
use std::ptr::{self, NonNull};

/// Turns an ONNX Runtime status into a Result, releasing it.
fn check(status: OrtStatusPtr) -> Result<(), String> {
    let status: *mut OrtStatus = status.0;
    if status.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: `status` is a non-null status ONNX Runtime returned; its message is valid
    // until the status is released, and we copy it out first.
    let message = unsafe { CStr::from_ptr((api.GetErrorMessage)(status)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: released exactly once, after its last use.
    unsafe { (api.ReleaseStatus)(status) };
    Err(message)
}

/// CPU memory description for tensors that wrap host buffers.
struct CpuMemoryInfo(NonNull<OrtMemoryInfo>);

impl CpuMemoryInfo {
    fn new() -> Result<Self, String> {
        let mut info = ptr::null_mut();
        // SAFETY: out-pointer to a local; checked below.
        check(unsafe {
            (ort::api().CreateCpuMemoryInfo)(
                OrtAllocatorType::OrtArenaAllocator,
                OrtMemType::OrtMemTypeDefault,
                &mut info,
            )
        })?;
        NonNull::new(info)
            .map(Self)
            .ok_or_else(|| "CreateCpuMemoryInfo returned null".to_string())
    }
}

// SAFETY: an OrtMemoryInfo is an immutable description (device, allocator kind) that ONNX
// Runtime only reads; sharing it between threads is how its own C++ API uses it.
unsafe impl Send for CpuMemoryInfo {}
// SAFETY: as above, never mutated after creation.
unsafe impl Sync for CpuMemoryInfo {}

/// The CPU memory description every input tensor uses, created once per process.
fn cpu_memory() -> Result<&'static CpuMemoryInfo, String> {
    static MEMORY: std::sync::OnceLock<Result<CpuMemoryInfo, String>> = std::sync::OnceLock::new();
    MEMORY
        .get_or_init(CpuMemoryInfo::new)
        .as_ref()
        .map_err(Clone::clone)
}

impl Drop for CpuMemoryInfo {
    fn drop(&mut self) {
        // SAFETY: created by CreateCpuMemoryInfo, released once.
        unsafe { (ort::api().ReleaseMemoryInfo)(self.0.as_ptr()) };
    }
}

/// An `OrtValue` owned by us, released on drop.
struct OwnedValue(NonNull<OrtValue>);

impl Drop for OwnedValue {
    fn drop(&mut self) {
        // SAFETY: a value ONNX Runtime created for us, released once.
        unsafe { (ort::api().ReleaseValue)(self.0.as_ptr()) };
    }
}

/// One input: a name, an element type, a shape and the bytes (borrowed, not copied).
pub struct InputRef<'a> {
    /// Graph input name.
    pub name: &'a str,
    /// ONNX element type of `data`.
    pub element_type: ONNXTensorElementDataType,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Row-major little-endian data, aligned to the element size.
    pub data: &'a [u8],
}

/// One output, copied out of ONNX Runtime's buffer.
pub struct Output {
    /// ONNX element type.
    pub element_type: ONNXTensorElementDataType,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Row-major little-endian data.
    pub data: Vec<u8>,
}

/// Runs `session` on `inputs` and returns the outputs named `output_names`, in order.
///
/// Safe to call from many threads on the same session at once.
pub fn run(
    session: &ort::session::Session,
    inputs: &[InputRef<'_>],
    output_names: &[CString],
    element_size: impl Fn(ONNXTensorElementDataType) -> Option<usize>,
) -> Result<Vec<Output>, String> {
    let api = ort::api();
    let memory = cpu_memory()?;
    let mut values = Vec::with_capacity(inputs.len());
    let mut names = Vec::with_capacity(inputs.len());
    for input in inputs {
        let mut value = ptr::null_mut();
        // SAFETY: the data pointer and length describe `input.data`, which outlives the
        // value (both live until the end of this function); ONNX Runtime only reads input
        // buffers; shape points at `input.shape`, valid for the call.
        check(unsafe {
            (api.CreateTensorWithDataAsOrtValue)(
                memory.0.as_ptr(),
                input.data.as_ptr().cast_mut().cast::<c_void>(),
                input.data.len(),
                input.shape.as_ptr(),
                input.shape.len(),
                input.element_type,
                &mut value,
            )
        })
        .map_err(|e| format!("input `{}`: {e}", input.name))?;
        let value = NonNull::new(value).ok_or("CreateTensorWithDataAsOrtValue returned null")?;
        values.push(OwnedValue(value));
        names.push(CString::new(input.name).map_err(|_| "input name contains NUL")?);
    }
    let input_name_ptrs: Vec<*const std::ffi::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let input_value_ptrs: Vec<*const OrtValue> =
        values.iter().map(|v| v.0.as_ptr().cast_const()).collect();
    let output_name_ptrs: Vec<*const std::ffi::c_char> =
        output_names.iter().map(|n| n.as_ptr()).collect();
    let mut output_ptrs: Vec<*mut OrtValue> = vec![ptr::null_mut(); output_names.len()];
    let session_ptr = session.inner().ptr().cast_mut();
    // SAFETY: every pointer array has the length passed with it and outlives the call;
    // `Run` is documented thread-safe for concurrent calls on one session; the output
    // array receives values we own afterwards.
    check(unsafe {
        (api.Run)(
            session_ptr,
            ptr::null(),
            input_name_ptrs.as_ptr(),
            input_value_ptrs.as_ptr(),
            input_value_ptrs.len(),
            output_name_ptrs.as_ptr(),
            output_name_ptrs.len(),
            output_ptrs.as_mut_ptr(),
        )
    })?;
    let owned: Vec<OwnedValue> = output_ptrs
        .into_iter()
        .map(|p| NonNull::new(p).map(OwnedValue))
        .collect::<Option<_>>()
        .ok_or("Run returned a null output")?;
    owned
        .iter()
        .zip(output_names)
        .map(|(value, name)| {
            read_tensor(value, &element_size)
                .map_err(|e| format!("output `{}`: {e}", name.to_string_lossy()))
        })
        .collect()
}

/// Copies a tensor value's type, shape and bytes out of ONNX Runtime.
fn read_tensor(
    value: &OwnedValue,
    element_size: &impl Fn(ONNXTensorElementDataType) -> Option<usize>,
) -> Result<Output, String> {
    let api = ort::api();
    let mut kind = ONNXType::ONNX_TYPE_UNKNOWN;
    // SAFETY: `value` is a live value; out-pointer to a local.
    check(unsafe { (api.GetValueType)(value.0.as_ptr(), &mut kind) })?;
    if kind != ONNXType::ONNX_TYPE_TENSOR {
        return Err(format!(
            "is a {kind:?}, not a tensor (export classifiers without ZipMap)"
        ));
    }
    let mut info: *mut OrtTensorTypeAndShapeInfo = ptr::null_mut();
    // SAFETY: as above.
    check(unsafe { (api.GetTensorTypeAndShape)(value.0.as_ptr(), &mut info) })?;
    let info = NonNull::new(info).ok_or("GetTensorTypeAndShape returned null")?;
    let described = describe(info);
    // SAFETY: created by GetTensorTypeAndShape, released once.
    unsafe { (api.ReleaseTensorTypeAndShapeInfo)(info.as_ptr()) };
    let (element_type, shape, count) = described?;
    let size = element_size(element_type)
        .ok_or_else(|| format!("has element type {element_type:?}, which wasi-nn cannot carry"))?;
    let bytes = count.checked_mul(size).ok_or("tensor size overflows")?;
    if bytes == 0 {
        return Ok(Output {
            element_type,
            shape,
            data: Vec::new(),
        });
    }
    let mut data_ptr: *mut c_void = ptr::null_mut();
    // SAFETY: a live tensor value; out-pointer to a local.
    check(unsafe { (api.GetTensorMutableData)(value.0.as_ptr(), &mut data_ptr) })?;
    if data_ptr.is_null() {
        return Err("tensor has no data".into());
    }
    // SAFETY: ONNX Runtime guarantees `count` elements of `size` bytes at `data_ptr` for a
    // CPU tensor of this type; the value stays alive while we copy.
    let data = unsafe { std::slice::from_raw_parts(data_ptr.cast::<u8>(), bytes) }.to_vec();
    Ok(Output {
        element_type,
        shape,
        data,
    })
}

fn describe(
    info: NonNull<OrtTensorTypeAndShapeInfo>,
) -> Result<(ONNXTensorElementDataType, Vec<i64>, usize), String> {
    let api = ort::api();
    let info = info.as_ptr();
    let mut element_type = ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    let mut rank = 0usize;
    let mut count = 0usize;
    // SAFETY: `info` is live for this function; out-pointers to locals; the dims buffer
    // has exactly `rank` slots.
    unsafe {
        check((api.GetTensorElementType)(info, &mut element_type))?;
        check((api.GetDimensionsCount)(info, &mut rank))?;
        let mut shape = vec![0i64; rank];
        check((api.GetDimensions)(info, shape.as_mut_ptr(), rank))?;
        check((api.GetTensorShapeElementCount)(info, &mut count))?;
        Ok((element_type, shape, count))
    }
}
