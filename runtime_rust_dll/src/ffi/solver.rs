//! C ABI of the solver steps (`crate::solver`). Every function takes flat float32 buffers of `len`
//! elements (any layout, e.g. [B, T, C] row-major) and writes a separate `out` buffer that must not
//! overlap the inputs. NaN/Inf in any input buffer or scalar is rejected (INVALID_ARGUMENT).

use std::ffi::{c_char, c_int};

use super::guard::guard;
use super::ptr;
use super::AceStatus;
use crate::error::{Error, Result};
use crate::noise::NoiseMode;
use crate::solver::{self, HeunSolver, HeunStage};

/// Opaque two-stage Heun solver (ACE-Step v1). Create with `ace_heun_create`, free with
/// `ace_heun_free`. One thread at a time.
pub struct AceHeun {
    inner: HeunSolver,
}

/// Borrows the common (x, v, out) triple after checking pointers, length and overlap.
unsafe fn xv_out<'a>(
    xt: *const f32,
    vt: *const f32,
    len: usize,
    out: *mut f32,
) -> Result<(&'a [f32], &'a [f32], &'a mut [f32])> {
    if len == 0 {
        return Err(Error::length_mismatch("len is 0"));
    }
    let x = ptr::slice_in(xt, len, "xt")?;
    let v = ptr::slice_in(vt, len, "vt")?;
    let o = ptr::slice_out(out, len, "out")?;
    ptr::ensure_disjoint(x, "xt", o, "out")?;
    ptr::ensure_disjoint(v, "vt", o, "out")?;
    Ok((x, v, o))
}

unsafe fn eps_in<'a>(eps: *const f32, len: usize, out: &[f32]) -> Result<&'a [f32]> {
    let e = ptr::slice_in(eps, len, "eps")?;
    ptr::ensure_disjoint(e, "eps", out, "out")?;
    Ok(e)
}

/// Flow-matching ODE (Euler) step: out = xt − vt·dt with dt = (float)(t − t_next).
///
/// # Safety
/// `xt`, `vt` must point to `len` floats; `out` to `len` writable floats not overlapping them.
#[no_mangle]
pub unsafe extern "C" fn ace_solver_ode_step(
    xt: *const f32,
    vt: *const f32,
    len: usize,
    t: f64,
    t_next: f64,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        let (x, v, o) = xv_out(xt, vt, len, out)?;
        solver::ode_step(x, v, t, t_next, o)
    })
}

/// Clean-sample estimate / final step: out = xt − vt·t.
///
/// # Safety
/// As `ace_solver_ode_step`.
#[no_mangle]
pub unsafe extern "C" fn ace_solver_x0(
    xt: *const f32,
    vt: *const f32,
    len: usize,
    t: f64,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        let (x, v, o) = xv_out(xt, vt, len, out)?;
        solver::x0_from_velocity(x, v, t, o)
    })
}

/// SDE step: x0 = xt − vt·t, then out = t_next·eps + (1 − t_next)·x0. `eps` (len floats) is the
/// caller's Gaussian noise.
///
/// # Safety
/// `xt`, `vt`, `eps` must point to `len` floats; `out` to `len` writable floats not overlapping them.
#[no_mangle]
pub unsafe extern "C" fn ace_solver_sde_step(
    xt: *const f32,
    vt: *const f32,
    eps: *const f32,
    len: usize,
    t: f64,
    t_next: f64,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        let (x, v, o) = xv_out(xt, vt, len, out)?;
        let e = eps_in(eps, len, o)?;
        solver::sde_step(x, v, t, t_next, e, o)
    })
}

/// The seeded noise of the `_seeded` steps: one fresh generator per batch item.
unsafe fn seeded_noise(
    seeds: *const u64,
    num_seeds: usize,
    noise_json: *const c_char,
    len: usize,
) -> Result<Vec<f32>> {
    if num_seeds == 0 {
        return Err(Error::length_mismatch("num_seeds is 0: give one seed per batch item"));
    }
    let seeds = ptr::slice_in(seeds, num_seeds, "seeds")?;
    let options = ptr::opt_str_in(noise_json, "noise_json")?;
    let mode = NoiseMode::from_json(options)?;
    solver::batch_noise(&mode, seeds, len)
}

/// `ace_solver_sde_step` with ε drawn by the library: the `len` floats are split into
/// `num_seeds` equal batch items, and item b's ε is `randn` from a fresh generator seeded with
/// `seeds[b]` in the mode of `noise_json` (the options of `ace_noise_fill`; NULL = torch CPU).
/// These are the seeds of this draw: for the context's policy pass s_b + step + 1.
///
/// Errors: as `ace_solver_sde_step`; `num_seeds` 0 or not dividing `len` (LENGTH_MISMATCH); bad
/// noise options (INVALID_JSON).
///
/// # Safety
/// As `ace_solver_ode_step`; `seeds` must point to `num_seeds` values; `noise_json` null or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ace_solver_sde_step_seeded(
    xt: *const f32,
    vt: *const f32,
    len: usize,
    seeds: *const u64,
    num_seeds: usize,
    noise_json: *const c_char,
    t: f64,
    t_next: f64,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        let (x, v, o) = xv_out(xt, vt, len, out)?;
        let eps = seeded_noise(seeds, num_seeds, noise_json, len)?;
        solver::sde_step(x, v, t, t_next, &eps, o)
    })
}

/// `ace_solver_pingpong_step` with ε drawn by the library, as in `ace_solver_sde_step_seeded`.
///
/// # Safety
/// As `ace_solver_sde_step_seeded`.
#[no_mangle]
pub unsafe extern "C" fn ace_solver_pingpong_step_seeded(
    xt: *const f32,
    vt: *const f32,
    len: usize,
    seeds: *const u64,
    num_seeds: usize,
    noise_json: *const c_char,
    sigma: f64,
    sigma_next: f64,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        let (x, v, o) = xv_out(xt, vt, len, out)?;
        let eps = seeded_noise(seeds, num_seeds, noise_json, len)?;
        solver::pingpong_step(x, v, sigma, sigma_next, &eps, o)
    })
}

/// ω of the v1 schedulers for `omega_scale`: 0.9 + 0.2/(1 + e^(−0.1·omega_scale)).
///
/// # Safety
/// `out` must be null or point to a writable `double`.
#[no_mangle]
pub unsafe extern "C" fn ace_solver_omega(omega_scale: f64, out: *mut f64) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        if !omega_scale.is_finite() {
            return Err(Error::invalid_argument(format!(
                "omega_scale is not finite ({omega_scale})"
            )));
        }
        ptr::write_out(out, solver::omega_from_scale(omega_scale), "out")
    })
}

/// v1 Euler step with the ω mean shift: dx = vt·(σ_next − σ), m = mean(dx) over all `len`
/// elements, out = xt + (dx − m)·ω + m. Pass the whole tensor: the mean spans the batch.
///
/// # Safety
/// As `ace_solver_ode_step`.
#[no_mangle]
pub unsafe extern "C" fn ace_solver_euler_omega_step(
    xt: *const f32,
    vt: *const f32,
    len: usize,
    sigma: f64,
    sigma_next: f64,
    omega_scale: f64,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        let (x, v, o) = xv_out(xt, vt, len, out)?;
        solver::euler_omega_step(x, v, sigma, sigma_next, omega_scale, o)
    })
}

/// v1 PingPong step: x0 = xt − σ·vt, out = (1 − σ_next)·x0 + σ_next·eps (no ω).
///
/// # Safety
/// As `ace_solver_sde_step`.
#[no_mangle]
pub unsafe extern "C" fn ace_solver_pingpong_step(
    xt: *const f32,
    vt: *const f32,
    eps: *const f32,
    len: usize,
    sigma: f64,
    sigma_next: f64,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        let (x, v, o) = xv_out(xt, vt, len, out)?;
        let e = eps_in(eps, len, o)?;
        solver::pingpong_step(x, v, sigma, sigma_next, e, o)
    })
}

/// Creates a v1 Heun solver with the given `omega_scale` (v1 default 10). Free with
/// `ace_heun_free`.
///
/// # Safety
/// `out` must point to a writable `AceHeun *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_heun_create(omega_scale: f64, out: *mut *mut AceHeun) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        ptr::handle_out(out, AceHeun { inner: HeunSolver::new(omega_scale)? }, "out")
    })
}

/// Frees a Heun solver. Null is a no-op.
///
/// # Safety
/// `heun` must be null or a live handle from `ace_heun_create`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ace_heun_free(heun: *mut AceHeun) {
    ptr::handle_free(heun)
}

/// Runs the next Heun stage for the interval σ → σ_next and writes the stage that ran (1 or 2)
/// to `*out_stage`:
/// - stage 1 (first call of an interval, vt evaluated at σ on xt): out = Euler prediction with the
///   ω mean shift; evaluate the model on it at σ_next and call again;
/// - stage 2 (vt evaluated at σ_next on that prediction; same σ, σ_next): out = the kept xt
///   advanced by ½(d1 + d2)·dt with the ω mean shift.
///
/// The last interval of a v1 schedule (σ_next = 0) is first-stage only: use its output and call
/// `ace_heun_reset`. On error the solver's state is unchanged.
///
/// # Safety
/// As `ace_solver_ode_step`; `heun` a live handle; `out_stage` a writable int or null.
#[no_mangle]
pub unsafe extern "C" fn ace_heun_step(
    heun: *mut AceHeun,
    xt: *const f32,
    vt: *const f32,
    len: usize,
    sigma: f64,
    sigma_next: f64,
    out: *mut f32,
    out_stage: *mut c_int,
) -> AceStatus {
    guard(|| {
        let h = ptr::handle_mut(heun, "heun")?;
        let (x, v, o) = xv_out(xt, vt, len, out)?;
        let stage = h.inner.step(x, v, sigma, sigma_next, o)?;
        let n = match stage {
            HeunStage::First => 1,
            HeunStage::Second => 2,
        };
        // out_stage is optional (the header allows NULL): `ace_heun_next_stage` tells it too.
        if !out_stage.is_null() {
            ptr::write_out(out_stage, n, "out_stage")?;
        }
        Ok(())
    })
}

/// Drops a pending first stage, so the next `ace_heun_step` starts a new interval.
///
/// # Safety
/// `heun` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn ace_heun_reset(heun: *mut AceHeun) -> AceStatus {
    guard(|| {
        ptr::handle_mut(heun, "heun")?.inner.reset();
        Ok(())
    })
}

/// Writes the stage the next `ace_heun_step` will run (1 or 2) to `*out_stage`.
///
/// # Safety
/// `heun` must be a live handle; `out_stage` a writable int.
#[no_mangle]
pub unsafe extern "C" fn ace_heun_next_stage(
    heun: *const AceHeun,
    out_stage: *mut c_int,
) -> AceStatus {
    guard(|| {
        let h = ptr::handle_ref(heun, "heun")?;
        let n = match h.inner.stage() {
            HeunStage::First => 1,
            HeunStage::Second => 2,
        };
        ptr::write_out(out_stage, n, "out_stage")
    })
}
