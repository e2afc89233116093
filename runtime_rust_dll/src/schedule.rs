//! Timestep schedules of ACE-Step 1.5 (turbo, base, SFT) and the ACE-Step v1 σ grid.
//!
//! Convention (rectified flow, spec §4): x_t = t·noise + (1 − t)·x0, t = 1 is pure noise.
//! Everything is computed in f64 and handed out as f32 (the model dtype of an fp32 run).
//!
//! Shape of the results:
//! - ACE-Step 1.5 schedules ([`turbo_schedule`], [`custom_turbo_schedule`], [`base_schedule`]) hold
//!   the N timesteps at which the DiT runs; the terminal 0 is implicit (spec §4.1: the last step is
//!   x0 = x_t − v·t_last).
//! - The v1 σ grid ([`v1_sigmas`]) holds N + 1 values ending with the appended 0, as the v1
//!   schedulers store it.

use crate::error::{Error, Result};

/// Turbo shifts, in the order the official code searches them for the nearest value.
pub const TURBO_SHIFTS: [f64; 3] = [1.0, 2.0, 3.0];

/// Number of entries of every turbo shift schedule (the turbo model always runs 8 NFEs).
pub const TURBO_STEPS: usize = 8;

/// Custom turbo timestep lists longer than this are truncated.
pub const MAX_CUSTOM_TIMESTEPS: usize = 20;

/// The 20 timesteps custom turbo values snap to: the union of the three shift schedules,
/// descending, in the order the official code searches them (ties go to the earlier entry).
/// The literals are the official list's; a unit test checks them against the shift formula.
pub const VALID_TIMESTEPS: [f64; 20] = [
    1.0,
    0.9545454545454546,
    0.9333333333333333,
    0.9,
    0.875,
    0.8571428571428571,
    0.8333333333333334,
    0.7692307692307693,
    0.75,
    0.6666666666666666,
    0.6428571428571429,
    0.625,
    0.5454545454545454,
    0.5,
    0.4,
    0.375,
    0.3,
    0.25,
    0.2222222222222222,
    0.125,
];

/// The time shift t' = s·t / (1 + (s − 1)·t).
pub fn shift_timestep(t: f64, shift: f64) -> f64 {
    shift * t / (1.0 + (shift - 1.0) * t)
}

fn check_shift(shift: f64) -> Result<()> {
    if !shift.is_finite() || shift <= 0.0 {
        return Err(Error::invalid_argument(format!(
            "shift must be a finite number > 0, got {shift}"
        )));
    }
    Ok(())
}

/// The turbo shift a requested shift resolves to: the nearest of 1, 2, 3, ties to the earlier
/// (1.5 → 1, 2.5 → 2).
pub fn nearest_turbo_shift(shift: f64) -> Result<f64> {
    check_shift(shift)?;
    Ok(nearest_in_order(&TURBO_SHIFTS, shift))
}

/// First entry of `candidates` with the smallest |c − x| (Python's `min(..., key=abs diff)`).
fn nearest_in_order(candidates: &[f64], x: f64) -> f64 {
    let mut best = candidates[0];
    let mut best_dist = (best - x).abs();
    for &c in &candidates[1..] {
        let d = (c - x).abs();
        if d < best_dist {
            best = c;
            best_dist = d;
        }
    }
    best
}

/// The 8-entry turbo schedule of the nearest turbo shift: s·t/(1+(s−1)t) with t = 1 − i/8.
pub fn turbo_schedule(shift: f64) -> Result<Vec<f64>> {
    let s = nearest_turbo_shift(shift)?;
    Ok((0..TURBO_STEPS).map(|i| shift_timestep(1.0 - i as f64 / TURBO_STEPS as f64, s)).collect())
}

/// The nearest entry of [`VALID_TIMESTEPS`] (ties to the earlier entry).
pub fn snap_to_valid_timestep(t: f64) -> f64 {
    nearest_in_order(&VALID_TIMESTEPS, t)
}

/// A turbo schedule from user timesteps, following the official rules (spec §4.1):
/// 1. drop trailing exact zeros;
/// 2. if nothing is left, use the shift schedule of `fallback_shift`;
/// 3. keep the first 20;
/// 4. snap each to the nearest VALID_TIMESTEPS entry (ties to the first in list order);
/// 5. no sorting, no de-duplication.
///
/// Stricter than the official code: values must be finite and within [0, 1] (the official code
/// would silently snap e.g. 7.0 to 1.0; here that is an error naming the index and value).
pub fn custom_turbo_schedule(timesteps: &[f64], fallback_shift: f64) -> Result<Vec<f64>> {
    check_shift(fallback_shift)?;
    for (i, &t) in timesteps.iter().enumerate() {
        if !t.is_finite() {
            return Err(Error::invalid_argument(format!(
                "timesteps[{i}] is not a finite number ({t})"
            )));
        }
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::invalid_argument(format!("timesteps[{i}] = {t} is outside [0, 1]")));
        }
    }
    let mut kept = timesteps.len();
    while kept > 0 && timesteps[kept - 1] == 0.0 {
        kept -= 1;
    }
    if kept == 0 {
        return turbo_schedule(fallback_shift);
    }
    Ok(timesteps[..kept.min(MAX_CUSTOM_TIMESTEPS)]
        .iter()
        .map(|&t| snap_to_valid_timestep(t))
        .collect())
}

/// `torch.linspace(start, end, n)` in f64: torch fills the first half from `start` and the
/// second half from `end`, so both ends are exact.
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            let half = n / 2;
            (0..n)
                .map(|i| {
                    if i < half {
                        start + step * i as f64
                    } else {
                        end - step * (n - 1 - i) as f64
                    }
                })
                .collect()
        }
    }
}

/// Steps must be in 1..=MAX_STEPS; checked before any schedule is allocated (steps + 1 cannot wrap).
fn check_steps(steps: usize) -> Result<()> {
    if steps == 0 {
        return Err(Error::invalid_argument("steps must be at least 1, got 0"));
    }
    crate::limits::ensure_at_most(steps, crate::limits::MAX_STEPS, "steps")
}

/// The base/SFT schedule: t = linspace(1, 0, steps + 1), shifted when shift ≠ 1. Returns the
/// `steps` timesteps the DiT runs at (the final 0 is implicit).
pub fn base_schedule(steps: usize, shift: f64) -> Result<Vec<f64>> {
    check_steps(steps)?;
    check_shift(shift)?;
    let mut t = linspace(1.0, 0.0, steps + 1);
    t.pop();
    if shift != 1.0 {
        for v in &mut t {
            *v = shift_timestep(*v, shift);
        }
    }
    Ok(t)
}

/// The renoise target of the base/SFT SDE sampler after step `i`: 1 − (i+1)/steps, which ignores
/// the shift (an upstream quirk the reference reproduces, spec §4.3).
pub fn base_sde_renoise_target(step_index: usize, steps: usize) -> f64 {
    1.0 - (step_index + 1) as f64 / steps as f64
}

/// Number of training timesteps of the v1 schedulers (σ ↔ model timestep scale).
pub const V1_NUM_TRAIN_TIMESTEPS: f64 = 1000.0;

/// The v1 schedulers' default σ_min: their constructor shifts the training grid (in float32), and
/// `set_timesteps` then starts from its last entry, shift(1/1000).
pub fn v1_default_sigma_min(shift: f64) -> Result<f64> {
    check_shift(shift)?;
    let s = shift as f32;
    let sigma = 1.0f32 / V1_NUM_TRAIN_TIMESTEPS as f32;
    Ok((s * sigma / (1.0 + (s - 1.0) * sigma)) as f64)
}

/// The v1 σ grid: σ = linspace(σ_max, σ_min, N) (computed on the 1000× timestep scale as the v1
/// schedulers do), σ ← s·σ/(1+(s−1)σ), then a final 0 appended. Returns N + 1 values; the model
/// timestep of step i is 1000·σ_i.
pub fn v1_sigmas(steps: usize, shift: f64, sigma_max: f64, sigma_min: f64) -> Result<Vec<f64>> {
    check_steps(steps)?;
    check_shift(shift)?;
    for (name, v) in [("sigma_max", sigma_max), ("sigma_min", sigma_min)] {
        if !v.is_finite() || !(0.0..=1.0).contains(&v) {
            return Err(Error::invalid_argument(format!("{name} must be within [0, 1], got {v}")));
        }
    }
    if sigma_min > sigma_max {
        return Err(Error::invalid_argument(format!(
            "sigma_min ({sigma_min}) must not exceed sigma_max ({sigma_max})"
        )));
    }
    let n = V1_NUM_TRAIN_TIMESTEPS;
    let mut sigmas: Vec<f64> = numpy_linspace(sigma_max * n, sigma_min * n, steps)
        .into_iter()
        .map(|ts| shift_timestep(ts / n, shift))
        .collect();
    sigmas.push(0.0);
    Ok(sigmas)
}

/// `numpy.linspace(start, stop, n)`: start + i·step, with the last value set to `stop`.
fn numpy_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
            v[n - 1] = stop;
            v
        }
    }
}

/// Rounds an f32 to the nearest bfloat16 (round to nearest, ties to even) and returns it as f32.
/// NaN stays NaN; ±Inf stay; values too large for bf16 round to ±Inf like torch's cast.
pub fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let bits = x.to_bits();
    let lsb = (bits >> 16) & 1;
    let rounded = bits.wrapping_add(0x7FFF + lsb) & 0xFFFF_0000;
    f32::from_bits(rounded)
}

/// The value an f64 timestep has in a bf16 tensor: f64 → f32 → bf16 (torch's bf16 type is built
/// from a float, so `torch.tensor(list, dtype=torch.bfloat16)` rounds through f32 as well).
pub fn bf16_timestep(t: f64) -> f64 {
    round_bf16(t as f32) as f64
}

/// bf16(1000·t_bf16): the product `TimestepEmbedding` forms in a bf16 run (spec §4.2).
pub fn bf16_timestep_x1000(t: f64) -> f64 {
    round_bf16(1000.0f32 * round_bf16(t as f32)) as f64
}

/// The f32 values of an f64 schedule (the dtype of an fp32 run).
pub fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn turbo_tables_match_the_spec() {
        let spec: [(f64, [f64; 8]); 3] = [
            (1.0, [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]),
            (2.0, [1.0, 0.93333, 0.85714, 0.76923, 0.66667, 0.54545, 0.4, 0.22222]),
            (3.0, [1.0, 0.95455, 0.9, 0.83333, 0.75, 0.64286, 0.5, 0.3]),
        ];
        for (s, table) in spec {
            assert!(close(&turbo_schedule(s).unwrap(), &table, 5e-6), "shift {s}");
        }
    }

    #[test]
    fn turbo_shift_ties_go_to_the_earlier_value() {
        assert_eq!(nearest_turbo_shift(1.5).unwrap(), 1.0);
        assert_eq!(nearest_turbo_shift(2.5).unwrap(), 2.0);
        assert_eq!(nearest_turbo_shift(2.51).unwrap(), 3.0);
        assert_eq!(nearest_turbo_shift(0.1).unwrap(), 1.0);
        assert_eq!(nearest_turbo_shift(10.0).unwrap(), 3.0);
        assert!(nearest_turbo_shift(0.0).is_err());
        assert!(nearest_turbo_shift(-1.0).is_err());
        assert!(nearest_turbo_shift(f64::NAN).is_err());
        assert!(nearest_turbo_shift(f64::INFINITY).is_err());
    }

    #[test]
    fn valid_timesteps_are_the_union_of_the_shift_schedules() {
        let mut union: Vec<f64> = Vec::new();
        for s in [1.0, 2.0, 3.0] {
            for i in 0..8 {
                let t = s * (1.0 - i as f64 / 8.0) / (1.0 + (s - 1.0) * (1.0 - i as f64 / 8.0));
                if !union.iter().any(|u| (u - t).abs() < 1e-12) {
                    union.push(t);
                }
            }
        }
        union.sort_by(|a, b| b.partial_cmp(a).unwrap());
        assert!(close(&union, &VALID_TIMESTEPS, 1e-15));
    }

    #[test]
    fn custom_example_from_the_spec() {
        let got =
            custom_turbo_schedule(&[0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0.0], 3.0)
                .unwrap();
        let want = [0.954545, 0.769231, 0.625, 0.5, 0.4, 0.3, 0.222222, 0.125];
        assert!(close(&got, &want, 1e-6), "{got:?}");
    }

    #[test]
    fn custom_rules() {
        // exact (in f64) ties between neighbours go to the earlier, larger entry
        assert!((0.5f64 - 0.45).abs() == (0.45f64 - 0.4).abs());
        assert_eq!(custom_turbo_schedule(&[0.45, 0.3875], 3.0).unwrap(), vec![0.5, 0.4]);
        // only zeros → shift schedule of the fallback shift
        assert_eq!(custom_turbo_schedule(&[0.0, 0.0], 2.0).unwrap(), turbo_schedule(2.0).unwrap());
        assert_eq!(custom_turbo_schedule(&[], 1.0).unwrap(), turbo_schedule(1.0).unwrap());
        // a zero inside the list is kept and snapped; no sort, no dedup
        assert_eq!(
            custom_turbo_schedule(&[0.5, 0.0, 0.5, 0.0], 3.0).unwrap(),
            vec![0.5, 0.125, 0.5]
        );
        // truncation to 20
        let long: Vec<f64> = (0..25).map(|i| 1.0 - i as f64 * 0.01).collect();
        assert_eq!(custom_turbo_schedule(&long, 3.0).unwrap().len(), 20);
        assert!(custom_turbo_schedule(&[0.5, f64::NAN], 3.0).is_err());
        assert!(custom_turbo_schedule(&[1.5], 3.0).is_err());
        assert!(custom_turbo_schedule(&[-0.1], 3.0).is_err());
    }

    #[test]
    fn base_schedule_is_shifted_linspace() {
        let t = base_schedule(4, 1.0).unwrap();
        assert_eq!(t, vec![1.0, 0.75, 0.5, 0.25]);
        let t = base_schedule(8, 3.0).unwrap();
        assert!(close(&t, &turbo_schedule(3.0).unwrap(), 1e-15));
        assert_eq!(base_schedule(1, 2.0).unwrap(), vec![1.0]);
        assert!(base_schedule(0, 1.0).is_err());
        assert!(base_schedule(4, 0.0).is_err());
    }

    #[test]
    fn bf16_rounding_matches_the_spec_table() {
        let shift3 = [1.0, 0.953125, 0.8984375, 0.83203125, 0.75, 0.64453125, 0.5, 0.30078125];
        let x1000 = [1000.0, 952.0, 900.0, 832.0, 752.0, 644.0, 500.0, 300.0];
        let s = turbo_schedule(3.0).unwrap();
        for i in 0..8 {
            assert_eq!(bf16_timestep(s[i]), shift3[i]);
            assert_eq!(bf16_timestep_x1000(s[i]), x1000[i]);
        }
        // ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn v1_grid() {
        let s = v1_sigmas(4, 1.0, 1.0, 0.25).unwrap();
        assert!(close(&s, &[1.0, 0.75, 0.5, 0.25, 0.0], 1e-15));
        assert!(v1_sigmas(4, 3.0, 0.2, 0.5).is_err());
        assert!(v1_sigmas(0, 3.0, 1.0, 0.0).is_err());
    }
}
