//! ONNX Runtime custom operators served by the core: `RegisterCustomOps`, the symbol ONNX Runtime's
//! `RegisterCustomOpsLibrary` looks up in a library, adds the domain `ai.acestep` with one op, `Snake`
//! (see [`crate::snake`]). A host that wants the fused kernel registers this library's path on its
//! CPU session options; the exported VAE graphs declare `ai.acestep.Snake` as a model-local function
//! whose body is the five-op form, so a session without the registration (another runtime, the CUDA
//! provider, an older host) runs the graph unchanged.
//!
//! The core does not link ONNX Runtime: ORT hands over its API table when it registers the ops, and
//! the few functions used here are read from that table by slot. The C API only ever appends to the
//! table, so a slot never moves; the slots below are those of `onnxruntime_c_api.h` (as checked for
//! the C# host's `OrtApi.cs`). `KernelContext_ParallelFor` needs API 17 (ONNX Runtime 1.17).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::snake::snake_row;

type OrtStatus = *mut c_void;
type Opaque = c_void;

/// The API version requested from ONNX Runtime (= its minor version in 1.x).
const API_VERSION: u32 = 17;
/// `OrtCustomOp::version`: 16 has `CreateKernelV2`/`KernelComputeV2` (errors as statuses) and stops
/// before the fields of 17 (shape inference, opset range), which this op leaves to the graph.
const CUSTOM_OP_VERSION: u32 = 16;
const ORT_FAIL: c_int = 1;
const ORT_INVALID_ARGUMENT: c_int = 2;
const TENSOR_FLOAT: c_int = 1;
const INPUT_OUTPUT_REQUIRED: c_int = 0;
const MEM_TYPE_DEFAULT: c_int = 0;

const DOMAIN: &CStr = c"ai.acestep";
const SNAKE: &CStr = c"Snake";

/// Slots of the OrtApi functions used here.
mod slot {
    pub(super) const CREATE_STATUS: usize = 0;
    pub(super) const CREATE_CUSTOM_OP_DOMAIN: usize = 26;
    pub(super) const CUSTOM_OP_DOMAIN_ADD: usize = 27;
    pub(super) const ADD_CUSTOM_OP_DOMAIN: usize = 28;
    pub(super) const GET_TENSOR_MUTABLE_DATA: usize = 51;
    pub(super) const GET_DIMENSIONS_COUNT: usize = 61;
    pub(super) const GET_DIMENSIONS: usize = 62;
    pub(super) const GET_TENSOR_TYPE_AND_SHAPE: usize = 65;
    pub(super) const KERNEL_CONTEXT_GET_INPUT: usize = 90;
    pub(super) const KERNEL_CONTEXT_GET_OUTPUT: usize = 91;
    pub(super) const RELEASE_TENSOR_TYPE_AND_SHAPE_INFO: usize = 99;
    pub(super) const KERNEL_CONTEXT_PARALLEL_FOR: usize = 274;
}

#[repr(C)]
pub struct OrtApiBase {
    get_api: unsafe extern "system" fn(version: u32) -> *const *const c_void,
    get_version_string: unsafe extern "system" fn() -> *const c_char,
}

type RowFn = unsafe extern "system" fn(*mut c_void, usize);

/// The OrtApi functions used, read once from ORT's table.
struct Api {
    create_status: unsafe extern "system" fn(c_int, *const c_char) -> OrtStatus,
    create_custom_op_domain: unsafe extern "system" fn(*const c_char, *mut *mut Opaque) -> OrtStatus,
    custom_op_domain_add: unsafe extern "system" fn(*mut Opaque, *const CustomOp) -> OrtStatus,
    add_custom_op_domain: unsafe extern "system" fn(*mut Opaque, *mut Opaque) -> OrtStatus,
    get_tensor_mutable_data: unsafe extern "system" fn(*mut Opaque, *mut *mut c_void) -> OrtStatus,
    get_dimensions_count: unsafe extern "system" fn(*const Opaque, *mut usize) -> OrtStatus,
    get_dimensions: unsafe extern "system" fn(*const Opaque, *mut i64, usize) -> OrtStatus,
    get_tensor_type_and_shape: unsafe extern "system" fn(*const Opaque, *mut *mut Opaque) -> OrtStatus,
    kernel_context_get_input: unsafe extern "system" fn(*const Opaque, usize, *mut *const Opaque) -> OrtStatus,
    kernel_context_get_output: unsafe extern "system" fn(*mut Opaque, usize, *const i64, usize, *mut *mut Opaque) -> OrtStatus,
    release_tensor_type_and_shape_info: unsafe extern "system" fn(*mut Opaque),
    kernel_context_parallel_for: unsafe extern "system" fn(*const Opaque, RowFn, usize, usize, *mut c_void) -> OrtStatus,
}

impl Api {
    /// # Safety
    /// `table` is ORT's OrtApi, of a runtime that gave it for [`API_VERSION`] (registration checks).
    unsafe fn read(table: *const *const c_void) -> Api {
        let f = |i: usize| *table.add(i);
        Api {
            create_status: std::mem::transmute(f(slot::CREATE_STATUS)),
            create_custom_op_domain: std::mem::transmute(f(slot::CREATE_CUSTOM_OP_DOMAIN)),
            custom_op_domain_add: std::mem::transmute(f(slot::CUSTOM_OP_DOMAIN_ADD)),
            add_custom_op_domain: std::mem::transmute(f(slot::ADD_CUSTOM_OP_DOMAIN)),
            get_tensor_mutable_data: std::mem::transmute(f(slot::GET_TENSOR_MUTABLE_DATA)),
            get_dimensions_count: std::mem::transmute(f(slot::GET_DIMENSIONS_COUNT)),
            get_dimensions: std::mem::transmute(f(slot::GET_DIMENSIONS)),
            get_tensor_type_and_shape: std::mem::transmute(f(slot::GET_TENSOR_TYPE_AND_SHAPE)),
            kernel_context_get_input: std::mem::transmute(f(slot::KERNEL_CONTEXT_GET_INPUT)),
            kernel_context_get_output: std::mem::transmute(f(slot::KERNEL_CONTEXT_GET_OUTPUT)),
            release_tensor_type_and_shape_info: std::mem::transmute(f(slot::RELEASE_TENSOR_TYPE_AND_SHAPE_INFO)),
            kernel_context_parallel_for: std::mem::transmute(f(slot::KERNEL_CONTEXT_PARALLEL_FOR)),
        }
    }

    fn status(&self, code: c_int, message: &str) -> OrtStatus {
        let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
        // SAFETY: ORT copies the message.
        unsafe { (self.create_status)(code, text.as_ptr()) }
    }
}

/// ORT's `OrtCustomOp`, laid out as in `onnxruntime_c_api.h` up to `KernelComputeV2` (the fields
/// version 16 has); the later fields exist so the struct has the size newer ORTs expect, and are null.
#[repr(C)]
pub struct CustomOp {
    version: u32,
    create_kernel: unsafe extern "system" fn(*const CustomOp, *const c_void, *const Opaque) -> *mut c_void,
    get_name: unsafe extern "system" fn(*const CustomOp) -> *const c_char,
    get_execution_provider_type: unsafe extern "system" fn(*const CustomOp) -> *const c_char,
    get_input_type: unsafe extern "system" fn(*const CustomOp, usize) -> c_int,
    get_input_type_count: unsafe extern "system" fn(*const CustomOp) -> usize,
    get_output_type: unsafe extern "system" fn(*const CustomOp, usize) -> c_int,
    get_output_type_count: unsafe extern "system" fn(*const CustomOp) -> usize,
    kernel_compute: unsafe extern "system" fn(*mut c_void, *mut Opaque),
    kernel_destroy: unsafe extern "system" fn(*mut c_void),
    get_input_characteristic: unsafe extern "system" fn(*const CustomOp, usize) -> c_int,
    get_output_characteristic: unsafe extern "system" fn(*const CustomOp, usize) -> c_int,
    get_input_memory_type: unsafe extern "system" fn(*const CustomOp, usize) -> c_int,
    get_variadic_input_min_arity: unsafe extern "system" fn(*const CustomOp) -> c_int,
    get_variadic_input_homogeneity: unsafe extern "system" fn(*const CustomOp) -> c_int,
    get_variadic_output_min_arity: unsafe extern "system" fn(*const CustomOp) -> c_int,
    get_variadic_output_homogeneity: unsafe extern "system" fn(*const CustomOp) -> c_int,
    create_kernel_v2: unsafe extern "system" fn(*const CustomOp, *const c_void, *const Opaque, *mut *mut c_void) -> OrtStatus,
    kernel_compute_v2: unsafe extern "system" fn(*mut c_void, *mut Opaque) -> OrtStatus,
    later_fields: [*const c_void; 7],
}

// SAFETY: the table is immutable and its pointers are functions and null.
unsafe impl Sync for CustomOp {}

/// A kernel holds the API table of the ONNX Runtime that created it: one process may hold two (the
/// Python wheel's and the libonnxruntime a C# host loaded), and a context is only valid with its own.
struct Kernel {
    api: Api,
}

unsafe extern "system" fn create_kernel(_: *const CustomOp, api: *const c_void, _: *const Opaque) -> *mut c_void {
    Box::into_raw(Box::new(Kernel { api: Api::read(api as *const *const c_void) })) as *mut c_void
}
unsafe extern "system" fn create_kernel_v2(op: *const CustomOp, api: *const c_void, info: *const Opaque, out: *mut *mut c_void) -> OrtStatus {
    *out = create_kernel(op, api, info);
    std::ptr::null_mut()
}
unsafe extern "system" fn kernel_destroy(kernel: *mut c_void) {
    if !kernel.is_null() {
        drop(Box::from_raw(kernel as *mut Kernel));
    }
}
unsafe extern "system" fn snake_name(_: *const CustomOp) -> *const c_char {
    SNAKE.as_ptr()
}
unsafe extern "system" fn cpu_provider(_: *const CustomOp) -> *const c_char {
    std::ptr::null() // null: the CPU execution provider
}
unsafe extern "system" fn float_type(_: *const CustomOp, _: usize) -> c_int {
    TENSOR_FLOAT
}
unsafe extern "system" fn three(_: *const CustomOp) -> usize {
    3
}
unsafe extern "system" fn one(_: *const CustomOp) -> usize {
    1
}
unsafe extern "system" fn required(_: *const CustomOp, _: usize) -> c_int {
    INPUT_OUTPUT_REQUIRED
}
unsafe extern "system" fn default_memory(_: *const CustomOp, _: usize) -> c_int {
    MEM_TYPE_DEFAULT
}
unsafe extern "system" fn arity_one(_: *const CustomOp) -> c_int {
    1
}
unsafe extern "system" fn homogeneous(_: *const CustomOp) -> c_int {
    1
}

/// The v1 entry, which has no way to report an error. Never called: ORT uses `KernelComputeV2` for an op
/// of version ≥ 16, and registration refuses runtimes older than 1.17. Kept so the table has no null.
unsafe extern "system" fn kernel_compute(kernel: *mut c_void, context: *mut Opaque) {
    let _ = kernel_compute_v2(kernel, context);
}

unsafe extern "system" fn kernel_compute_v2(kernel: *mut c_void, context: *mut Opaque) -> OrtStatus {
    let api = &(*(kernel as *const Kernel)).api;
    match catch_unwind(AssertUnwindSafe(|| compute_snake(api, context))) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(Failure::Ort(status))) => status,
        Ok(Err(Failure::Invalid(message))) => api.status(ORT_INVALID_ARGUMENT, &format!("ai.acestep.Snake: {message}")),
        Ok(Err(Failure::Internal(message))) => api.status(ORT_FAIL, &format!("ai.acestep.Snake: {message}")),
        Err(_) => api.status(ORT_FAIL, "ai.acestep.Snake: internal error (panic caught in the kernel)"),
    }
}

static SNAKE_OP: CustomOp = CustomOp {
    version: CUSTOM_OP_VERSION,
    create_kernel,
    get_name: snake_name,
    get_execution_provider_type: cpu_provider,
    get_input_type: float_type,
    get_input_type_count: three,
    get_output_type: float_type,
    get_output_type_count: one,
    kernel_compute,
    kernel_destroy,
    get_input_characteristic: required,
    get_output_characteristic: required,
    get_input_memory_type: default_memory,
    get_variadic_input_min_arity: arity_one,
    get_variadic_input_homogeneity: homogeneous,
    get_variadic_output_min_arity: arity_one,
    get_variadic_output_homogeneity: homogeneous,
    create_kernel_v2,
    kernel_compute_v2,
    later_fields: [std::ptr::null(); 7],
};

/// Why a run failed: ORT's own status (passed on as it is), or ours.
enum Failure {
    Ort(OrtStatus),
    Invalid(String),
    Internal(String),
}

fn check(status: OrtStatus) -> Result<(), Failure> {
    check_status(status).map_err(Failure::Ort)
}

/// The shape of an ORT value.
unsafe fn dims_of(api: &Api, value: *const Opaque) -> Result<Vec<i64>, Failure> {
    let mut info = std::ptr::null_mut();
    check((api.get_tensor_type_and_shape)(value, &mut info))?;
    let mut rank = 0usize;
    let mut dims = Vec::new();
    let mut result = check((api.get_dimensions_count)(info, &mut rank));
    if result.is_ok() {
        dims = vec![0i64; rank];
        result = check((api.get_dimensions)(info, dims.as_mut_ptr(), rank));
    }
    (api.release_tensor_type_and_shape_info)(info);
    result.map(|()| dims)
}

unsafe fn input(api: &Api, context: *mut Opaque, index: usize, name: &str) -> Result<(*const f32, Vec<i64>), Failure> {
    let mut value = std::ptr::null();
    check((api.kernel_context_get_input)(context, index, &mut value))?;
    if value.is_null() {
        return Err(Failure::Invalid(format!("input {name} is missing")));
    }
    let dims = dims_of(api, value)?;
    let mut data = std::ptr::null_mut();
    check((api.get_tensor_mutable_data)(value as *mut Opaque, &mut data))?;
    Ok((data as *const f32, dims))
}

/// The rows the parallel loop hands out: row `i` is channel `i % channels` of batch item `i / channels`.
struct Rows {
    x: *const f32,
    y: *mut f32,
    row_len: usize,
    channels: usize,
    scale: *const f32,
    half_inv_beta: *const f32,
    panicked: AtomicBool,
}

unsafe extern "system" fn snake_one_row(rows: *mut c_void, i: usize) {
    let rows = &*(rows as *const Rows);
    let ok = catch_unwind(AssertUnwindSafe(|| {
        let channel = i % rows.channels;
        let x = std::slice::from_raw_parts(rows.x.add(i * rows.row_len), rows.row_len);
        let y = std::slice::from_raw_parts_mut(rows.y.add(i * rows.row_len), rows.row_len);
        snake_row(x, y, *rows.scale.add(channel), *rows.half_inv_beta.add(channel));
    }));
    if ok.is_err() {
        rows.panicked.store(true, Ordering::Relaxed); // never unwind into ORT's thread pool
    }
}

/// Snake(x [B, C, ...], scale [C elements], half_inv_beta [C elements]) → y, shaped as x.
unsafe fn compute_snake(api: &Api, context: *mut Opaque) -> Result<(), Failure> {
    let (x, dims) = input(api, context, 0, "x")?;
    let (scale, scale_dims) = input(api, context, 1, "scale")?;
    let (half_inv_beta, c_dims) = input(api, context, 2, "half_inv_beta")?;
    if dims.len() < 2 {
        return Err(Failure::Invalid(format!("x must be [batch, channels, ...], got shape {dims:?}")));
    }
    let channels = dims[1] as usize;
    let count = |d: &[i64]| d.iter().product::<i64>() as usize;
    if count(&scale_dims) != channels || count(&c_dims) != channels {
        return Err(Failure::Invalid(format!(
            "x has {channels} channels (shape {dims:?}) but scale has shape {scale_dims:?} and half_inv_beta {c_dims:?}")));
    }
    let mut out = std::ptr::null_mut();
    check((api.kernel_context_get_output)(context, 0, dims.as_ptr(), dims.len(), &mut out))?;
    let mut y = std::ptr::null_mut();
    check((api.get_tensor_mutable_data)(out, &mut y))?;
    let rows_total = dims[0] as usize * channels;
    let elements = count(&dims);
    if elements == 0 {
        return Ok(());
    }
    let rows = Rows {
        x,
        y: y as *mut f32,
        row_len: elements / rows_total,
        channels,
        scale,
        half_inv_beta,
        panicked: AtomicBool::new(false),
    };
    let status = (api.kernel_context_parallel_for)(context, snake_one_row, rows_total, 0, &rows as *const Rows as *mut c_void);
    check(status)?;
    if rows.panicked.load(Ordering::Relaxed) {
        return Err(Failure::Internal("internal error (panic caught in a row)".into()));
    }
    Ok(())
}

/// ONNX Runtime's entry point for a custom-op library (`SessionOptions.register_custom_ops_library`
/// in Python, `RegisterCustomOpsLibrary_V2` in the C API): adds the domain `ai.acestep` to `options`.
/// Returns null on success, else an OrtStatus naming the problem (ONNX Runtime older than 1.17).
///
/// # Safety
/// Called by ONNX Runtime with its session options and API base.
#[no_mangle]
pub unsafe extern "system" fn RegisterCustomOps(options: *mut Opaque, api_base: *const OrtApiBase) -> OrtStatus {
    if api_base.is_null() {
        return std::ptr::null_mut(); // nothing to report an error through
    }
    let base = &*api_base;
    let table = (base.get_api)(API_VERSION);
    if table.is_null() {
        let version = CStr::from_ptr((base.get_version_string)()).to_string_lossy().into_owned();
        let old = (base.get_api)(1);
        if old.is_null() {
            return std::ptr::null_mut();
        }
        let create_status: unsafe extern "system" fn(c_int, *const c_char) -> OrtStatus =
            std::mem::transmute(*old.add(slot::CREATE_STATUS));
        let text = CString::new(format!(
            "acestep_runtime's ai.acestep ops need onnxruntime >= 1.17 (API {API_VERSION}); this one is {version}"))
            .unwrap_or_default();
        return create_status(ORT_FAIL, text.as_ptr());
    }
    let api = Api::read(table);
    match shared_domain(&api, table) {
        Ok(domain) => (api.add_custom_op_domain)(options, domain),
        Err(status) => status,
    }
}

/// The `ai.acestep` domain of the ONNX Runtime whose API table is `table`, made on its first
/// registration. Hosts register the library on every session's options; ORT keeps a pointer to the
/// domain in each, so a domain is never released, and one per registration would leak one per session.
/// The domain is only read once made, so any number of options may share it.
unsafe fn shared_domain(api: &Api, table: *const *const c_void) -> Result<*mut Opaque, OrtStatus> {
    static DOMAINS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new()); // (API table, domain) addresses
    let mut domains = DOMAINS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&(_, domain)) = domains.iter().find(|(t, _)| *t == table as usize) {
        return Ok(domain as *mut Opaque);
    }
    let mut domain = std::ptr::null_mut();
    check_status((api.create_custom_op_domain)(DOMAIN.as_ptr(), &mut domain))?;
    check_status((api.custom_op_domain_add)(domain, &SNAKE_OP))?; // on failure the half-made domain leaks, once
    domains.push((table as usize, domain as usize));
    Ok(domain)
}

fn check_status(status: OrtStatus) -> Result<(), OrtStatus> {
    if status.is_null() {
        Ok(())
    } else {
        Err(status)
    }
}
