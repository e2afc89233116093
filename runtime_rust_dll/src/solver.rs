//! Solver steps on float32 latents (flat buffers; the caller knows the [B, T, C] shape).
//!
//! The arithmetic follows the reference's float32 tensor code operation by operation (each
//! product and difference rounded to f32, scalars cast to f32 first), so an fp32 host reproduces
//! an fp32 PyTorch run to the last bit where the reference does plain elementwise math.
//!
//! ACE-Step 1.5 (spec §4.1, §4.5):
//! - [`ode_step`]: x ← x − v·(t − t_next)
//! - [`x0_from_velocity`]: x0 = x − v·t (the last step of every schedule)
//! - [`sde_step`]: x0̂ = x − v·t, then x ← t_next·ε + (1 − t_next)·x0̂
//!
//! ACE-Step v1 (`v1_and_pitfalls.md` A):
//! - [`euler_omega_step`]: Euler with the ω mean shift
//! - [`HeunSolver`]: two-stage Heun, ω mean shift on both stages
//! - [`pingpong_step`]: x0 = x − σ·v, then x ← (1 − σ_next)·x0 + σ_next·ε

use crate::error::{ensure_finite, ensure_finite_result, Error, Result};
use crate::noise::{self, NoiseMode};

fn ensure_same_len(len: usize, other: usize, name: &str) -> Result<()> {
    if len != other {
        return Err(Error::length_mismatch(format!(
            "{name} has {other} elements but xt has {len}"
        )));
    }
    Ok(())
}

fn ensure_nonempty(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::length_mismatch("xt is empty (0 elements)"));
    }
    Ok(())
}

fn ensure_finite_scalar(value: f64, name: &str) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid_argument(format!("{name} is not finite ({value})")));
    }
    Ok(())
}

/// Checks the buffers every step takes: same non-zero length, all finite.
fn check_inputs(x: &[f32], v: &[f32], out_len: usize) -> Result<()> {
    ensure_nonempty(x.len())?;
    ensure_same_len(x.len(), v.len(), "vt")?;
    ensure_same_len(x.len(), out_len, "out")?;
    ensure_finite(x, "xt")?;
    ensure_finite(v, "vt")
}

/// The flow-matching ODE (Euler) step x ← x − v·dt with dt = f32(t − t_next), as the reference's
/// `xt - vt * dt_tensor` (dt formed in f64 from the two schedule values, then cast to f32).
pub fn ode_step(x: &[f32], v: &[f32], t: f64, t_next: f64, out: &mut [f32]) -> Result<()> {
    ensure_finite_scalar(t, "t")?;
    ensure_finite_scalar(t_next, "t_next")?;
    euler_step(x, v, (t - t_next) as f32, out)
}

/// x ← x − v·dt with a ready-made f32 `dt` (a bf16 run rounds dt to bf16 before using it).
pub fn euler_step(x: &[f32], v: &[f32], dt: f32, out: &mut [f32]) -> Result<()> {
    check_inputs(x, v, out.len())?;
    ensure_finite_scalar(dt as f64, "dt")?;
    for ((o, &xi), &vi) in out.iter_mut().zip(x).zip(v) {
        *o = xi - vi * dt;
    }
    ensure_finite_result(out, "out")
}

/// The clean-sample estimate x0 = x − v·t (the reference's `get_x0_from_noise`).
pub fn x0_from_velocity(x: &[f32], v: &[f32], t: f64, out: &mut [f32]) -> Result<()> {
    check_inputs(x, v, out.len())?;
    ensure_finite_scalar(t, "t")?;
    let t = t as f32;
    for ((o, &xi), &vi) in out.iter_mut().zip(x).zip(v) {
        *o = xi - vi * t;
    }
    ensure_finite_result(out, "out")
}

/// Re-noises a clean estimate to level `t`: t·ε + (1 − t)·x0 (the reference's `renoise`: the
/// scalar 1 − t is formed in f64, then both scalars are cast to f32).
pub(crate) fn renoise(x0: &[f32], eps: &[f32], t: f64, out: &mut [f32]) {
    let a = t as f32;
    let b = (1.0 - t) as f32;
    for ((o, &x), &e) in out.iter_mut().zip(x0).zip(eps) {
        *o = a * e + b * x;
    }
}

/// The SDE step: x0̂ = x − v·t, then x ← t_next·ε + (1 − t_next)·x0̂. `eps` has x's length.
pub fn sde_step(
    x: &[f32],
    v: &[f32],
    t: f64,
    t_next: f64,
    eps: &[f32],
    out: &mut [f32],
) -> Result<()> {
    check_inputs(x, v, out.len())?;
    ensure_same_len(x.len(), eps.len(), "eps")?;
    ensure_finite(eps, "eps")?;
    ensure_finite_scalar(t_next, "t_next")?;
    // x0̂ goes into `out` first, then is re-noised in place: no latent-sized temporary per step.
    x0_from_velocity(x, v, t, out)?;
    let (a, b) = (t_next as f32, (1.0 - t_next) as f32);
    for (o, &e) in out.iter_mut().zip(eps) {
        *o = a * e + b * *o;
    }
    ensure_finite_result(out, "out")
}

/// Gaussian noise for a batch: `seeds.len()` equal items of `numel / seeds.len()` values, item b
/// drawn as `randn([1, ...])` from a fresh generator seeded with `seeds[b]` (the official per-item
/// noise layout, spec §4.4).
pub fn batch_noise(mode: &NoiseMode, seeds: &[u64], numel: usize) -> Result<Vec<f32>> {
    if seeds.is_empty() || !numel.is_multiple_of(seeds.len()) {
        return Err(Error::length_mismatch(format!(
            "{numel} elements cannot be split into {} equal batch items (one per seed)",
            seeds.len()
        )));
    }
    let mut eps = vec![0.0f32; numel];
    for (chunk, &seed) in eps.chunks_mut(numel / seeds.len()).zip(seeds) {
        noise::fill_normal(mode, seed, chunk)?;
    }
    Ok(eps)
}

/// v1's ω: the logistic 0.9 + 0.2 / (1 + e^(−0.1·omega_scale)); 10 → ≈ 1.0462.
pub fn omega_from_scale(omega_scale: f64) -> f64 {
    0.9 + 0.2 / (1.0 + (-0.1 * omega_scale).exp())
}

/// The ω mean shift of the v1 schedulers: out = base + ((dx − m)·ω + m), m = mean(dx) over the
/// whole tensor. The mean is accumulated in f64 and rounded to f32 (torch's f32 mean is within
/// rounding of it); ω is used as f32 like the reference's tensor-times-scalar.
fn apply_omega(base: &[f32], dx: &[f32], omega: f64, out: &mut [f32]) {
    let m = (dx.iter().map(|&d| d as f64).sum::<f64>() / dx.len() as f64) as f32;
    let w = omega as f32;
    for ((o, &b), &d) in out.iter_mut().zip(base).zip(dx) {
        *o = b + ((d - m) * w + m);
    }
}

fn check_omega_scale(omega_scale: f64) -> Result<()> {
    ensure_finite_scalar(omega_scale, "omega_scale")
}

/// v1 Euler: dx = v·(σ_next − σ); x' = x + (dx − m)·ω + m with m = mean(dx), ω from
/// `omega_scale` (default 10 in v1).
pub fn euler_omega_step(
    x: &[f32],
    v: &[f32],
    sigma: f64,
    sigma_next: f64,
    omega_scale: f64,
    out: &mut [f32],
) -> Result<()> {
    check_inputs(x, v, out.len())?;
    ensure_finite_scalar(sigma, "sigma")?;
    ensure_finite_scalar(sigma_next, "sigma_next")?;
    check_omega_scale(omega_scale)?;
    let dt = (sigma_next as f32) - (sigma as f32);
    let dx: Vec<f32> = v.iter().map(|&vi| vi * dt).collect();
    apply_omega(x, &dx, omega_from_scale(omega_scale), out);
    ensure_finite_result(out, "out")
}

/// v1 PingPong: x0 = x − σ·v, then x' = (1 − σ_next)·x0 + σ_next·ε (no ω). `eps` has x's length.
pub fn pingpong_step(
    x: &[f32],
    v: &[f32],
    sigma: f64,
    sigma_next: f64,
    eps: &[f32],
    out: &mut [f32],
) -> Result<()> {
    sde_step(x, v, sigma, sigma_next, eps, out)
}

/// Which model evaluation a [`HeunSolver`] expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeunStage {
    /// The next call is the first evaluation of an interval, at σ.
    First,
    /// The next call is the corrector evaluation, at σ_next of the pending interval.
    Second,
}

/// The v1 two-stage Heun solver. For an interval σ → σ_next:
/// 1. `step(x, v(x, σ), σ, σ_next)`: keeps d1 = (x − (x − v·σ))/σ, dt = σ_next − σ and x, and
///    returns the Euler prediction x + ω-shift(d1·dt) (evaluate the model there, at σ_next);
/// 2. `step(x_pred, v(x_pred, σ_next), ...)`: d = ½(d1 + d2), returns x + ω-shift(d·dt) from the
///    kept x. The σ arguments of the second call must repeat the first call's.
///
/// The v1 schedule ends with an interval to σ = 0; there only stage 1 runs (2N − 1 model calls in
/// all), and its prediction is the result: call [`HeunSolver::reset`] or just drop the solver.
#[derive(Debug, Clone)]
pub struct HeunSolver {
    omega_scale: f64,
    pending: Option<HeunPending>,
}

#[derive(Debug, Clone)]
struct HeunPending {
    x: Vec<f32>,
    d1: Vec<f32>,
    sigma: f64,
    sigma_next: f64,
}

impl HeunSolver {
    pub fn new(omega_scale: f64) -> Result<Self> {
        check_omega_scale(omega_scale)?;
        Ok(Self { omega_scale, pending: None })
    }

    pub fn stage(&self) -> HeunStage {
        if self.pending.is_some() {
            HeunStage::Second
        } else {
            HeunStage::First
        }
    }

    /// Drops a pending first stage (e.g. after the final Euler-only interval).
    pub fn reset(&mut self) {
        self.pending = None;
    }

    /// Runs the next stage; see the type's documentation. Returns the stage that ran.
    pub fn step(
        &mut self,
        x: &[f32],
        v: &[f32],
        sigma: f64,
        sigma_next: f64,
        out: &mut [f32],
    ) -> Result<HeunStage> {
        check_inputs(x, v, out.len())?;
        ensure_finite_scalar(sigma, "sigma")?;
        ensure_finite_scalar(sigma_next, "sigma_next")?;
        let omega = omega_from_scale(self.omega_scale);
        match self.pending.take() {
            None => {
                if sigma == 0.0 {
                    return Err(Error::invalid_argument(
                        "sigma is 0: the Heun first stage divides by sigma",
                    ));
                }
                let s = sigma as f32;
                let dt = (sigma_next as f32) - s;
                // The reference forms the derivative through the x0 estimate; keep its rounding.
                let d1: Vec<f32> =
                    x.iter().zip(v).map(|(&xi, &vi)| (xi - (xi - vi * s)) / s).collect();
                let dx: Vec<f32> = d1.iter().map(|&d| d * dt).collect();
                apply_omega(x, &dx, omega, out);
                ensure_finite_result(out, "out")?;
                self.pending = Some(HeunPending { x: x.to_vec(), d1, sigma, sigma_next });
                Ok(HeunStage::First)
            }
            Some(p) => {
                let fail = |msg: String| Err(Error::invalid_argument(msg));
                if p.x.len() != x.len() {
                    let n = p.x.len();
                    self.pending = Some(p);
                    return Err(Error::length_mismatch(format!(
                        "Heun second stage got {} elements but the first stage had {n}",
                        x.len()
                    )));
                }
                if p.sigma != sigma || p.sigma_next != sigma_next {
                    let msg = format!(
                        "Heun second stage got sigma {sigma} -> {sigma_next}, but the pending interval is {} -> {}",
                        p.sigma, p.sigma_next
                    );
                    self.pending = Some(p);
                    return fail(msg);
                }
                if sigma_next == 0.0 {
                    self.pending = Some(p);
                    return fail("sigma_next is 0: the Heun second stage divides by sigma_next; the final interval is first-stage only".into());
                }
                let sn = sigma_next as f32;
                let dt = sn - (sigma as f32);
                let dx: Vec<f32> = x
                    .iter()
                    .zip(v)
                    .zip(&p.d1)
                    .map(|((&xi, &vi), &d1)| {
                        let d2 = (xi - (xi - vi * sn)) / sn;
                        (0.5f32 * (d1 + d2)) * dt
                    })
                    .collect();
                apply_omega(&p.x, &dx, omega, out);
                if let Err(e) = ensure_finite_result(out, "out") {
                    self.pending = Some(p);
                    return Err(e);
                }
                Ok(HeunStage::Second)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ode_and_x0() {
        let x = [1.0f32, 2.0, -3.0];
        let v = [0.5f32, -1.0, 2.0];
        let mut out = [0.0f32; 3];
        ode_step(&x, &v, 1.0, 0.75, &mut out).unwrap();
        assert_eq!(out, [1.0 - 0.125, 2.0 + 0.25, -3.0 - 0.5]);
        x0_from_velocity(&x, &v, 0.5, &mut out).unwrap();
        assert_eq!(out, [0.75, 2.5, -4.0]);
    }

    #[test]
    fn sde_mixes_noise_and_estimate() {
        let x = [1.0f32, 2.0];
        let v = [2.0f32, 2.0];
        let eps = [10.0f32, -10.0];
        let mut out = [0.0f32; 2];
        sde_step(&x, &v, 0.5, 0.25, &eps, &mut out).unwrap();
        // x0 = [0, 1]; 0.25·eps + 0.75·x0
        assert_eq!(out, [2.5, -2.5 + 0.75]);
    }

    #[test]
    fn omega_value() {
        assert!((omega_from_scale(10.0) - (0.9 + 0.2 / (1.0 + (-1.0f64).exp()))).abs() < 1e-15);
        assert!((omega_from_scale(0.0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn omega_one_is_plain_euler() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let v = [1.0f32, 0.0, -1.0, 2.0];
        let mut out = [0.0f32; 4];
        euler_omega_step(&x, &v, 1.0, 0.5, 0.0, &mut out).unwrap();
        assert_eq!(out, [0.5, 2.0, 3.5, 3.0]);
    }

    #[test]
    fn rejects_bad_input() {
        let mut out = [0.0f32; 2];
        assert!(ode_step(&[1.0, 2.0], &[1.0], 1.0, 0.5, &mut out).is_err());
        assert!(ode_step(&[1.0, 2.0], &[1.0, f32::NAN], 1.0, 0.5, &mut out).is_err());
        assert!(ode_step(&[], &[], 1.0, 0.5, &mut []).is_err());
        assert!(ode_step(&[1.0, 2.0], &[1.0, 1.0], f64::NAN, 0.5, &mut out).is_err());
        assert!(sde_step(&[1.0, 2.0], &[1.0, 1.0], 1.0, 0.5, &[1.0], &mut out).is_err());
    }

    #[test]
    fn heun_stages_alternate_and_check_their_interval() {
        let mut h = HeunSolver::new(0.0).unwrap();
        let x = [1.0f32, 2.0];
        let mut pred = [0.0f32; 2];
        assert_eq!(h.step(&x, &[1.0, 1.0], 1.0, 0.5, &mut pred).unwrap(), HeunStage::First);
        assert_eq!(pred, [0.5, 1.5]);
        let mut out = [0.0f32; 2];
        assert!(h.step(&pred, &[3.0, 3.0], 1.0, 0.25, &mut out).is_err());
        assert_eq!(h.stage(), HeunStage::Second);
        assert_eq!(h.step(&pred, &[3.0, 3.0], 1.0, 0.5, &mut out).unwrap(), HeunStage::Second);
        // d = (1 + 3)/2 = 2, dt = -0.5 → x − 1
        assert_eq!(out, [0.0, 1.0]);
        assert_eq!(h.stage(), HeunStage::First);
    }
}
