//! C ABI of the scheduling context (`crate::context`): the seed plan's entry points
//! `ace_create_context`, `ace_free_context`, `ace_prepare_step_inputs`, `ace_scheduler_step`.

use std::ffi::c_char;

use super::guard::guard;
use super::ptr;
use super::AceStatus;
use crate::context::SchedulerContext;
use crate::error::{Error, Result};

/// Opaque scheduling context: a resolved timestep schedule plus update rule. Created by
/// `ace_create_context`, freed by `ace_free_context`. Immutable after creation: every call only
/// reads it, so one context may be used from several threads at once.
pub struct AceContext {
    inner: SchedulerContext,
}

/// Creates a context from a UTF-8 JSON object:
/// `{"model": "turbo"|"base"|"sft", "shift": 3.0, "steps": N, "timesteps": [...],
///   "method": "ode"|"sde", "bf16_timesteps": false, "seeds": [...], "noise": {...}}`.
/// Cover tasks may add "cover_noise_strength" (0..1: start at the schedule entry nearest 1 − strength,
/// see `ace_context_initial_latents`) and "audio_cover_strength" (default 1: steps i <
/// int(N·strength) use the cover condition; see "cover_condition" in `ace_prepare_step_inputs`).
/// Only "model" is required (plus "steps" for base/sft). Turbo ignores "steps" and snaps "shift"
/// to 1, 2 or 3 (default 3); "timesteps" (turbo only) follows the official custom rules. Base/SFT
/// shift defaults to 1. "seeds" (one per batch item) feed the SDE noise (step i of item b uses
/// seed s_b + i + 1). Adjustments and ignored keys are listed in `ace_context_info`'s "notes".
///
/// Errors: invalid JSON, unknown keys, wrong types (INVALID_JSON); bad values such as shift ≤ 0,
/// steps = 0, timesteps outside [0, 1] (INVALID_ARGUMENT); null pointers.
///
/// # Safety
/// `config_json` must be a NUL-terminated string; `out` a writable `AceContext *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_create_context(
    config_json: *const c_char,
    out: *mut *mut AceContext,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let json = ptr::str_in(config_json, "config_json")?;
        let inner = SchedulerContext::from_json(json)?;
        ptr::handle_out(out, AceContext { inner }, "out")
    })
}

/// Frees a context. Null is a no-op.
///
/// # Safety
/// `ctx` must be null or a live handle from `ace_create_context`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ace_free_context(ctx: *mut AceContext) {
    ptr::handle_free(ctx)
}

/// Writes the number of DiT steps of the schedule to `*out`.
///
/// # Safety
/// `ctx` must be a live handle; `out` a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_context_num_steps(
    ctx: *const AceContext,
    out: *mut usize,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        ptr::write_out(out, c.inner.num_steps(), "out")
    })
}

/// Writes the schedule (the t of each step as the model sees it: f32, or bf16 values when
/// "bf16_timesteps") into `out`; `len` must equal `ace_context_num_steps`.
///
/// # Safety
/// `ctx` must be a live handle; `out` must point to `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_context_timesteps(
    ctx: *const AceContext,
    out: *mut f32,
    len: usize,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        let t = c.inner.timesteps_f32();
        ptr::ensure_len(len, t.len(), "out")?;
        ptr::slice_out(out, len, "out")?.copy_from_slice(&t);
        Ok(())
    })
}

/// Writes the resolved configuration as JSON to `*out_json` (free with `ace_string_free`):
/// model, method, shift_requested, shift_used, num_steps, timesteps, timesteps_exact,
/// bf16_timesteps, seeds, noise, notes.
///
/// # Safety
/// `ctx` must be a live handle; `out_json` a writable `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_context_info(
    ctx: *const AceContext,
    out_json: *mut *mut c_char,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        ptr::string_out(out_json, c.inner.info_json(), "out_json")
    })
}

/// Writes the DiT timestep input of step `step_index` (feed it as both `timestep` and
/// `timestep_r`) to `*out`. The scalar form of `ace_prepare_step_inputs` for the hot path.
///
/// Errors: step_index ≥ num_steps (INVALID_ARGUMENT); null pointers.
///
/// # Safety
/// `ctx` must be a live handle; `out` a writable float.
#[no_mangle]
pub unsafe extern "C" fn ace_context_timestep_input(
    ctx: *const AceContext,
    step_index: usize,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        ptr::ensure_out(out, "out")?;
        let s = c.inner.step_inputs(step_index)?;
        ptr::write_out(out, s.timestep_input, "out")
    })
}

/// Writes what step `step_index` needs and does, as JSON (free with `ace_string_free`):
/// `{"step", "num_steps", "t", "t_next", "dt", "is_last", "timestep_input", "cover_condition",
/// "update"}` where
/// "update" is "ode", "sde" or "x0" (last step); SDE steps add "renoise_t" and "noise_seeds".
///
/// Errors: step_index ≥ num_steps (INVALID_ARGUMENT); null pointers.
///
/// # Safety
/// `ctx` must be a live handle; `out_json` a writable `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_prepare_step_inputs(
    ctx: *const AceContext,
    step_index: usize,
    out_json: *mut *mut c_char,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        ptr::ensure_out(out_json, "out_json")?;
        ptr::string_out(out_json, c.inner.step_inputs_json(step_index)?, "out_json")
    })
}

/// Writes the starting latents [B, T, C] to `out`: a copy of `noise`, or, when the context has
/// "cover_noise_strength" > 0, t*·noise + (1 − t*)·src with t* the schedule entry the run starts
/// at (the reference's cover start). `src` (the source latents, same shape) may be NULL when cover
/// noise is off. `out` must not overlap the inputs.
///
/// Errors: as `ace_scheduler_step` for shapes and lengths; NaN/Inf in noise or src; src NULL with
/// cover noise on (INVALID_ARGUMENT).
///
/// # Safety
/// `ctx` a live handle; `shape` `ndim` size_t values; `noise` (and `src` unless NULL) `len`
/// floats; `out` `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_context_initial_latents(
    ctx: *const AceContext,
    noise: *const f32,
    src: *const f32,
    shape: *const usize,
    ndim: usize,
    out: *mut f32,
    len: usize,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        let shape = shape_in(shape, ndim)?;
        let numel = crate::shape::numel(shape, "shape")?;
        ptr::ensure_len(len, numel, "noise")?;
        let n = ptr::slice_in(noise, len, "noise")?;
        let s = ptr::opt_slice_in(src, len, "src")?;
        let o = ptr::slice_out(out, len, "out")?;
        ptr::ensure_disjoint(n, "noise", o, "out")?;
        if let Some(s) = s {
            ptr::ensure_disjoint(s, "src", o, "out")?;
        }
        c.inner.initial_latents(n, s, shape, o)
    })
}

unsafe fn shape_in<'a>(shape: *const usize, ndim: usize) -> Result<&'a [usize]> {
    if ndim != 3 {
        return Err(Error::invalid_argument(format!(
            "ndim must be 3 (latents are [B, T, C]), got {ndim}"
        )));
    }
    ptr::slice_in(shape, ndim, "shape")
}

/// Checks `len` against the shape before any buffer is touched.
fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let numel = crate::shape::numel(shape, "shape")?;
    ptr::ensure_len(len, numel, "xt")
}

/// Applies step `step_index` to the latents `xt` [B, T, C] (= `shape`, `ndim` = 3) with the DiT
/// velocity `vt` (same shape) and writes the result to `out_xt`: on the last step x0 = xt − vt·t;
/// otherwise the ODE step xt − vt·dt, or the SDE step t_next·ε + (1 − t_next)·(xt − vt·t) with ε
/// drawn per batch item from seed s_b + step_index + 1. All three buffers hold `len` floats;
/// `out_xt` must not overlap `xt` or `vt` (use `ace_scheduler_step_inplace` to update in place).
///
/// Errors: step_index out of range, NaN/Inf in xt or vt, ndim ≠ 3 (INVALID_ARGUMENT); len ≠
/// product of shape or a zero dimension (LENGTH_MISMATCH); SDE without seeds (INVALID_STATE) or
/// with a seed count ≠ B (INVALID_ARGUMENT); null pointers. On error `out_xt` is unspecified.
///
/// # Safety
/// `ctx` a live handle; `shape` `ndim` size_t values; `xt`, `vt` `len` floats; `out_xt` `len`
/// writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_scheduler_step(
    ctx: *const AceContext,
    step_index: usize,
    xt: *const f32,
    vt: *const f32,
    shape: *const usize,
    ndim: usize,
    out_xt: *mut f32,
    len: usize,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        let shape = shape_in(shape, ndim)?;
        check_len(shape, len)?;
        let x = ptr::slice_in(xt, len, "xt")?;
        let v = ptr::slice_in(vt, len, "vt")?;
        let o = ptr::slice_out(out_xt, len, "out_xt")?;
        ptr::ensure_disjoint(x, "xt", o, "out_xt")?;
        ptr::ensure_disjoint(v, "vt", o, "out_xt")?;
        c.inner.step(step_index, x, v, shape, o)
    })
}

/// `ace_scheduler_step` updating `xt` in place (`xt` is in/out; `vt` must not overlap it). On
/// error `xt` is left unchanged.
///
/// # Safety
/// As `ace_scheduler_step`, with `xt` pointing to `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_scheduler_step_inplace(
    ctx: *const AceContext,
    step_index: usize,
    xt: *mut f32,
    vt: *const f32,
    shape: *const usize,
    ndim: usize,
    len: usize,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        let shape = shape_in(shape, ndim)?;
        check_len(shape, len)?;
        let x = ptr::slice_out(xt, len, "xt")?;
        let v = ptr::slice_in(vt, len, "vt")?;
        ptr::ensure_disjoint(v, "vt", x, "xt")?;
        let mut result = vec![0.0f32; len];
        c.inner.step(step_index, x, v, shape, &mut result)?;
        x.copy_from_slice(&result);
        Ok(())
    })
}

/// `ace_scheduler_step` with the caller's noise: `eps` (`len` floats, same shape) is used as ε on
/// SDE steps instead of the seeded draw (e.g. to replay a reference's noise). It is checked but
/// unused on ODE and final steps. No buffer may overlap `out_xt`.
///
/// # Safety
/// As `ace_scheduler_step`, with `eps` pointing to `len` floats.
#[no_mangle]
pub unsafe extern "C" fn ace_scheduler_step_with_noise(
    ctx: *const AceContext,
    step_index: usize,
    xt: *const f32,
    vt: *const f32,
    eps: *const f32,
    shape: *const usize,
    ndim: usize,
    out_xt: *mut f32,
    len: usize,
) -> AceStatus {
    guard(|| {
        let c = ptr::handle_ref(ctx, "ctx")?;
        let shape = shape_in(shape, ndim)?;
        check_len(shape, len)?;
        let x = ptr::slice_in(xt, len, "xt")?;
        let v = ptr::slice_in(vt, len, "vt")?;
        let e = ptr::slice_in(eps, len, "eps")?;
        let o = ptr::slice_out(out_xt, len, "out_xt")?;
        ptr::ensure_disjoint(x, "xt", o, "out_xt")?;
        ptr::ensure_disjoint(v, "vt", o, "out_xt")?;
        ptr::ensure_disjoint(e, "eps", o, "out_xt")?;
        c.inner.step_with_noise(step_index, x, v, e, shape, o)
    })
}
