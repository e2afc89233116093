//! Classifier-free guidance for the DiT velocity: plain CFG, APG (adaptive projected guidance, the
//! base/SFT default, with its momentum state), CFG-Zero* (ACE-Step v1), and the rules that say on
//! which steps guidance applies at all.
//!
//! Buffers are float32 `[B, T, C]`, row-major (C fastest). Elementwise arithmetic is float32 in the
//! same operation order as the official torch code, so results match an fp32 reference to rounding;
//! reductions (norms, dot products) accumulate in float64, which is what the spec asks for the APG
//! projection and is at least as accurate as torch's float32 reductions elsewhere.

use serde::Deserialize;

use crate::error::{Error, Result};

/// Shape of a guidance buffer: `batch` items of `frames` × `channels` floats, channels fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub frames: usize,
    pub channels: usize,
}

impl Shape {
    /// Builds a shape, rejecting zero dimensions and sizes that overflow.
    pub fn new(batch: usize, frames: usize, channels: usize) -> Result<Self> {
        for (name, v) in [("batch", batch), ("frames", frames), ("channels", channels)] {
            if v == 0 {
                return Err(Error::length_mismatch(format!("shape dimension {name} is 0")));
            }
        }
        batch
            .checked_mul(frames)
            .and_then(|n| n.checked_mul(channels))
            .ok_or_else(|| {
                Error::length_mismatch(format!("shape [{batch}, {frames}, {channels}] overflows"))
            })?;
        Ok(Self { batch, frames, channels })
    }

    /// The guidance shape of a v1 latent `[batch, channels, height, frames]` (`[B, 8, 16, T]`):
    /// v1 normalises per (batch, channel) over the last two axes (spec §7), which is this type's
    /// "per (b, c) over frames" with `batch·channels` items of `height·frames` values and one
    /// channel.
    pub fn v1_latent(batch: usize, channels: usize, height: usize, frames: usize) -> Result<Self> {
        let items = batch.checked_mul(channels);
        let len = height.checked_mul(frames);
        match (items, len) {
            (Some(items), Some(len)) => Self::new(items, len, 1),
            _ => Err(Error::length_mismatch(format!(
                "v1 latent shape [{batch}, {channels}, {height}, {frames}] overflows"
            ))),
        }
    }

    pub fn numel(&self) -> usize {
        self.batch * self.frames * self.channels
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}, {}]", self.batch, self.frames, self.channels)
    }
}

fn ensure_scalar(value: f64, name: &str) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid_argument(format!("{name} must be finite, got {value}")));
    }
    Ok(())
}

fn ensure_lengths(cond: &[f32], uncond: &[f32], out: &[f32], expected: usize) -> Result<()> {
    for (name, len) in [("cond", cond.len()), ("uncond", uncond.len()), ("out", out.len())] {
        if len != expected {
            return Err(Error::length_mismatch(format!(
                "{name} has {len} elements but the shape needs {expected}"
            )));
        }
    }
    if expected == 0 {
        return Err(Error::length_mismatch("guidance buffers are empty"));
    }
    Ok(())
}

/// Finds the first non-finite value of `cond` or `uncond`; called only after a fast check failed,
/// so the common path pays for no extra pass.
fn non_finite_error(cond: &[f32], uncond: &[f32]) -> Error {
    for (name, buf) in [("cond", cond), ("uncond", uncond)] {
        if let Some(i) = buf.iter().position(|v| !v.is_finite()) {
            return Error::invalid_argument(format!(
                "{name} contains a non-finite value ({}) at index {i}",
                buf[i]
            ));
        }
    }
    Error::invalid_argument("cond - uncond overflows float32 (both inputs are finite but too large)")
}

/// Plain CFG: `out = uncond + g·(cond − uncond)` (official `cfg_forward`; `g` is used as float32,
/// as torch does when it multiplies a float32 tensor by a Python float).
pub fn cfg(cond: &[f32], uncond: &[f32], out: &mut [f32], guidance_scale: f64) -> Result<()> {
    ensure_scalar(guidance_scale, "guidance_scale")?;
    ensure_lengths(cond, uncond, out, cond.len())?;
    let g = guidance_scale as f32;
    // Finiteness rides along in the same pass: any NaN/Inf in cond or uncond (or an overflow)
    // makes the result non-finite, so checking the result is enough. An all-ones exponent marks
    // NaN/Inf; OR-ing integer flags keeps the loop vectorisable.
    let mut bad = 0u32;
    for ((o, &c), &u) in out.iter_mut().zip(cond).zip(uncond) {
        let v = u + g * (c - u);
        bad |= ((v.to_bits() & 0x7f80_0000) == 0x7f80_0000) as u32;
        *o = v;
    }
    if bad != 0 {
        out.fill(0.0);
        return Err(non_finite_or_overflow(cond, uncond, "uncond + g·(cond − uncond)"));
    }
    Ok(())
}

fn non_finite_or_overflow(cond: &[f32], uncond: &[f32], what: &str) -> Error {
    let err = non_finite_error(cond, uncond);
    if err.message.starts_with("cond - uncond") {
        return Error::invalid_argument(format!("{what} overflows float32 for these inputs"));
    }
    err
}

/// CFG-Zero* (ACE-Step v1 `cfg_zero_star`): per batch item, α = ⟨cond, uncond⟩ / (‖uncond‖² + 1e-8)
/// over all of that item's T·C values; `out = uncond·α + g·(cond − uncond·α)`. When `use_zero_init`
/// and `step <= zero_steps` the output is zero instead (official rule `i <= zero_steps`: with the
/// default `zero_steps = 1` that zeroes steps 0 AND 1).
#[allow(clippy::too_many_arguments)]
pub fn cfg_zero_star(
    cond: &[f32],
    uncond: &[f32],
    out: &mut [f32],
    batch: usize,
    guidance_scale: f64,
    step: u32,
    zero_steps: u32,
    use_zero_init: bool,
) -> Result<()> {
    ensure_scalar(guidance_scale, "guidance_scale")?;
    if batch == 0 {
        return Err(Error::length_mismatch("batch is 0"));
    }
    ensure_lengths(cond, uncond, out, cond.len())?;
    if cond.len() % batch != 0 {
        return Err(Error::length_mismatch(format!(
            "buffers have {} elements, which is not a multiple of batch {batch}",
            cond.len()
        )));
    }
    let item = cond.len() / batch;
    let g = guidance_scale as f32;
    let zero = use_zero_init && step <= zero_steps;
    for b in 0..batch {
        let c = &cond[b * item..(b + 1) * item];
        let u = &uncond[b * item..(b + 1) * item];
        let o = &mut out[b * item..(b + 1) * item];
        let (mut dot, mut sq) = (0.0f64, 0.0f64);
        for (&cv, &uv) in c.iter().zip(u) {
            dot += cv as f64 * uv as f64;
            sq += uv as f64 * uv as f64;
        }
        if !dot.is_finite() || !sq.is_finite() {
            return Err(non_finite_error(cond, uncond));
        }
        // torch reduces in float32 and adds the 1e-8 in float32.
        let alpha = (dot as f32) / ((sq as f32) + 1e-8f32);
        if zero {
            for (ov, &cv) in o.iter_mut().zip(c) {
                *ov = cv * 0.0;
            }
        } else {
            let mut bad = 0u32;
            for ((ov, &cv), &uv) in o.iter_mut().zip(c).zip(u) {
                let ua = uv * alpha;
                let v = ua + g * (cv - ua);
                bad |= ((v.to_bits() & 0x7f80_0000) == 0x7f80_0000) as u32;
                *ov = v;
            }
            if bad != 0 {
                return Err(Error::invalid_argument(format!(
                    "CFG-Zero* result overflows float32 for batch item {b}"
                )));
            }
        }
    }
    Ok(())
}

/// Base/SFT rule (official `generate_audio`): guidance applies when `start <= t <= end`, both ends
/// inclusive. torch compares the float32 timestep with the Python floats cast to float32, so the
/// comparison is done in float32 here too. Defaults in the official code: start 0, end 1.
pub fn cfg_interval_active(t: f32, start: f32, end: f32) -> Result<bool> {
    for (name, v) in [("t", t), ("cfg_interval_start", start), ("cfg_interval_end", end)] {
        if !v.is_finite() {
            return Err(Error::invalid_argument(format!("{name} must be finite, got {v}")));
        }
    }
    Ok(t >= start && t <= end)
}

/// ACE-Step v1 guidance interval (official `pipeline_ace_step.py`): guidance runs on steps
/// `start <= i < end` with `start = int(N·(1 − gi)/2)` and `end = int(N·(gi/2 + 0.5))`, computed in
/// float64 and truncated like Python's `int()`. With the default `gi = 0.5` this is
/// `[int(0.25·N), int(0.75·N))`.
pub fn v1_guidance_interval(num_steps: u32, guidance_interval: f64) -> Result<(u32, u32)> {
    if num_steps == 0 {
        return Err(Error::invalid_argument("num_steps must be at least 1, got 0"));
    }
    if !(0.0..=1.0).contains(&guidance_interval) {
        return Err(Error::invalid_argument(format!(
            "guidance_interval must be in [0, 1], got {guidance_interval}"
        )));
    }
    let n = num_steps as f64;
    let start = (n * ((1.0 - guidance_interval) / 2.0)).trunc() as u32;
    let end = (n * (guidance_interval / 2.0 + 0.5)).trunc() as u32;
    Ok((start, end))
}

/// Whether v1 applies guidance at `step` (0-based) of `num_steps`; see [`v1_guidance_interval`].
pub fn v1_step_active(step: u32, num_steps: u32, guidance_interval: f64) -> Result<bool> {
    let (start, end) = v1_guidance_interval(num_steps, guidance_interval)?;
    if step >= num_steps {
        return Err(Error::invalid_argument(format!(
            "step {step} is out of range for num_steps {num_steps} (steps are 0..{num_steps})"
        )));
    }
    Ok(start <= step && step < end)
}

/// Whether v1 runs the double-condition guidance (official `do_double_condition_guidance`): both
/// the text and the lyric scale must exceed 1. It then replaces APG/CFG/CFG-Zero* on guided steps.
pub fn v1_double_condition_active(guidance_scale_text: f64, guidance_scale_lyric: f64) -> bool {
    guidance_scale_text > 1.0 && guidance_scale_lyric > 1.0
}

/// ACE-Step v1 double-condition guidance (official `cfg_double_condition_forward`):
/// `out = (1 − g_t)·uncond + (g_t − g_l)·text_only + g_l·cond`, where `text_only` is the decode
/// with the text-only condition (lyric ids 0). The scalar coefficients are formed in float64 and
/// used as float32, and the three products are summed left to right, as torch does.
pub fn cfg_double_condition(
    cond: &[f32],
    text_only: &[f32],
    uncond: &[f32],
    out: &mut [f32],
    guidance_scale_text: f64,
    guidance_scale_lyric: f64,
) -> Result<()> {
    ensure_scalar(guidance_scale_text, "guidance_scale_text")?;
    ensure_scalar(guidance_scale_lyric, "guidance_scale_lyric")?;
    ensure_lengths(cond, uncond, out, cond.len())?;
    if text_only.len() != cond.len() {
        return Err(Error::length_mismatch(format!(
            "text_only has {} elements but cond has {}",
            text_only.len(),
            cond.len()
        )));
    }
    let a = (1.0 - guidance_scale_text) as f32;
    let b = (guidance_scale_text - guidance_scale_lyric) as f32;
    let c = guidance_scale_lyric as f32;
    let mut bad = 0u32;
    for (((o, &cv), &tv), &uv) in out.iter_mut().zip(cond).zip(text_only).zip(uncond) {
        let v = a * uv + b * tv + c * cv;
        bad |= ((v.to_bits() & 0x7f80_0000) == 0x7f80_0000) as u32;
        *o = v;
    }
    if bad != 0 {
        out.fill(0.0);
        for (name, buf) in [("cond", cond), ("text_only", text_only), ("uncond", uncond)] {
            if let Some(i) = buf.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid_argument(format!(
                    "{name} contains a non-finite value ({}) at index {i}",
                    buf[i]
                )));
            }
        }
        return Err(Error::invalid_argument(
            "the double-condition guidance result overflows float32 for these inputs",
        ));
    }
    Ok(())
}

/// The guidance of one v1 model call: whether it is guided and with which scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V1CallGuidance {
    /// Run the unconditional (and, for double-condition guidance, the text-only) decode and
    /// combine; otherwise the conditional decode alone gives the velocity.
    pub active: bool,
    /// The scale for this call (`guidance_scale` unless the interval decay lowers it); 0 when not
    /// active.
    pub guidance_scale: f64,
}

/// The v1 guidance of model call `call` (0-based loop index of the official pipeline).
///
/// The interval is computed from `num_steps` = N ([`v1_guidance_interval`]) whatever the sampler:
/// Heun makes 2N − 1 calls and the official loop index runs over all of them, so only the calls
/// with `start <= call < end` are guided (roughly the first half of the Heun trajectory; spec §7).
/// Guidance is off altogether when `guidance_scale` is 0 or 1 (official `do_classifier_free_guidance`).
/// With `decay > 0` the scale falls linearly over the interval (official `guidance_interval_decay`):
/// `g − (g − min_guidance_scale)·((call − start)/(end − start − 1))·decay`; the official code divides
/// by zero for a one-step interval, which is an error here.
pub fn v1_call_guidance(
    call: u32,
    num_steps: u32,
    guidance_interval: f64,
    guidance_scale: f64,
    min_guidance_scale: f64,
    decay: f64,
) -> Result<V1CallGuidance> {
    ensure_scalar(guidance_scale, "guidance_scale")?;
    ensure_scalar(min_guidance_scale, "min_guidance_scale")?;
    ensure_scalar(decay, "guidance_interval_decay")?;
    let (start, end) = v1_guidance_interval(num_steps, guidance_interval)?;
    let calls = 2 * num_steps as u64 - 1;
    if call as u64 >= calls {
        return Err(Error::invalid_argument(format!(
            "call {call} is out of range: {num_steps} steps make at most {calls} model calls (Heun)"
        )));
    }
    let cfg_on = guidance_scale != 0.0 && guidance_scale != 1.0;
    if !cfg_on || call < start || call >= end {
        return Ok(V1CallGuidance { active: false, guidance_scale: 0.0 });
    }
    let mut g = guidance_scale;
    if decay > 0.0 {
        let span = end - start - 1;
        if span == 0 {
            return Err(Error::invalid_argument(format!(
                "guidance_interval_decay needs a guidance interval of at least 2 steps, but \
                 num_steps {num_steps} with guidance_interval {guidance_interval} gives [{start}, {end})"
            )));
        }
        let progress = (call - start) as f64 / span as f64;
        g = guidance_scale - (guidance_scale - min_guidance_scale) * progress * decay;
    }
    Ok(V1CallGuidance { active: true, guidance_scale: g })
}

/// APG settings (official `apg_forward` defaults). Parsed from JSON; every key is optional.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApgConfig {
    /// Momentum of the running difference: `running = d + momentum·running`. Official −0.75.
    pub momentum: f64,
    /// L2 norm clip of the (running) difference per (b, c) over T; `<= 0` disables. Official 2.5.
    pub norm_threshold: f64,
    /// Weight of the component parallel to `cond`. Official 0.
    pub eta: f64,
}

impl Default for ApgConfig {
    fn default() -> Self {
        Self { momentum: -0.75, norm_threshold: 2.5, eta: 0.0 }
    }
}

impl ApgConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value = crate::error::parse_json(text, "APG config")?;
        let serde_json::Value::Object(map) = &value else {
            return Err(Error::invalid_json(format!("APG config must be a JSON object, got {value}")));
        };
        // serde's type errors do not name the key; check the value types first so they do.
        for (key, v) in map {
            if !v.is_number() {
                return Err(Error::invalid_json(format!("APG config: {key} must be a number, got {v}")));
            }
        }
        let config: Self = crate::json::from_value(&value, "APG config")?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        ensure_scalar(self.momentum, "momentum")?;
        ensure_scalar(self.norm_threshold, "norm_threshold")?;
        ensure_scalar(self.eta, "eta")?;
        Ok(())
    }
}

/// torch `F.normalize` clamps the norm from below with this epsilon.
const NORMALIZE_EPS: f64 = 1e-12;

/// APG with its momentum buffer: one object per generate call, shared across the batch tensor as
/// in the official code. The first `apply` fixes the shape; later calls must use the same shape
/// until [`Apg::reset`].
///
/// Per call, with `d = cond − uncond` (all per (b, c), norms over T):
/// 1. `running = d + momentum·running` (the buffer starts at zero, so the first call stores `d`);
/// 2. clip: `d = running · min(1, norm_threshold/‖running‖)` (a zero norm gives `threshold/0 = inf`,
///    so the factor is 1: no change);
/// 3. project onto `v̂ = cond/max(‖cond‖, 1e-12)` in float64: `d_par = ⟨d, v̂⟩v̂`, `d_orth = d − d_par`,
///    both rounded to float32 (a zero `cond` gives `v̂ = 0`, so `d_par = 0`);
/// 4. `out = cond + (g − 1)·(d_orth + eta·d_par)` in float32.
#[derive(Debug, Clone)]
pub struct Apg {
    config: ApgConfig,
    shape: Option<Shape>,
    running: Vec<f32>,
    calls: u64,
    // Per-channel accumulators, reused across calls.
    acc_dd: Vec<f64>,
    acc_cc: Vec<f64>,
    acc_dc: Vec<f64>,
}

impl Apg {
    pub fn new(config: ApgConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            shape: None,
            running: Vec::new(),
            calls: 0,
            acc_dd: Vec::new(),
            acc_cc: Vec::new(),
            acc_dc: Vec::new(),
        })
    }

    pub fn config(&self) -> ApgConfig {
        self.config
    }

    /// Number of `apply` calls since creation or the last reset.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The shape fixed by the first call, if any.
    pub fn shape(&self) -> Option<Shape> {
        self.shape
    }

    /// Forgets the momentum buffer and the shape, as a fresh object.
    pub fn reset(&mut self) {
        self.shape = None;
        self.running = Vec::new();
        self.calls = 0;
    }

    /// Applies APG; see the type's documentation. On error nothing (state or `out`) is changed,
    /// except that `out` is left unspecified when the inputs turn out to be non-finite.
    pub fn apply(
        &mut self,
        cond: &[f32],
        uncond: &[f32],
        out: &mut [f32],
        shape: Shape,
        guidance_scale: f64,
    ) -> Result<()> {
        ensure_scalar(guidance_scale, "guidance_scale")?;
        ensure_lengths(cond, uncond, out, shape.numel())?;
        if let Some(held) = self.shape {
            if held != shape {
                return Err(Error::invalid_state(format!(
                    "APG momentum state has shape {held} from earlier calls but this call has shape \
                     {shape}; reset the APG object (ace_apg_reset) before changing shape"
                )));
            }
        }
        let fresh = self.shape.is_none();
        if fresh {
            self.running = vec![0.0; shape.numel()];
        }
        let result = self.apply_inner(cond, uncond, out, shape, guidance_scale);
        match result {
            Ok(()) => {
                self.shape = Some(shape);
                self.calls += 1;
                Ok(())
            }
            Err(e) => {
                if fresh {
                    self.running = Vec::new();
                }
                Err(e)
            }
        }
    }

    fn apply_inner(
        &mut self,
        cond: &[f32],
        uncond: &[f32],
        out: &mut [f32],
        shape: Shape,
        guidance_scale: f64,
    ) -> Result<()> {
        let Shape { batch, frames, channels } = shape;
        let n = channels;
        let m = self.config.momentum as f32;
        let threshold = self.config.norm_threshold as f32;
        let clip = self.config.norm_threshold > 0.0;
        let eta = self.config.eta as f32;
        // Python computes (g − 1) in float64; torch then multiplies with it as float32.
        let gm1 = (guidance_scale - 1.0) as f32;
        let item = frames * channels;
        let mut scales = vec![0.0f32; batch * n];
        let mut coefs = vec![0.0f64; batch * n];
        self.acc_dd.resize(n, 0.0);
        self.acc_cc.resize(n, 0.0);
        self.acc_dc.resize(n, 0.0);

        // Pass 1 (read-only): per (b, c), sums over T of running², cond² and running·cond, where
        // running is recomputed from the old state. Nothing is written yet, so a non-finite input
        // leaves the state untouched; the sums double as the finiteness check.
        for b in 0..batch {
            let span = b * item..(b + 1) * item;
            let (dd, cc, dc) = (&mut self.acc_dd[..n], &mut self.acc_cc[..n], &mut self.acc_dc[..n]);
            dd.fill(0.0);
            cc.fill(0.0);
            dc.fill(0.0);
            let rows = cond[span.clone()]
                .chunks_exact(n)
                .zip(uncond[span.clone()].chunks_exact(n))
                .zip(self.running[span].chunks_exact(n));
            for ((c_row, u_row), r_row) in rows {
                let (c_row, u_row, r_row) = (&c_row[..n], &u_row[..n], &r_row[..n]);
                for i in 0..n {
                    let c = c_row[i];
                    let r = (c - u_row[i]) + m * r_row[i];
                    let (r64, c64) = (r as f64, c as f64);
                    dd[i] += r64 * r64;
                    cc[i] += c64 * c64;
                    dc[i] += r64 * c64;
                }
            }
            for i in 0..n {
                if !(dd[i].is_finite() && cc[i].is_finite() && dc[i].is_finite()) {
                    return Err(non_finite_or_overflow(cond, uncond, "the APG difference"));
                }
                // torch: min(1, threshold/‖d‖) in float32; ‖d‖ = 0 gives inf, hence 1.
                let s = if clip { (threshold / (dd[i].sqrt() as f32)).min(1.0) } else { 1.0 };
                scales[b * n + i] = s;
                // ⟨s·d, ĉ⟩ĉ with ĉ = c/max(‖c‖, eps) equals (s·⟨d, c⟩/max(‖c‖, eps)²)·c.
                let norm = cc[i].sqrt().max(NORMALIZE_EPS);
                coefs[b * n + i] = (s as f64) * dc[i] / (norm * norm);
            }
        }

        // Pass 2: write the new running state and the guided output.
        for b in 0..batch {
            let span = b * item..(b + 1) * item;
            let scale = &scales[b * n..(b + 1) * n];
            let coef = &coefs[b * n..(b + 1) * n];
            let rows = cond[span.clone()]
                .chunks_exact(n)
                .zip(uncond[span.clone()].chunks_exact(n))
                .zip(self.running[span.clone()].chunks_exact_mut(n))
                .zip(out[span].chunks_exact_mut(n));
            for (((c_row, u_row), r_row), o_row) in rows {
                let (c_row, u_row) = (&c_row[..n], &u_row[..n]);
                let (r_row, o_row) = (&mut r_row[..n], &mut o_row[..n]);
                for i in 0..n {
                    let c = c_row[i];
                    let r = (c - u_row[i]) + m * r_row[i];
                    r_row[i] = r;
                    let d = r * scale[i];
                    let par = coef[i] * c as f64;
                    let orth = (d as f64 - par) as f32;
                    let update = orth + eta * (par as f32);
                    o_row[i] = c + gm1 * update;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize, amp: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    /// Straightforward float64 APG written from the spec, per (b, c) with explicit loops.
    fn apg_reference(
        cond: &[f32],
        uncond: &[f32],
        running: &mut Vec<f64>,
        shape: Shape,
        g: f64,
        cfg: ApgConfig,
    ) -> Vec<f64> {
        let (bn, tn, cn) = (shape.batch, shape.frames, shape.channels);
        let idx = |b: usize, t: usize, c: usize| (b * tn + t) * cn + c;
        let mut out = vec![0.0; cond.len()];
        for i in 0..cond.len() {
            running[i] = (cond[i] as f64 - uncond[i] as f64) + cfg.momentum * running[i];
        }
        for b in 0..bn {
            for c in 0..cn {
                let norm = (0..tn).map(|t| running[idx(b, t, c)].powi(2)).sum::<f64>().sqrt();
                let s = if cfg.norm_threshold > 0.0 { (cfg.norm_threshold / norm).min(1.0) } else { 1.0 };
                let cnorm = (0..tn).map(|t| (cond[idx(b, t, c)] as f64).powi(2)).sum::<f64>().sqrt();
                let vhat: Vec<f64> = (0..tn).map(|t| cond[idx(b, t, c)] as f64 / cnorm.max(1e-12)).collect();
                let dot: f64 = (0..tn).map(|t| running[idx(b, t, c)] * s * vhat[t]).sum();
                for t in 0..tn {
                    let d = running[idx(b, t, c)] * s;
                    let par = dot * vhat[t];
                    out[idx(b, t, c)] = cond[idx(b, t, c)] as f64 + (g - 1.0) * ((d - par) + cfg.eta * par);
                }
            }
        }
        out
    }

    fn max_rel(a: &[f32], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs() / (1.0 + y.abs())).fold(0.0, f64::max)
    }

    #[test]
    fn cfg_matches_formula() {
        let c = lcg(1, 100, 2.0);
        let u = lcg(2, 100, 2.0);
        let mut o = vec![0.0; 100];
        cfg(&c, &u, &mut o, 7.0).unwrap();
        for i in 0..100 {
            assert_eq!(o[i], u[i] + 7.0f32 * (c[i] - u[i]));
        }
    }

    #[test]
    fn apg_matches_float64_reference_over_several_calls() {
        let shape = Shape::new(2, 37, 5).unwrap();
        for cfg in [
            ApgConfig::default(),
            ApgConfig { eta: 0.4, ..Default::default() },
            ApgConfig { norm_threshold: 0.0, ..Default::default() },
        ] {
            let mut apg = Apg::new(cfg).unwrap();
            let mut running = vec![0.0f64; shape.numel()];
            for call in 0..4u64 {
                let c = lcg(10 + call, shape.numel(), 1.5);
                let u = lcg(20 + call, shape.numel(), 1.5);
                let mut o = vec![0.0; shape.numel()];
                apg.apply(&c, &u, &mut o, shape, 5.0).unwrap();
                let r = apg_reference(&c, &u, &mut running, shape, 5.0, cfg);
                assert!(max_rel(&o, &r) < 2e-5, "call {call}: {}", max_rel(&o, &r));
            }
        }
    }

    #[test]
    fn apg_zero_cond_and_zero_difference_are_finite() {
        let shape = Shape::new(1, 8, 3).unwrap();
        let zeros = vec![0.0f32; shape.numel()];
        let mut o = vec![1.0; shape.numel()];
        let mut apg = Apg::new(ApgConfig::default()).unwrap();
        apg.apply(&zeros, &zeros, &mut o, shape, 3.0).unwrap();
        assert!(o.iter().all(|&v| v == 0.0));
        // zero cond, nonzero difference: d_par = 0, so out = (g-1)·d_clipped
        let u = vec![-0.1f32; shape.numel()];
        let mut apg = Apg::new(ApgConfig::default()).unwrap();
        apg.apply(&zeros, &u, &mut o, shape, 3.0).unwrap();
        assert!(o.iter().all(|&v| (v - 0.2).abs() < 1e-6));
    }

    #[test]
    fn apg_shape_change_is_an_error_and_keeps_state() {
        let shape = Shape::new(1, 4, 2).unwrap();
        let c = lcg(1, 8, 1.0);
        let mut o = vec![0.0; 8];
        let mut apg = Apg::new(ApgConfig::default()).unwrap();
        apg.apply(&c, &c, &mut o, shape, 2.0).unwrap();
        let other = Shape::new(1, 2, 4).unwrap();
        let err = apg.apply(&c, &c, &mut o, other, 2.0).unwrap_err();
        assert!(err.message.contains("[1, 4, 2]") && err.message.contains("[1, 2, 4]"));
        assert_eq!(apg.calls(), 1);
        apg.reset();
        apg.apply(&c, &c, &mut o, other, 2.0).unwrap();
    }

    #[test]
    fn apg_non_finite_input_leaves_state_unchanged() {
        let shape = Shape::new(1, 4, 2).unwrap();
        let c = lcg(1, 8, 1.0);
        let u = lcg(2, 8, 1.0);
        let mut o = vec![0.0; 8];
        let mut apg = Apg::new(ApgConfig::default()).unwrap();
        apg.apply(&c, &u, &mut o, shape, 2.0).unwrap();
        let before = apg.running.clone();
        let mut bad = u.clone();
        bad[5] = f32::NAN;
        let err = apg.apply(&c, &bad, &mut o, shape, 2.0).unwrap_err();
        assert!(err.message.contains("uncond") && err.message.contains("index 5"), "{}", err.message);
        assert_eq!(apg.running, before);
        assert_eq!(apg.calls(), 1);
    }

    #[test]
    fn intervals() {
        assert!(cfg_interval_active(0.0, 0.0, 1.0).unwrap());
        assert!(cfg_interval_active(1.0, 0.0, 1.0).unwrap());
        assert!(!cfg_interval_active(0.5, 0.6, 1.0).unwrap());
        assert_eq!(v1_guidance_interval(60, 0.5).unwrap(), (15, 45));
        assert_eq!(v1_guidance_interval(27, 0.5).unwrap(), (6, 20));
        assert!(v1_step_active(15, 60, 0.5).unwrap());
        assert!(!v1_step_active(45, 60, 0.5).unwrap());
        assert!(v1_step_active(60, 60, 0.5).is_err());
        assert!(v1_guidance_interval(10, 1.5).is_err());
    }

    #[test]
    fn config_json() {
        assert_eq!(ApgConfig::from_json("{}").unwrap(), ApgConfig::default());
        assert_eq!(ApgConfig::from_json(r#"{"eta": 0.5}"#).unwrap().eta, 0.5);
        assert!(ApgConfig::from_json(r#"{"etta": 0.5}"#).unwrap_err().message.contains("etta"));
    }
}
