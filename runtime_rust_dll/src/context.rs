//! The scheduling context: one generation's resolved timestep schedule and update rule, driven
//! step by step by a host that runs the DiT (`ace_create_context`, `ace_prepare_step_inputs`,
//! `ace_scheduler_step`).
//!
//! Per step i of N (spec §4.1, §4.3, §4.5), with t = sched[i] and t_next = sched[i+1] (0 after the
//! last entry):
//! - last step (i = N − 1), any method: x0 = x − v·t;
//! - ODE: x ← x − v·dt, dt = t − t_next;
//! - SDE: x ← t_next·ε + (1 − t_next)·(x − v·t). For base/SFT the renoise level is
//!   1 − (i+1)/steps, which ignores the shift (upstream quirk, reproduced).
//!
//! SDE noise policy (the reference draws ε from the unseeded global RNG, so no seed reproduces it;
//! we follow acestep.cpp's choice instead): batch item b with seed s_b draws the ε of step i as
//! `randn([1, T, C])` from a fresh generator seeded with s_b + i + 1, in the configured noise mode.
//!
//! Cover tasks (spec §4.1): `cover_noise_strength` > 0 starts the run at the schedule entry t*
//! nearest 1 − strength (x = t*·noise + (1 − t*)·src, see `initial_latents`) and drops the earlier
//! entries; `audio_cover_strength` marks steps i < int(N·strength) as using the cover condition.
//!
//! The context is immutable after creation: every call depends only on the step index, so steps
//! may be repeated or run from several threads.

use serde::Deserialize;

use crate::error::{parse_json, Error, Result};
use crate::noise::{self, NoiseMode};
use crate::schedule;
use crate::solver;

/// Which ACE-Step 1.5 DiT the schedule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Turbo,
    Base,
    Sft,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Turbo => "turbo",
            ModelKind::Base => "base",
            ModelKind::Sft => "sft",
        }
    }
}

/// The update rule of non-final steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Ode,
    Sde,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Ode => "ode",
            Method::Sde => "sde",
        }
    }
}

/// The JSON configuration of `ace_create_context`. Unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextConfig {
    model: ModelKind,
    /// Turbo: snapped to the nearest of 1, 2, 3 (default 3, the UI/CLI default). Base/SFT: any
    /// value > 0 (default 1).
    shift: Option<f64>,
    /// Base/SFT: number of steps (required). Turbo: ignored (reported in `notes`).
    steps: Option<usize>,
    /// Turbo only: custom timesteps (spec §4.1 rules).
    timesteps: Option<Vec<f64>>,
    #[serde(default)]
    method: Method,
    /// Round the schedule to bf16 as the bf16 CUDA reference run does (spec §4.2).
    #[serde(default)]
    bf16_timesteps: bool,
    /// One seed per batch item; needed for seeded SDE noise. A negative seed means "random"
    /// (as in the official handler) and is resolved once, at creation (see `info`).
    seeds: Option<Vec<i64>>,
    /// Noise options of the SDE draws, as `ace_noise_fill` takes them
    /// (`{"mode": "torch_cpu"|"torch_cuda", ...}`); default: torch CPU noise.
    noise: Option<serde_json::Value>,
    /// Cover tasks: start from t* = the schedule entry nearest 1 − strength, x = t*·noise +
    /// (1 − t*)·src, and run only the schedule from t* on (spec §4.1). 0 (default) = off.
    cover_noise_strength: Option<f64>,
    /// Cover tasks: steps i < int(N·strength) use the cover condition, later ones the non-cover
    /// condition (spec §4.1). Default 1 (never switch).
    audio_cover_strength: Option<f64>,
}

/// What one step does to x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// x ← x − v·dt.
    Ode { dt: f32 },
    /// x ← r·ε + (1 − r)·(x − v·t), r = `renoise_t`.
    Sde { renoise_t: f64 },
    /// x0 = x − v·t (last step).
    FinalX0,
}

/// Everything a host needs for step i, and what `step` will do.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInputs {
    pub step: usize,
    /// The schedule value of this step, as the model dtype holds it (f32, or bf16 when
    /// `bf16_timesteps`).
    pub t: f64,
    /// The next schedule value (0 after the last entry).
    pub t_next: f64,
    /// t − t_next in the model dtype; on the last step the x0 jump is the same as dt = t.
    pub dt: f32,
    pub is_last: bool,
    /// The value to feed the DiT as both `timestep` and `timestep_r`.
    pub timestep_input: f32,
    pub update: Update,
    /// Whether the host feeds the cover condition (i < int(N·audio_cover_strength)) or switches to
    /// the non-cover one (silence context + default instruction).
    pub cover_condition: bool,
}

/// A resolved schedule plus update rule for one generation.
#[derive(Debug, Clone)]
pub struct SchedulerContext {
    model: ModelKind,
    method: Method,
    shift_requested: f64,
    /// Turbo: the snapped shift (None with custom timesteps); base/SFT: the shift.
    shift_used: Option<f64>,
    /// Base/SFT step count (for the SDE renoise quirk).
    base_steps: Option<usize>,
    /// The exact f64 schedule, before rounding to the model dtype.
    exact: Vec<f64>,
    /// The schedule as the model dtype holds it (f32 or bf16 values), stored in f64.
    effective: Vec<f64>,
    bf16: bool,
    seeds: Option<Vec<u64>>,
    /// The noise options as given (null → the default mode).
    noise_json: Option<serde_json::Value>,
    noise_mode: NoiseMode,
    notes: Vec<String>,
    /// t* of the cover start when cover_noise_strength > 0 (model dtype value).
    cover_start_t: Option<f64>,
    /// Steps i < cover_steps use the cover condition.
    cover_steps: usize,
}

fn shape_btc(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() != 3 {
        return Err(Error::invalid_argument(format!(
            "latents must have shape [B, T, C] (3 dimensions), got {} dimensions {shape:?}",
            shape.len()
        )));
    }
    let numel = crate::shape::numel(shape, "latents")?;
    Ok((shape[0], numel))
}

impl SchedulerContext {
    /// Parses and resolves a JSON configuration (see the module documentation).
    pub fn from_json(config_json: &str) -> Result<Self> {
        let cfg: ContextConfig = parse_config(config_json)?;
        Self::from_config(cfg)
    }

    fn from_config(cfg: ContextConfig) -> Result<Self> {
        let mut notes = Vec::new();
        let resolved = resolve_schedule(&cfg, &mut notes)?;
        let (exact, shift_requested, shift_used, base_steps) = resolved;
        let (mut exact, mut base_steps) = (exact, base_steps);
        let mut effective: Vec<f64> = exact
            .iter()
            .map(|&t| if cfg.bf16_timesteps { schedule::bf16_timestep(t) } else { t as f32 as f64 })
            .collect();
        let cover_noise =
            check_strength(cfg.cover_noise_strength, "cover_noise_strength", 0.0, Some(1.0))?;
        let mut cover_start_t = None;
        if cover_noise > 0.0 {
            // The reference picks the nearest entry of the model-dtype schedule (ties → first)
            // and truncates the schedule there; base/SFT then count steps from the new length.
            let level = 1.0 - cover_noise;
            let start = nearest_index(&effective, level);
            notes.push(format!(
                "cover_noise_strength {cover_noise}: starting at t = {} (step {start} of {}), {} steps remain",
                effective[start],
                effective.len(),
                effective.len() - start
            ));
            exact.drain(..start);
            effective.drain(..start);
            if base_steps.is_some() {
                base_steps = Some(effective.len());
            }
            cover_start_t = Some(effective[0]);
        }
        let audio_cover =
            check_strength(cfg.audio_cover_strength, "audio_cover_strength", 1.0, None)?;
        // int() of a non-negative product: truncation.
        let cover_steps = (effective.len() as f64 * audio_cover).floor() as usize;
        let seeds: Option<Vec<u64>> = cfg
            .seeds
            .as_ref()
            .map(|requested| requested.iter().map(|&s| noise::resolve_seed(s)).collect());
        if let (Some(requested), Some(resolved)) = (&cfg.seeds, &seeds) {
            if requested.iter().any(|&s| s < 0) {
                notes.push(format!("negative seeds were replaced by random ones: {resolved:?}"));
            }
        }
        let noise_mode = match &cfg.noise {
            None => NoiseMode::default(),
            Some(v) => NoiseMode::from_json(Some(&v.to_string()))?,
        };
        if let Some(seeds) = &seeds {
            if seeds.is_empty() {
                return Err(Error::invalid_argument(
                    "seeds is empty; give one seed per batch item",
                ));
            }
            crate::limits::ensure_at_most(seeds.len(), crate::limits::MAX_BATCH, "the number of seeds")?;
            // s + i + 1 must not overflow for any step.
            let max_offset = exact.len() as u64;
            if let Some(b) = seeds.iter().position(|&s| s.checked_add(max_offset).is_none()) {
                return Err(Error::invalid_argument(format!(
                    "seeds[{b}] = {} is too large: step seeds s + i + 1 would overflow u64",
                    seeds[b]
                )));
            }
        }
        Ok(Self {
            model: cfg.model,
            method: cfg.method,
            shift_requested,
            shift_used,
            base_steps,
            exact,
            effective,
            bf16: cfg.bf16_timesteps,
            seeds,
            noise_json: cfg.noise,
            noise_mode,
            notes,
            cover_start_t,
            cover_steps,
        })
    }

    pub fn num_steps(&self) -> usize {
        self.effective.len()
    }

    /// The schedule as the model sees it (f32, or bf16 values when configured).
    pub fn timesteps_f32(&self) -> Vec<f32> {
        schedule::to_f32(&self.effective)
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The shift the schedule was built with (turbo: snapped to 1, 2 or 3); `None` with custom
    /// timesteps.
    pub fn shift_used(&self) -> Option<f64> {
        self.shift_used
    }

    fn check_step(&self, step: usize) -> Result<()> {
        if step >= self.num_steps() {
            return Err(Error::invalid_argument(format!(
                "step_index {step} is out of range: the schedule has {} steps (0..={})",
                self.num_steps(),
                self.num_steps() - 1
            )));
        }
        Ok(())
    }

    fn round_model_dtype(&self, x: f64) -> f32 {
        if self.bf16 {
            schedule::round_bf16(x as f32)
        } else {
            x as f32
        }
    }

    /// What step `step` feeds the DiT and what update it applies.
    pub fn step_inputs(&self, step: usize) -> Result<StepInputs> {
        self.check_step(step)?;
        let n = self.num_steps();
        let t = self.effective[step];
        let is_last = step + 1 == n;
        let t_next = if is_last { 0.0 } else { self.effective[step + 1] };
        // The reference forms dt from the two model-dtype values in f64, then casts it to the
        // model dtype.
        let dt = self.round_model_dtype(t - t_next);
        let update = if is_last {
            Update::FinalX0
        } else {
            match self.method {
                Method::Ode => Update::Ode { dt },
                Method::Sde => Update::Sde {
                    renoise_t: match self.base_steps {
                        Some(steps) => schedule::base_sde_renoise_target(step, steps),
                        None => t_next,
                    },
                },
            }
        };
        Ok(StepInputs {
            step,
            t,
            t_next,
            dt,
            is_last,
            timestep_input: t as f32,
            update,
            cover_condition: step < self.cover_steps,
        })
    }

    /// The seeds of step `step`'s SDE draws, one per batch item (s_b + step + 1).
    pub fn step_seeds(&self, step: usize) -> Option<Vec<u64>> {
        self.seeds.as_ref().map(|s| s.iter().map(|&seed| seed + step as u64 + 1).collect())
    }

    /// `step_inputs` as JSON.
    pub fn step_inputs_json(&self, step: usize) -> Result<String> {
        let s = self.step_inputs(step)?;
        let mut obj = serde_json::json!({
            "step": s.step,
            "num_steps": self.num_steps(),
            "t": s.t,
            "t_next": s.t_next,
            "dt": s.dt,
            "is_last": s.is_last,
            "timestep_input": s.timestep_input,
            "cover_condition": s.cover_condition,
        });
        let (update, extra) = match s.update {
            Update::Ode { .. } => ("ode", None),
            Update::FinalX0 => ("x0", None),
            Update::Sde { renoise_t } => ("sde", Some(renoise_t)),
        };
        obj["update"] = update.into();
        if let Some(r) = extra {
            obj["renoise_t"] = r.into();
            obj["noise_seeds"] = serde_json::json!(self.step_seeds(step));
        }
        Ok(obj.to_string())
    }

    /// The resolved configuration as JSON (schedule, shifts, notes about ignored/adjusted input).
    pub fn info_json(&self) -> String {
        serde_json::json!({
            "model": self.model.name(),
            "method": self.method.name(),
            "shift_requested": self.shift_requested,
            "shift_used": self.shift_used,
            "num_steps": self.num_steps(),
            "timesteps": self.timesteps_f32(),
            "timesteps_exact": self.exact,
            "bf16_timesteps": self.bf16,
            "seeds": self.seeds,
            "noise": self.noise_json,
            "notes": self.notes,
            "cover_start_t": self.cover_start_t,
            "cover_steps": self.cover_steps,
        })
        .to_string()
    }

    /// The starting latents: `noise`, or with cover_noise_strength > 0, t*·noise + (1 − t*)·src
    /// (the reference's `renoise(src, t*, noise)`). `src` is required only in that case.
    pub fn initial_latents(
        &self,
        noise: &[f32],
        src: Option<&[f32]>,
        shape: &[usize],
        out: &mut [f32],
    ) -> Result<()> {
        let (_, numel) = shape_btc(shape)?;
        for (name, len) in [("noise", noise.len()), ("out", out.len())] {
            if len != numel {
                return Err(Error::length_mismatch(format!(
                    "{name} has {len} elements but its shape needs {numel}"
                )));
            }
        }
        crate::error::ensure_finite(noise, "noise")?;
        match self.cover_start_t {
            None => {
                out.copy_from_slice(noise);
                Ok(())
            }
            Some(t) => {
                let src = src.ok_or_else(|| {
                    Error::invalid_argument(
                        "src is required: the context has cover_noise_strength > 0",
                    )
                })?;
                if src.len() != numel {
                    return Err(Error::length_mismatch(format!(
                        "src has {} elements but its shape needs {numel}",
                        src.len()
                    )));
                }
                crate::error::ensure_finite(src, "src")?;
                solver::renoise(src, noise, t, out);
                crate::error::ensure_finite_result(out, "out")
            }
        }
    }

    /// Applies step `step` to x (`shape` = [B, T, C]); ε for SDE steps is drawn from the seeds.
    pub fn step(
        &self,
        step: usize,
        x: &[f32],
        v: &[f32],
        shape: &[usize],
        out: &mut [f32],
    ) -> Result<()> {
        let plan = self.step_inputs(step)?;
        let (batch, numel) = shape_btc(shape)?;
        check_lengths(numel, x.len(), v.len(), out.len())?;
        match plan.update {
            Update::Sde { renoise_t } => {
                crate::error::ensure_finite(x, "xt")?;
                crate::error::ensure_finite(v, "vt")?;
                let eps = self.draw_step_noise(step, batch, numel)?;
                solver::sde_step(x, v, plan.t, renoise_t, &eps, out)
            }
            _ => self.apply_deterministic(&plan, x, v, out),
        }
    }

    /// Like [`step`](Self::step), with the caller's ε (same length as x) for SDE steps. ε is
    /// ignored (but still checked) on ODE and final steps.
    pub fn step_with_noise(
        &self,
        step: usize,
        x: &[f32],
        v: &[f32],
        eps: &[f32],
        shape: &[usize],
        out: &mut [f32],
    ) -> Result<()> {
        let plan = self.step_inputs(step)?;
        let (_, numel) = shape_btc(shape)?;
        check_lengths(numel, x.len(), v.len(), out.len())?;
        if eps.len() != numel {
            return Err(Error::length_mismatch(format!(
                "eps has {} elements but the shape {shape:?} needs {numel}",
                eps.len()
            )));
        }
        crate::error::ensure_finite(eps, "eps")?;
        match plan.update {
            Update::Sde { renoise_t } => solver::sde_step(x, v, plan.t, renoise_t, eps, out),
            _ => self.apply_deterministic(&plan, x, v, out),
        }
    }

    fn apply_deterministic(
        &self,
        plan: &StepInputs,
        x: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        match plan.update {
            Update::FinalX0 => solver::x0_from_velocity(x, v, plan.t, out),
            Update::Ode { dt } => solver::euler_step(x, v, dt, out),
            Update::Sde { .. } => unreachable!("SDE steps are handled by the callers"),
        }
    }

    /// The ε of SDE step `step` for a [B, T, C] batch: item b from seed s_b + step + 1.
    fn draw_step_noise(&self, step: usize, batch: usize, numel: usize) -> Result<Vec<f32>> {
        let seeds = self.step_seeds(step).ok_or_else(|| {
            Error::invalid_state(
                "this SDE step needs noise: give \"seeds\" (one per batch item) in the context config, \
                 or pass eps with ace_scheduler_step_with_noise",
            )
        })?;
        if seeds.len() != batch {
            return Err(Error::invalid_argument(format!(
                "the context has {} seeds but the latents have batch size {batch}",
                seeds.len()
            )));
        }
        solver::batch_noise(&self.noise_mode, &seeds, numel)
    }
}

/// Parses the config; the strict reader's errors name the offending key.
fn parse_config(text: &str) -> Result<ContextConfig> {
    parse_json(text, "context config")
}

/// The schedule a config asks for: (exact f64 schedule, requested shift, shift used, base/SFT
/// step count). Adjustments the user should know about go to `notes`.
fn resolve_schedule(
    cfg: &ContextConfig,
    notes: &mut Vec<String>,
) -> Result<(Vec<f64>, f64, Option<f64>, Option<usize>)> {
    Ok(match cfg.model {
        ModelKind::Turbo => {
            let shift = cfg.shift.unwrap_or(3.0);
            if let Some(steps) = cfg.steps {
                notes.push(format!(
                    "steps={steps} is ignored: the turbo model runs its fixed 8-entry schedule \
                     (or the custom timesteps)"
                ));
            }
            match &cfg.timesteps {
                Some(ts) => {
                    let sched = schedule::custom_turbo_schedule(ts, shift)?;
                    let trimmed = ts.iter().rposition(|&t| t != 0.0).map_or(0, |p| p + 1);
                    if trimmed == 0 {
                        let s = schedule::nearest_turbo_shift(shift)?;
                        notes.push(format!(
                            "timesteps has no non-zero value; using the shift schedule (shift {s})"
                        ));
                        (sched, shift, Some(s), None)
                    } else {
                        if trimmed > schedule::MAX_CUSTOM_TIMESTEPS {
                            notes.push(format!(
                                "timesteps has {trimmed} values; only the first {} are used",
                                schedule::MAX_CUSTOM_TIMESTEPS
                            ));
                        }
                        if ts[..trimmed.min(schedule::MAX_CUSTOM_TIMESTEPS)] != sched[..] {
                            notes.push(
                                "timesteps were snapped to the nearest valid turbo timesteps"
                                    .into(),
                            );
                        }
                        (sched, shift, None, None)
                    }
                }
                None => {
                    let s = schedule::nearest_turbo_shift(shift)?;
                    if s != shift {
                        notes.push(format!("shift {shift} is not a turbo shift; using {s}"));
                    }
                    (schedule::turbo_schedule(shift)?, shift, Some(s), None)
                }
            }
        }
        ModelKind::Base | ModelKind::Sft => {
            if cfg.timesteps.is_some() {
                return Err(Error::invalid_argument(format!(
                    "timesteps is only supported for the turbo model, not {}",
                    cfg.model.name()
                )));
            }
            let steps = cfg.steps.ok_or_else(|| {
                Error::invalid_argument(format!(
                    "steps is required for the {} model (e.g. 32-64)",
                    cfg.model.name()
                ))
            })?;
            let shift = cfg.shift.unwrap_or(1.0);
            (schedule::base_schedule(steps, shift)?, shift, Some(shift), Some(steps))
        }
    })
}

/// Validates an optional strength in [0, max] (max None: unbounded), returning the default if absent.
fn check_strength(value: Option<f64>, name: &str, default: f64, max: Option<f64>) -> Result<f64> {
    let v = value.unwrap_or(default);
    let in_range = v.is_finite() && v >= 0.0 && max.is_none_or(|m| v <= m);
    if !in_range {
        let range = max.map_or("[0, inf)".to_string(), |m| format!("[0, {m}]"));
        return Err(Error::invalid_argument(format!("{name} must be within {range}, got {v}")));
    }
    Ok(v)
}

/// Index of the first entry with the smallest |x − target| (Python's `min(..., key=...)`).
fn nearest_index(values: &[f64], target: f64) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate().skip(1) {
        if (v - target).abs() < (values[best] - target).abs() {
            best = i;
        }
    }
    best
}

fn check_lengths(numel: usize, x: usize, v: usize, out: usize) -> Result<()> {
    for (name, len) in [("xt", x), ("vt", v), ("out", out)] {
        if len != numel {
            return Err(Error::length_mismatch(format!(
                "{name} has {len} elements but its shape needs {numel}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turbo_defaults_and_notes() {
        let c = SchedulerContext::from_json(r#"{"model": "turbo", "steps": 30, "shift": 2.7}"#)
            .unwrap();
        assert_eq!(c.num_steps(), 8);
        assert_eq!(c.timesteps_f32()[1], (3.0f64 * 0.875 / (1.0 + 2.0 * 0.875)) as f32);
        assert_eq!(c.notes().len(), 2);
        let last = c.step_inputs(7).unwrap();
        assert!(last.is_last && last.update == Update::FinalX0 && last.t_next == 0.0);
    }

    #[test]
    fn base_sde_uses_the_unshifted_renoise_level() {
        let c = SchedulerContext::from_json(
            r#"{"model": "base", "steps": 4, "shift": 3.0, "method": "sde", "seeds": [7]}"#,
        )
        .unwrap();
        let s = c.step_inputs(0).unwrap();
        assert_eq!(s.update, Update::Sde { renoise_t: 0.75 });
        assert!((s.t_next - 0.9).abs() < 1e-6);
        assert_eq!(c.step_seeds(2), Some(vec![10]));
    }

    #[test]
    fn config_errors_name_the_problem() {
        let err = |j: &str| SchedulerContext::from_json(j).unwrap_err().message;
        assert!(err(r#"{"model": "turbo", "bogus": 1}"#).contains("bogus"));
        assert!(err(r#"{"model": "nope"}"#).contains("nope"));
        assert!(err(r#"{"model": "base"}"#).contains("steps is required"));
        assert!(err(r#"{"model": "base", "steps": 0}"#).contains("steps"));
        assert!(err(r#"{"model": "turbo", "shift": 0}"#).contains("shift"));
        assert!(err(r#"{"model": "sft", "steps": 8, "timesteps": [0.5]}"#).contains("turbo"));
        assert!(err(r#"{"model": "turbo", "method": "heun"}"#).contains("heun"));
        assert!(err("{").contains("context config"));
    }

    #[test]
    fn sde_noise_comes_from_seed_plus_step_plus_one() {
        let c = SchedulerContext::from_json(
            r#"{"model": "turbo", "method": "sde", "seeds": [5, 900]}"#,
        )
        .unwrap();
        let shape = [2usize, 3, 4];
        let x: Vec<f32> = (0..24).map(|i| i as f32 * 0.1 - 1.0).collect();
        let v: Vec<f32> = (0..24).map(|i| 0.5 - i as f32 * 0.05).collect();
        let mut out = vec![0.0f32; 24];
        c.step(2, &x, &v, &shape, &mut out).unwrap();
        let mut eps = noise::randn(&NoiseMode::default(), 5 + 3, 12).unwrap();
        eps.extend(noise::randn(&NoiseMode::default(), 900 + 3, 12).unwrap());
        let mut want = vec![0.0f32; 24];
        let s = c.step_inputs(2).unwrap();
        solver::sde_step(&x, &v, s.t, s.t_next, &eps, &mut want).unwrap();
        assert_eq!(out, want);
        // wrong batch size for the seeds
        assert!(c
            .step(2, &x, &v, &[1, 6, 4], &mut out)
            .unwrap_err()
            .message
            .contains("batch size"));
        // the last step ignores the noise: x0
        c.step(7, &x, &v, &shape, &mut out).unwrap();
        let mut x0 = vec![0.0f32; 24];
        solver::x0_from_velocity(&x, &v, c.step_inputs(7).unwrap().t, &mut x0).unwrap();
        assert_eq!(out, x0);
        let no_seeds =
            SchedulerContext::from_json(r#"{"model": "turbo", "method": "sde"}"#).unwrap();
        assert!(no_seeds.step(0, &x, &v, &shape, &mut out).unwrap_err().message.contains("seeds"));
        assert!(
            SchedulerContext::from_json(r#"{"model": "turbo", "noise": {"mode": "x"}}"#).is_err()
        );
    }

    #[test]
    fn cover_noise_truncates_and_recounts_base_steps() {
        let c = SchedulerContext::from_json(
            r#"{"model": "turbo", "cover_noise_strength": 0.3, "audio_cover_strength": 0.5}"#,
        )
        .unwrap();
        // 1 − 0.3 = 0.7 → nearest of the shift-3 list is 0.75 (index 4)
        assert_eq!(c.timesteps_f32(), vec![0.75, 0.64285713, 0.5, 0.3]);
        assert_eq!(c.cover_steps, 2);
        assert!(
            c.step_inputs(1).unwrap().cover_condition && !c.step_inputs(2).unwrap().cover_condition
        );
        let noise = [1.0f32, 2.0];
        let src = [3.0f32, 5.0];
        let mut out = [0.0f32; 2];
        c.initial_latents(&noise, Some(&src), &[1, 1, 2], &mut out).unwrap();
        assert_eq!(out, [0.75 + 0.25 * 3.0, 1.5 + 0.25 * 5.0]);
        assert!(c.initial_latents(&noise, None, &[1, 1, 2], &mut out).is_err());
        let b = SchedulerContext::from_json(
            r#"{"model": "base", "steps": 10, "method": "sde", "cover_noise_strength": 0.5}"#,
        )
        .unwrap();
        assert_eq!(b.num_steps(), 5);
        assert_eq!(b.step_inputs(0).unwrap().update, Update::Sde { renoise_t: 0.8 });
        assert!(SchedulerContext::from_json(r#"{"model": "turbo", "cover_noise_strength": 1.5}"#)
            .is_err());
        assert!(SchedulerContext::from_json(r#"{"model": "turbo", "audio_cover_strength": -1}"#)
            .is_err());
    }

    #[test]
    fn step_index_and_shape_checks() {
        let c = SchedulerContext::from_json(r#"{"model": "turbo"}"#).unwrap();
        assert!(c.step_inputs(8).unwrap_err().message.contains("out of range"));
        let x = vec![0.0f32; 6];
        let mut out = vec![0.0f32; 6];
        assert!(c.step(0, &x, &x, &[1, 2, 3], &mut out).is_ok());
        assert!(c.step(0, &x, &x, &[2, 3], &mut out).is_err());
        assert!(c.step(0, &x, &x, &[1, 2, 2], &mut out).is_err());
        let mut bad = x.clone();
        bad[3] = f32::INFINITY;
        assert!(c.step(0, &x, &bad, &[1, 2, 3], &mut out).is_err());
    }
}
