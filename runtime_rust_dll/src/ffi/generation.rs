//! C ABI of the generation driver (`ace_generation_*`). See `generation` for what the core does
//! between graph runs and `docs/dll_api.md` ("Driving a generation") for the host loop.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::guard::guard;
use super::package::AcePackage;
use super::ptr;
use super::AceStatus;
use crate::error::{Error, Result};
use crate::generation::{Call, Generation, Source, Submitted};
use crate::package::DType;

/// `AceTensor.dtype` of float32 data (ONNX Runtime's element type number).
pub const ACE_DTYPE_FLOAT32: i32 = 1;
/// `AceTensor.dtype` of int64 data (ONNX Runtime's element type number).
pub const ACE_DTYPE_INT64: i32 = 7;

/// A named tensor crossing the boundary: a graph input in an `AceGraphCall`, or a graph output
/// the host submits. Layout fixed for ABI v1.
#[repr(C)]
pub struct AceTensor {
    /// The graph input or output name (NUL-terminated UTF-8).
    pub name: *const c_char,
    /// `ACE_DTYPE_FLOAT32` or `ACE_DTYPE_INT64`.
    pub dtype: i32,
    /// `rank` dimensions. In a call, a dimension the core does not know is -1 (only for inputs
    /// the host holds, whose real shape is the host's value's).
    pub shape: *const i64,
    pub rank: usize,
    /// Row-major data, native endianness, `byte_len` bytes. In a call: core-owned, read-only,
    /// valid until the next `ace_generation_next`, `ace_generation_submit` or
    /// `ace_generation_free` on this generation; NULL when `host_key` is set.
    pub data: *const c_void,
    pub byte_len: usize,
    /// In a call: non-NULL when the input is a value the host kept from an earlier call (an
    /// output whose `keep_as` was this key); feed that value. Ignored on submit.
    pub host_key: *const c_char,
}

/// An output a call wants. Layout fixed for ABI v1.
#[repr(C)]
pub struct AceGraphOutput {
    pub name: *const c_char,
    /// NULL: submit this output with `ace_generation_submit`. Non-NULL: do not submit it; keep the
    /// value under this key (on the device, if you like) for a later call that names the key.
    pub keep_as: *const c_char,
}

/// The next graph run. Owned by the generation; valid until the next `ace_generation_next`,
/// `ace_generation_submit` or `ace_generation_free` on it. Layout fixed for ABI v1.
#[repr(C)]
pub struct AceGraphCall {
    /// The package component to run (its file is in `ace_package_info_json`).
    pub component: *const c_char,
    pub inputs: *const AceTensor,
    pub num_inputs: usize,
    pub outputs: *const AceGraphOutput,
    pub num_outputs: usize,
    /// Host-kept keys no later call needs: drop those values after this run.
    pub release: *const *const c_char,
    pub num_release: usize,
    /// Progress: "lm_simple", "lm_metadata", "lm_codes" (LM phases: tokens written so far and
    /// the phase's token budget; the phase usually ends earlier, at `<|im_end|>`), "encode",
    /// "diffusion" or "decode" (calls of this stage done before this one; the stage's total).
    pub stage: *const c_char,
    pub stage_done: u32,
    pub stage_total: u32,
}

/// C-side storage of the current call: the strings and arrays its pointers refer to.
struct CallView {
    _strings: Vec<CString>,
    _shapes: Vec<Vec<i64>>,
    _tensors: Vec<AceTensor>,
    _outputs: Vec<AceGraphOutput>,
    _release: Vec<*const c_char>,
    call: AceGraphCall,
}

/// One generation (see `ace_generation_create`). Not thread-safe: use it from one thread at a
/// time. Any number of generations may run at once, on the same package or on others.
pub struct AceGeneration {
    inner: Generation,
    view: Option<Box<CallView>>,
}

fn dtype_code(d: DType) -> i32 {
    d as i32
}

fn dtype_from(code: i32, name: &str) -> Result<DType> {
    match code {
        ACE_DTYPE_FLOAT32 => Ok(DType::F32),
        ACE_DTYPE_INT64 => Ok(DType::I64),
        other => Err(Error::invalid_argument(format!(
            "submit: output {name:?} has dtype {other}; expected ACE_DTYPE_FLOAT32 ({ACE_DTYPE_FLOAT32}) or \
             ACE_DTYPE_INT64 ({ACE_DTYPE_INT64})"
        ))),
    }
}

fn cstring(s: &str) -> CString {
    // Names are the core's own identifiers: they never contain NUL.
    CString::new(s).unwrap_or_default()
}

impl CallView {
    fn new(generation: &Generation, call: &Call) -> Box<Self> {
        let mut strings = Vec::new();
        let mut keep = |s: &str| -> *const c_char {
            let c = cstring(s);
            let p = c.as_ptr();
            strings.push(c);
            p
        };
        let shapes: Vec<Vec<i64>> = call.inputs.iter().map(|i| i.shape.clone()).collect();
        let tensors: Vec<AceTensor> = call
            .inputs
            .iter()
            .zip(&shapes)
            .map(|(input, shape)| {
                let (data, byte_len, host_key) = match input.source {
                    Source::Core(buffer) => {
                        let bytes = generation.buffer(buffer);
                        (bytes.as_ptr() as *const c_void, bytes.len(), std::ptr::null())
                    }
                    Source::Host(key) => (std::ptr::null(), 0, keep(key)),
                };
                AceTensor {
                    name: keep(input.name),
                    dtype: dtype_code(input.dtype),
                    shape: shape.as_ptr(),
                    rank: shape.len(),
                    data,
                    byte_len,
                    host_key,
                }
            })
            .collect();
        let outputs: Vec<AceGraphOutput> = call
            .outputs
            .iter()
            .map(|o| AceGraphOutput { name: keep(o.name), keep_as: o.keep_as.map_or(std::ptr::null(), &mut keep) })
            .collect();
        let release: Vec<*const c_char> = call.release.iter().map(|k| keep(k)).collect();
        let component = keep(call.component);
        let stage = keep(call.stage.name());
        let call = AceGraphCall {
            component,
            inputs: tensors.as_ptr(),
            num_inputs: tensors.len(),
            outputs: outputs.as_ptr(),
            num_outputs: outputs.len(),
            release: release.as_ptr(),
            num_release: release.len(),
            stage,
            stage_done: call.stage_done as u32,
            stage_total: call.stage_total as u32,
        };
        Box::new(Self { _strings: strings, _shapes: shapes, _tensors: tensors, _outputs: outputs, _release: release, call })
    }
}

/// Creates a generation of `request_json` (a request as `ace_request_normalize` takes it) on
/// `pkg` and writes it to `*out`; free it with `ace_generation_free`. Everything that can be
/// decided before running a graph is decided and checked here: the normalised request, seeds
/// (missing batch items continue from the last given seed + 1; none given → a random first seed),
/// the latent length, prompts and tokens, the schedule, and that the package has every graph with
/// the expected inputs (`ace_generation_info_json` reports it all, track ids included).
///
/// Errors: as `ace_request_normalize`; `ACE_STATUS_INVALID_ARGUMENT` when the package lacks a
/// component this run needs or its inputs differ from what the core feeds.
///
/// # Safety
/// `pkg` a live handle; `request_json` a NUL-terminated string; `out` a valid `AceGeneration *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_generation_create(
    pkg: *const AcePackage,
    request_json: *const c_char,
    out: *mut *mut AceGeneration,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let p = ptr::handle_ref(pkg, "pkg")?;
        let text = ptr::str_in(request_json, "request_json")?;
        let inner = Generation::new(Arc::clone(&p.inner), text)?;
        ptr::handle_out(out, AceGeneration { inner, view: None }, "out")
    })
}

/// Frees a generation. Null is a no-op. Freeing before the end cancels it: the core wrote
/// nothing anywhere, and the host drops the values it kept.
///
/// # Safety
/// `generation` null or a handle from `ace_generation_create` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ace_generation_free(generation: *mut AceGeneration) -> AceStatus {
    guard(|| {
        ptr::handle_free(generation);
        Ok(())
    })
}

/// Writes the generation's plan as JSON to `*out` (free with `ace_string_free`): the resolved
/// request (pass it back to reproduce the run), notes about ignored or adjusted values, seeds,
/// frames, samples, schedule, the components it will run, and each item's track id.
///
/// # Safety
/// `generation` a live handle; `out` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_generation_info_json(generation: *const AceGeneration, out: *mut *mut c_char) -> AceStatus {
    guard(|| {
        let g = ptr::handle_ref(generation, "generation")?;
        ptr::string_out(out, g.inner.info_json()?.to_string(), "out")
    })
}

/// Writes the next graph run to `*out_call`, or NULL when the generation has finished (then read
/// the results). Calling it again before submitting returns the same call; calling it again after
/// it returned NULL is `ACE_STATUS_INVALID_STATE`.
///
/// # Safety
/// `generation` a live handle; `out_call` a valid `const AceGraphCall *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_generation_next(
    generation: *mut AceGeneration,
    out_call: *mut *const AceGraphCall,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_call, "out_call")?;
        let g = ptr::handle_mut(generation, "generation")?;
        g.view = None;
        let call = match g.inner.next()? {
            None => std::ptr::null(),
            Some(call) => {
                let view = CallView::new(&g.inner, &call);
                let p: *const AceGraphCall = &view.call;
                g.view = Some(view);
                p
            }
        };
        ptr::write_out(out_call, call, "out_call")
    })
}

/// Hands back the outputs of the pending call: every output of the call whose `keep_as` is NULL,
/// by name, once (`host_key` is ignored). The core reads them during this call only, so the
/// host may reuse their memory afterwards. They may point into the pending call (its output
/// names, an input's shape array): the call is released only when this function returns.
///
/// Errors (nothing changes; correct and submit again): `ACE_STATUS_INVALID_ARGUMENT` for a
/// missing, unexpected, duplicated or host-kept output name, a wrong dtype or shape, or
/// non-finite values (the message names the component and the output); `ACE_STATUS_LENGTH_MISMATCH`
/// when `byte_len` does not match the shape; `ACE_STATUS_INVALID_STATE` when no call is pending.
///
/// # Safety
/// `generation` a live handle; `outputs` `num_outputs` valid `AceTensor`s whose `name` strings,
/// `shape` arrays (`rank` values) and `data` (`byte_len` bytes) are valid for the call.
#[no_mangle]
pub unsafe extern "C" fn ace_generation_submit(
    generation: *mut AceGeneration,
    outputs: *const AceTensor,
    num_outputs: usize,
) -> AceStatus {
    guard(|| {
        let g = ptr::handle_mut(generation, "generation")?;
        let tensors: &[AceTensor] = if num_outputs == 0 { &[] } else { ptr::slice_in(outputs, num_outputs, "outputs")? };
        let mut submitted = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let name = ptr::str_in(t.name, &format!("outputs[{i}].name"))?;
            let dtype = dtype_from(t.dtype, name)?;
            let shape: &[i64] = if t.rank == 0 { &[] } else { ptr::slice_in(t.shape, t.rank, &format!("outputs[{i}].shape"))? };
            let data: &[u8] = if t.byte_len == 0 {
                &[]
            } else {
                ptr::slice_in(t.data as *const u8, t.byte_len, &format!("outputs[{i}].data"))?
            };
            submitted.push(Submitted { name, dtype, shape, data });
        }
        // The host may pass the call's own strings and arrays (an output name, an input's shape):
        // the call stays alive until the submit is done.
        let result = g.inner.submit(&submitted);
        g.view = None;
        result
    })
}

/// Writes a pointer to the finished audio (float32 [batch, channels, samples], peak-guarded)
/// to `*out_data` and its shape to `out_shape[0..3]`. The memory is owned by the generation and
/// valid until `ace_generation_free`. `ACE_STATUS_INVALID_STATE` before the generation finished.
///
/// # Safety
/// `generation` a live handle; `out_data` a valid `const float *` slot; `out_shape` 3 writable
/// `size_t`s.
#[no_mangle]
pub unsafe extern "C" fn ace_generation_result_audio(
    generation: *const AceGeneration,
    out_data: *mut *const f32,
    out_shape: *mut usize,
) -> AceStatus {
    guard(|| result_out(generation, out_data, out_shape, Generation::audio))
}

/// Like `ace_generation_result_audio`, for the final latents: float32 [batch, frames, 64] for
/// ACE-Step 1.5; [batch, 128, frames] for v1 (its [batch, 8, 16, frames] latents, same memory).
///
/// # Safety
/// As `ace_generation_result_audio`.
#[no_mangle]
pub unsafe extern "C" fn ace_generation_result_latents(
    generation: *const AceGeneration,
    out_data: *mut *const f32,
    out_shape: *mut usize,
) -> AceStatus {
    guard(|| result_out(generation, out_data, out_shape, Generation::latents))
}

/// Writes one of the generation's result arrays: its data pointer and its 3-d shape.
unsafe fn result_out(
    generation: *const AceGeneration,
    out_data: *mut *const f32,
    out_shape: *mut usize,
    get: fn(&Generation) -> Result<(&[f32], [usize; 3])>,
) -> Result<()> {
    let g = ptr::handle_ref(generation, "generation")?;
    ptr::ensure_out(out_data, "out_data")?;
    let shape_out = ptr::slice_out(out_shape, 3, "out_shape")?;
    let (data, shape) = get(&g.inner)?;
    shape_out.copy_from_slice(&shape);
    ptr::write_out(out_data, data.as_ptr(), "out_data")
}

/// Writes the sidecar JSON of batch item `item` to `*out` (free with `ace_string_free`): track
/// id, seed, audio shape, the resolved request of that item alone (passing it back as a request
/// reproduces the item), notes, the track-id parameters, schedule, peak before the guard, model
/// and core versions, and under `"host"` the JSON object `host_json` (null → `{}`), where a host
/// records file, format, ONNX Runtime version, execution providers and timings.
/// `ACE_STATUS_INVALID_STATE` before the generation finished.
///
/// # Safety
/// `generation` a live handle; `host_json` null or a NUL-terminated string; `out` a valid
/// `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_generation_sidecar_json(
    generation: *const AceGeneration,
    item: usize,
    host_json: *const c_char,
    out: *mut *mut c_char,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let g = ptr::handle_ref(generation, "generation")?;
        let host = match ptr::opt_str_in(host_json, "host_json")? {
            None => serde_json::json!({}),
            Some(text) => serde_json::Value::Object(crate::json::parse_object(text, "host_json")?),
        };
        if item >= g.inner.batch() {
            return Err(Error::invalid_argument(format!(
                "item {item} is out of range: the batch has {} items",
                g.inner.batch()
            )));
        }
        ptr::string_out(out, g.inner.sidecar_json(item, host)?.to_string(), "out")
    })
}
