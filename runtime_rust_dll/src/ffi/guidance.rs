//! C ABI of [`crate::guidance`]: CFG, APG (stateful object), CFG-Zero*, guidance-interval rules.

use std::ffi::c_char;

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
use crate::guidance::{self, Apg, ApgConfig, Shape};

/// Opaque APG object: settings plus the momentum buffer of one generate call.
pub struct AceApg {
    inner: Apg,
}

/// Borrows the three guidance buffers of `len` floats each; `out` must not overlap the inputs.
unsafe fn buffers<'a>(
    cond: *const f32,
    uncond: *const f32,
    out: *mut f32,
    len: usize,
) -> crate::Result<(&'a [f32], &'a [f32], &'a mut [f32])> {
    let cond = ptr::slice_in(cond, len, "cond")?;
    let uncond = ptr::slice_in(uncond, len, "uncond")?;
    let out = ptr::slice_out(out, len, "out")?;
    ptr::ensure_disjoint(cond, "cond", out, "out")?;
    ptr::ensure_disjoint(uncond, "uncond", out, "out")?;
    Ok((cond, uncond, out))
}

/// Plain CFG: `out[i] = uncond[i] + guidance_scale·(cond[i] − uncond[i])`, float32 arithmetic.
///
/// `cond`, `uncond` and `out` each hold `len` floats (`len > 0`); `out` must not overlap the inputs.
/// Errors: null pointer, `len == 0`, non-finite `guidance_scale`, non-finite inputs (or a result that
/// overflows float32), overlapping buffers; on error `out` is unspecified. Thread-safe (no state).
///
/// # Safety
/// Each pointer must be valid for `len` floats.
#[no_mangle]
pub unsafe extern "C" fn ace_guidance_cfg(
    cond: *const f32,
    uncond: *const f32,
    out: *mut f32,
    len: usize,
    guidance_scale: f64,
) -> AceStatus {
    guard(|| {
        let (cond, uncond, out) = buffers(cond, uncond, out, len)?;
        guidance::cfg(cond, uncond, out, guidance_scale)
    })
}

/// CFG-Zero* (ACE-Step v1): per batch item, `alpha = <cond, uncond> / (||uncond||² + 1e-8)` over all
/// of the item's `len / batch` values, then `out = uncond·alpha + g·(cond − uncond·alpha)`. If
/// `use_zero_init` and `step <= zero_steps`, `out` is all zeros instead (official rule; the
/// official default `zero_steps = 1` zeroes steps 0 and 1).
///
/// `len` must be a positive multiple of `batch`. Errors as for `ace_guidance_cfg`. Thread-safe.
///
/// # Safety
/// Each pointer must be valid for `len` floats.
#[no_mangle]
pub unsafe extern "C" fn ace_guidance_cfg_zero_star(
    cond: *const f32,
    uncond: *const f32,
    out: *mut f32,
    len: usize,
    batch: u32,
    guidance_scale: f64,
    step: u32,
    zero_steps: u32,
    use_zero_init: bool,
) -> AceStatus {
    guard(|| {
        let (cond, uncond, out) = buffers(cond, uncond, out, len)?;
        guidance::cfg_zero_star(
            cond,
            uncond,
            out,
            batch as usize,
            guidance_scale,
            step,
            zero_steps,
            use_zero_init,
        )
    })
}

/// Base/SFT cfg-interval rule: `*out = cfg_interval_start <= t <= cfg_interval_end` (both ends
/// inclusive, compared in float32 like torch). Official defaults: start 0, end 1. When false, the
/// host uses `v = v_cond` for that step (and does not call APG, so its momentum is not advanced).
///
/// Errors: non-finite arguments, null `out`. Thread-safe.
///
/// # Safety
/// `out` must be valid for one `bool`.
#[no_mangle]
pub unsafe extern "C" fn ace_guidance_cfg_interval_active(
    t: f32,
    cfg_interval_start: f32,
    cfg_interval_end: f32,
    out: *mut bool,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let active = guidance::cfg_interval_active(t, cfg_interval_start, cfg_interval_end)?;
        ptr::write_out(out, active, "out")
    })
}

/// ACE-Step v1 guidance interval: guidance runs on steps `*start_step <= i < *end_step`, with
/// `start = int(N·(1 − gi)/2)` and `end = int(N·(gi/2 + 0.5))` (float64, truncated). The official
/// default `guidance_interval = 0.5` gives `[int(0.25·N), int(0.75·N))`.
///
/// Errors: `num_steps == 0`, `guidance_interval` outside [0, 1] or NaN, null outputs. Thread-safe.
///
/// # Safety
/// `start_step` and `end_step` must each be valid for one `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_guidance_v1_interval(
    num_steps: u32,
    guidance_interval: f64,
    start_step: *mut u32,
    end_step: *mut u32,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(start_step, "start_step")?;
        ptr::ensure_out(end_step, "end_step")?;
        let (start, end) = guidance::v1_guidance_interval(num_steps, guidance_interval)?;
        ptr::write_out(start_step, start, "start_step")?;
        ptr::write_out(end_step, end, "end_step")
    })
}

/// Whether ACE-Step v1 applies guidance at 0-based `step` of `num_steps` (see
/// `ace_guidance_v1_interval`). Errors: `step >= num_steps`, and those of `ace_guidance_v1_interval`.
///
/// # Safety
/// `out` must be valid for one `bool`.
#[no_mangle]
pub unsafe extern "C" fn ace_guidance_v1_step_active(
    step: u32,
    num_steps: u32,
    guidance_interval: f64,
    out: *mut bool,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let active = guidance::v1_step_active(step, num_steps, guidance_interval)?;
        ptr::write_out(out, active, "out")
    })
}

/// Creates an APG object. `config_json` is a UTF-8 JSON object with optional keys `momentum`
/// (default -0.75), `norm_threshold` (2.5; `<= 0` disables the clip) and `eta` (0); pass `"{}"` for
/// the official defaults. Unknown keys, non-numbers and non-finite values are errors. Free the
/// object with `ace_apg_free`.
///
/// One object serves one generate call (one momentum buffer shared across the batch, as in the
/// official code). It may move between threads but must be used by one thread at a time.
///
/// # Safety
/// `config_json` must be a NUL-terminated string; `out` valid for one `AceApg *`.
#[no_mangle]
pub unsafe extern "C" fn ace_apg_create(config_json: *const c_char, out: *mut *mut AceApg) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let text = ptr::str_in(config_json, "config_json")?;
        let config = ApgConfig::from_json(text)?;
        ptr::handle_out(out, AceApg { inner: Apg::new(config)? }, "out")
    })
}

/// Applies APG to one step's predictions, all float32 `[batch, frames, channels]` (channels
/// fastest), each buffer holding `len == batch·frames·channels` floats:
/// `d = cond − uncond`; `running = d + momentum·running` (zero before the first call, so the first
/// call stores `d`); per (b, c) over frames: `d = running·min(1, norm_threshold/||running||)`;
/// project onto `cond` normalised per (b, c) in float64: `d_par`, `d_orth = d − d_par`;
/// `out = cond + (guidance_scale − 1)·(d_orth + eta·d_par)`.
///
/// The first call fixes the shape; a call with another shape fails with
/// `ACE_STATUS_INVALID_STATE` until `ace_apg_reset`. On any error the momentum state is unchanged.
/// ACE-Step v1 latents `[B, 8, 16, L]` (norm over the last two axes) map to
/// `batch = 8·B, frames = 16·L, channels = 1`.
///
/// # Safety
/// `apg` must come from `ace_apg_create`; buffers must be valid for `len` floats; `out` must not
/// overlap `cond` or `uncond`.
#[no_mangle]
pub unsafe extern "C" fn ace_apg_apply(
    apg: *mut AceApg,
    cond: *const f32,
    uncond: *const f32,
    out: *mut f32,
    len: usize,
    batch: u32,
    frames: u32,
    channels: u32,
    guidance_scale: f64,
) -> AceStatus {
    guard(|| {
        let apg = ptr::handle_mut(apg, "apg")?;
        let shape = Shape::new(batch as usize, frames as usize, channels as usize)?;
        ptr::ensure_len(len, shape.numel(), "len")?;
        let (cond, uncond, out) = buffers(cond, uncond, out, len)?;
        apg.inner.apply(cond, uncond, out, shape, guidance_scale)
    })
}

/// Clears the momentum buffer and the fixed shape, as if the object were new (same settings).
///
/// # Safety
/// `apg` must come from `ace_apg_create`.
#[no_mangle]
pub unsafe extern "C" fn ace_apg_reset(apg: *mut AceApg) -> AceStatus {
    guard(|| {
        ptr::handle_mut(apg, "apg")?.inner.reset();
        Ok(())
    })
}

/// Number of successful `ace_apg_apply` calls since creation or the last reset.
///
/// # Safety
/// `apg` must come from `ace_apg_create`; `out` valid for one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_apg_calls(apg: *const AceApg, out: *mut u64) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let calls = ptr::handle_ref(apg, "apg")?.inner.calls();
        ptr::write_out(out, calls, "out")
    })
}

/// Frees an APG object. Null is a no-op.
///
/// # Safety
/// `apg` must be null or come from `ace_apg_create` and not be freed yet.
#[no_mangle]
pub unsafe extern "C" fn ace_apg_free(apg: *mut AceApg) {
    ptr::handle_free(apg);
}

/// ACE-Step v1 double-condition guidance: `out = (1 − g_text)·uncond + (g_text − g_lyric)·text_only
/// + g_lyric·cond`, float32 (coefficients formed in double), where `text_only` is the decode with
/// the text-only condition. v1 uses it instead of APG/CFG on guided steps when both scales exceed 1
/// (`ace_guidance_v1_call` does not decide this; see docs/dll_api.md).
///
/// All four buffers hold `len > 0` floats; `out` must not overlap the inputs. Errors as for
/// `ace_guidance_cfg`. Thread-safe.
///
/// # Safety
/// Each pointer must be valid for `len` floats.
#[no_mangle]
pub unsafe extern "C" fn ace_guidance_double_condition(
    cond: *const f32,
    text_only: *const f32,
    uncond: *const f32,
    out: *mut f32,
    len: usize,
    guidance_scale_text: f64,
    guidance_scale_lyric: f64,
) -> AceStatus {
    guard(|| {
        let (cond, uncond, out) = buffers(cond, uncond, out, len)?;
        let text_only = ptr::slice_in(text_only, len, "text_only")?;
        ptr::ensure_disjoint(text_only, "text_only", out, "out")?;
        guidance::cfg_double_condition(
            cond,
            text_only,
            uncond,
            out,
            guidance_scale_text,
            guidance_scale_lyric,
        )
    })
}

/// The guidance of ACE-Step v1 model call `call` (the official loop index, 0-based): writes
/// whether it is guided to `*out_active` and its scale to `*out_scale` (0 when not guided).
///
/// The interval `[start, end)` comes from `num_steps` = N as in `ace_guidance_v1_interval`, for
/// every sampler: Heun makes 2N − 1 calls and only calls `start <= call < end` are guided (the
/// official quirk). Not guided at all when `guidance_scale` is 0 or 1. With
/// `guidance_interval_decay > 0` the scale decays over the interval:
/// `g − (g − min_guidance_scale)·((call − start)/(end − start − 1))·decay` (official defaults:
/// decay 0, min 3).
///
/// Errors: `call >= 2·num_steps − 1`, a decay with a one-step interval, non-finite scalars, and
/// those of `ace_guidance_v1_interval`. Thread-safe.
///
/// # Safety
/// `out_active` valid for one `bool`, `out_scale` for one `double`.
#[no_mangle]
pub unsafe extern "C" fn ace_guidance_v1_call(
    call: u32,
    num_steps: u32,
    guidance_interval: f64,
    guidance_scale: f64,
    min_guidance_scale: f64,
    guidance_interval_decay: f64,
    out_active: *mut bool,
    out_scale: *mut f64,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_active, "out_active")?;
        ptr::ensure_out(out_scale, "out_scale")?;
        let g = guidance::v1_call_guidance(
            call,
            num_steps,
            guidance_interval,
            guidance_scale,
            min_guidance_scale,
            guidance_interval_decay,
        )?;
        ptr::write_out(out_active, g.active, "out_active")?;
        ptr::write_out(out_scale, g.guidance_scale, "out_scale")
    })
}
