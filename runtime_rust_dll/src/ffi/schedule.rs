//! C ABI of the timestep schedules (`crate::schedule`). Results are f32 arrays written into a
//! caller buffer of `out_capacity` elements; the number written goes to `*out_len`.

use super::guard::guard;
use super::ptr;
use super::AceStatus;
use crate::error::{Error, Result};
use crate::schedule;

/// Writes `values` (as f32) into a caller buffer, failing if it is too small.
unsafe fn write_schedule(
    values: &[f64],
    out: *mut f32,
    out_capacity: usize,
    out_len: *mut usize,
) -> Result<()> {
    ptr::ensure_out(out_len, "out_len")?;
    if out_capacity < values.len() {
        return Err(Error::length_mismatch(format!(
            "out has capacity {out_capacity} but the schedule has {} entries",
            values.len()
        )));
    }
    // Only the entries written are borrowed: the capacity is the caller's claim, not ours to touch.
    let dst = ptr::slice_out(out, values.len(), "out")?;
    for (d, &v) in dst.iter_mut().zip(values) {
        *d = v as f32;
    }
    ptr::write_out(out_len, values.len(), "out_len")
}

/// The turbo shift a requested shift resolves to (nearest of 1, 2, 3; ties to the earlier:
/// 1.5 → 1, 2.5 → 2), written to `*out`.
///
/// Errors: `shift` ≤ 0 or not finite (INVALID_ARGUMENT); `out` null.
///
/// # Safety
/// `out` must be null or point to a writable `double`.
#[no_mangle]
pub unsafe extern "C" fn ace_schedule_turbo_shift(shift: f64, out: *mut f64) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        ptr::write_out(out, schedule::nearest_turbo_shift(shift)?, "out")
    })
}

/// The 8-entry turbo schedule of the nearest turbo shift (s·t/(1+(s−1)t), t = 1 − i/8); the
/// terminal 0 is implicit. Needs `out_capacity` ≥ 8.
///
/// Errors: `shift` ≤ 0 or not finite; capacity too small (LENGTH_MISMATCH); null pointers.
///
/// # Safety
/// `out` must point to `out_capacity` writable floats; `out_len` to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_schedule_turbo(
    shift: f64,
    out: *mut f32,
    out_capacity: usize,
    out_len: *mut usize,
) -> AceStatus {
    guard(|| write_schedule(&schedule::turbo_schedule(shift)?, out, out_capacity, out_len))
}

/// A turbo schedule from custom timesteps (spec §4.1): trailing exact zeros dropped; nothing
/// left → the shift schedule of `fallback_shift`; first 20 kept; each snapped to the nearest of
/// the 20 valid turbo timesteps (ties to the earlier, larger one); no sorting or de-duplication.
/// At most 20 entries are written (8 for the fallback). `timesteps` may be null when `count` is 0.
///
/// Errors: a value that is NaN/Inf or outside [0, 1] (INVALID_ARGUMENT, naming its index);
/// `fallback_shift` ≤ 0; capacity too small; null pointers.
///
/// # Safety
/// `timesteps` must point to `count` doubles; `out` to `out_capacity` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_schedule_custom(
    timesteps: *const f64,
    count: usize,
    fallback_shift: f64,
    out: *mut f32,
    out_capacity: usize,
    out_len: *mut usize,
) -> AceStatus {
    guard(|| {
        let ts: &[f64] =
            if count == 0 { &[] } else { ptr::slice_in(timesteps, count, "timesteps")? };
        write_schedule(
            &schedule::custom_turbo_schedule(ts, fallback_shift)?,
            out,
            out_capacity,
            out_len,
        )
    })
}

/// The base/SFT schedule: linspace(1, 0, steps + 1), shifted by s·t/(1+(s−1)t) when shift ≠ 1;
/// writes the `steps` timesteps the DiT runs at (terminal 0 implicit).
///
/// Errors: `steps` = 0; `shift` ≤ 0 or not finite; capacity < steps; null pointers.
///
/// # Safety
/// `out` must point to `out_capacity` writable floats; `out_len` to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_schedule_base(
    steps: usize,
    shift: f64,
    out: *mut f32,
    out_capacity: usize,
    out_len: *mut usize,
) -> AceStatus {
    guard(|| write_schedule(&schedule::base_schedule(steps, shift)?, out, out_capacity, out_len))
}

/// The ACE-Step v1 σ grid: linspace(σ_max, σ_min, steps), shifted, then a final 0 appended;
/// writes steps + 1 values. The model timestep of step i is 1000·σ_i.
///
/// Errors: `steps` = 0; `shift` ≤ 0; σ outside [0, 1] or σ_min > σ_max; capacity < steps + 1.
///
/// # Safety
/// `out` must point to `out_capacity` writable floats; `out_len` to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_schedule_v1_sigmas(
    steps: usize,
    shift: f64,
    sigma_max: f64,
    sigma_min: f64,
    out: *mut f32,
    out_capacity: usize,
    out_len: *mut usize,
) -> AceStatus {
    guard(|| {
        write_schedule(
            &schedule::v1_sigmas(steps, shift, sigma_max, sigma_min)?,
            out,
            out_capacity,
            out_len,
        )
    })
}

/// The v1 schedulers' default σ_min for `shift`: shift(1/1000), computed in float32 as their
/// constructor does. (Their default σ_max is 1.)
///
/// # Safety
/// `out` must be null or point to a writable `double`.
#[no_mangle]
pub unsafe extern "C" fn ace_schedule_v1_default_sigma_min(shift: f64, out: *mut f64) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        ptr::write_out(out, schedule::v1_default_sigma_min(shift)?, "out")
    })
}

/// Rounds each float to the nearest bfloat16 (ties to even), as a cast to `torch.bfloat16` does;
/// NaN stays NaN. `values` and `out` must not overlap.
///
/// Errors: null pointers; `len` = 0 (LENGTH_MISMATCH); overlapping buffers.
///
/// # Safety
/// `values` must point to `len` floats and `out` to `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_bf16_round(
    values: *const f32,
    out: *mut f32,
    len: usize,
) -> AceStatus {
    guard(|| {
        if len == 0 {
            return Err(Error::length_mismatch("len is 0"));
        }
        let src = ptr::slice_in(values, len, "values")?;
        let dst = ptr::slice_out(out, len, "out")?;
        ptr::ensure_disjoint(src, "values", dst, "out")?;
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = schedule::round_bf16(s);
        }
        Ok(())
    })
}
