//! LM token sampling (spec §5.5): classifier-free guidance on the two logit rows, a hook for the
//! constrained-decoding mask, then temperature → top-k → top-p (vLLM style) → a seeded draw.
//!
//! Per token the order is:
//! 1. CFG in fp32: `ℓ = ℓu + g·(ℓc − ℓu)` when `cfg_scale ≠ 1`, else `ℓ = ℓc` (OFF applies CFG only
//!    when `cfg_scale > 1`);
//! 2. the caller's mask (the FSM) sets forbidden tokens to −inf;
//! 3. temperature 0 → greedy argmax (lowest index among ties); otherwise `ℓ/T`;
//! 4. top-k (`k > 0`): keep every token whose logit is ≥ the k-th largest (ties at the boundary kept);
//! 5. top-p (`p < 1`), vLLM style: in ascending order mask tokens whose cumulative probability is
//!    ≤ 1 − p, i.e. walking in descending order keep a token while the mass strictly above it is < p;
//!    the top token is always kept;
//! 6. draw: one uniform `u ∈ [0, 1)` from `(seed, step)` (see [`uniform`]), inverse CDF over the kept
//!    tokens (descending order when top-k/top-p selected them, index order otherwise) in f64.
//!
//! Nothing allocates per token: the combined logits, the weights and the candidate list live in the
//! [`Sampler`] and are reused. Only the head of the distribution is sorted: tokens within a logit
//! window of the maximum are gathered first, and the window widens only if it holds too little mass.

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// The LM vocabulary of the ACE-Step 5 Hz LMs (spec §5.1).
pub const LM_VOCAB_SIZE: usize = 217_204;

fn default_temperature() -> f32 {
    0.85
}
fn default_top_p() -> f32 {
    0.9
}
fn default_cfg_scale() -> f32 {
    2.0
}
fn default_vocab_size() -> usize {
    LM_VOCAB_SIZE
}

/// Sampler settings. Defaults are the official `GenerationParams` (T 0.85, top-k off, top-p 0.9,
/// CFG 2.0). `seed` is required: the official LM RNG is unseeded, ours is always reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    pub seed: u64,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// 0 disables top-k.
    #[serde(default)]
    pub top_k: u32,
    /// 1.0 disables top-p.
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    #[serde(default = "default_cfg_scale")]
    pub cfg_scale: f32,
    /// Length every logits row must have.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
}

impl SamplerConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let config: SamplerConfig =
            crate::error::parse_json(text, "sampler config").map_err(|e| name_bad_field(text).unwrap_or(e))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid_argument(format!(
                "temperature must be finite and >= 0, got {}",
                self.temperature
            )));
        }
        if self.temperature > 0.0 && !(1.0 / self.temperature).is_finite() {
            return Err(Error::invalid_argument(format!(
                "temperature {} is too small to divide by (use 0 for greedy)",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid_argument(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if !(self.cfg_scale.is_finite() && self.cfg_scale >= 1.0) {
            return Err(Error::invalid_argument(format!(
                "cfg_scale must be finite and >= 1 (1 disables CFG), got {}",
                self.cfg_scale
            )));
        }
        // The sampler allocates buffers of vocab_size floats: cap it before that.
        if self.vocab_size == 0 || self.vocab_size > crate::limits::MAX_VOCAB {
            return Err(Error::invalid_argument(format!(
                "vocab_size must be in 1..={}, got {}",
                crate::limits::MAX_VOCAB,
                self.vocab_size
            )));
        }
        Ok(())
    }

    /// Whether the unconditional row is used.
    pub fn uses_cfg(&self) -> bool {
        self.cfg_scale != 1.0
    }
}

/// serde's type errors give a position, not the key: check each known key's JSON type so the
/// message can name it.
fn name_bad_field(text: &str) -> Option<Error> {
    let serde_json::Value::Object(map) = serde_json::from_str(text).ok()? else { return None };
    map.iter().find_map(|(key, value)| {
        let ok = match key.as_str() {
            "seed" | "vocab_size" => value.as_u64().is_some(),
            "top_k" => value.as_u64().is_some_and(|v| v <= u64::from(u32::MAX)),
            "temperature" | "top_p" | "cfg_scale" => value.is_number(),
            _ => true, // unknown keys: serde's message already names them
        };
        (!ok).then(|| {
            Error::invalid_json(format!("sampler config.{key} has the wrong type or range: {value}"))
        })
    })
}

/// SplitMix64's output function: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The draw for token `step` of a sequence seeded with `seed`: a counter-based uniform in [0, 1),
/// `u = (mix64(mix64(seed) ^ step) >> 11) · 2⁻⁵³` with `mix64` = SplitMix64's output function (all
/// arithmetic mod 2⁶⁴). For a fixed seed, distinct steps give distinct 64-bit words (mix64 is a
/// bijection), so a draw depends only on (seed, step), never on call history.
pub fn uniform(seed: u64, step: u64) -> f64 {
    let bits = mix64(mix64(seed) ^ step);
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Largest value and its lowest index; `None` when every value is −inf (or the slice is empty).
fn argmax(values: &[f32]) -> Option<(usize, f32)> {
    let mut best = f32::NEG_INFINITY;
    let mut best_i = usize::MAX;
    for (i, &v) in values.iter().enumerate() {
        if v > best {
            best = v;
            best_i = i;
        }
    }
    (best_i != usize::MAX).then_some((best_i, best))
}

/// Maximum over a slice, in 8 independent lanes so the compiler can vectorise it.
fn max_value(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in chunks.remainder() {
        m = m.max(v);
    }
    m
}

/// Sum of a block in eight independent f32 lanes (vectorisable: f32 adds do not reassociate),
/// combined in f64.
fn sum_f32(values: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    let mut total: f64 = lanes.iter().map(|&v| v as f64).sum();
    for &v in chunks.remainder() {
        total += v as f64;
    }
    total
}

/// `ℓ = ℓu + g·(ℓc − ℓu)` in fp32 into `out`.
fn cfg_combine(cond: &[f32], uncond: &[f32], scale: f32, out: &mut [f32]) {
    for ((o, &c), &u) in out.iter_mut().zip(cond).zip(uncond) {
        *o = u + scale * (c - u);
    }
}

/// Whether every value is finite (no short-circuit, so it vectorises).
fn all_finite(values: &[f32]) -> bool {
    values.iter().fold(true, |ok, v| ok & v.is_finite())
}

/// Reusable per-sequence sampler: its buffers are sized once for the vocabulary.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    logits: Vec<f32>,
    weights: Vec<f32>,
    candidates: Vec<u32>,
    chunk_sums: Vec<f64>,
}

/// Logit windows (in units of the temperature) tried when gathering the head of the distribution:
/// tokens within `w·T` of the maximum carry relative weight ≥ e^−w.
const WINDOWS: [f32; 3] = [8.0, 16.0, 32.0];

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            logits: vec![0.0; config.vocab_size],
            weights: vec![0.0; config.vocab_size],
            candidates: Vec::with_capacity(4096),
            chunk_sums: Vec::with_capacity(config.vocab_size.div_ceil(CHUNK)),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Step 1: CFG of the two rows into the sampler's logits buffer, which is returned so a
    /// mask can be applied in place. Non-finite inputs are rejected.
    pub fn combine(&mut self, cond: &[f32], uncond: Option<&[f32]>) -> Result<&mut [f32]> {
        let vocab = self.config.vocab_size;
        if cond.len() != vocab {
            return Err(Error::length_mismatch(format!(
                "cond logits have {} elements but vocab_size is {vocab}",
                cond.len()
            )));
        }
        if self.config.uses_cfg() {
            let uncond = uncond.ok_or_else(|| {
                Error::new(
                    ErrorKind::NullPointer,
                    format!("uncond is null but cfg_scale is {} (only 1 allows no uncond)", self.config.cfg_scale),
                )
            })?;
            if uncond.len() != vocab {
                return Err(Error::length_mismatch(format!(
                    "uncond logits have {} elements but vocab_size is {vocab}",
                    uncond.len()
                )));
            }
            cfg_combine(cond, uncond, self.config.cfg_scale, &mut self.logits);
        } else {
            self.logits.copy_from_slice(cond);
        }
        // A non-finite input always gives a non-finite output, so one check covers both rows.
        if !all_finite(&self.logits) {
            crate::error::ensure_finite(cond, "cond logits")?;
            if let (true, Some(u)) = (self.config.uses_cfg(), uncond) {
                crate::error::ensure_finite(u, "uncond logits")?;
            }
            let i = self.logits.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(Error::invalid_argument(format!(
                "CFG overflowed to {} at index {i} (cfg_scale {})",
                self.logits[i], self.config.cfg_scale
            )));
        }
        Ok(&mut self.logits)
    }

    /// CFG, then `mask` on the combined logits (the FSM hook), then steps 3–6.
    pub fn sample_with<F>(&mut self, cond: &[f32], uncond: Option<&[f32]>, step: u64, mask: F) -> Result<u32>
    where
        F: FnOnce(&mut [f32]) -> Result<()>,
    {
        mask(self.combine(cond, uncond)?)?;
        self.sample_combined(step)
    }

    /// CFG then sampling, without a mask.
    pub fn sample(&mut self, cond: &[f32], uncond: Option<&[f32]>, step: u64) -> Result<u32> {
        self.sample_with(cond, uncond, step, |_| Ok(()))
    }

    /// Samples from logits that are already combined and masked (−inf = forbidden; NaN and +inf
    /// are rejected). Skips CFG.
    pub fn sample_logits(&mut self, logits: &[f32], step: u64) -> Result<u32> {
        let vocab = self.config.vocab_size;
        if logits.len() != vocab {
            return Err(Error::length_mismatch(format!(
                "logits have {} elements but vocab_size is {vocab}",
                logits.len()
            )));
        }
        if let Some(i) = logits.iter().position(|v| v.is_nan() || *v == f32::INFINITY) {
            return Err(Error::invalid_argument(format!(
                "logits contain {} at index {i} (only -inf is allowed, as a mask)",
                logits[i]
            )));
        }
        self.logits.copy_from_slice(logits);
        self.sample_combined(step)
    }

    /// Steps 3–6 on the sampler's (combined, masked) logits buffer.
    pub fn sample_combined(&mut self, step: u64) -> Result<u32> {
        let SamplerConfig { seed, temperature, top_k, top_p, .. } = self.config;
        let logits = &self.logits;
        if logits.iter().fold(false, |nan, v| nan | v.is_nan()) {
            return Err(Error::invalid_argument("the mask produced NaN logits"));
        }
        let masked_out = || Error::invalid_state("every token is masked (all logits are -inf)");
        if temperature == 0.0 {
            return argmax(logits).map(|(i, _)| i as u32).ok_or_else(masked_out);
        }
        let max = max_value(logits);
        if max == f32::NEG_INFINITY {
            return Err(masked_out());
        }
        let inv_t = 1.0 / temperature;
        let u = uniform(seed, step);
        let vocab = logits.len();
        let top_k = top_k as usize;
        let use_top_k = top_k > 0 && top_k < vocab;

        if !use_top_k && top_p >= 1.0 {
            // Plain softmax sampling over the whole vocabulary, in index order.
            let total = self.fill_weights(max, inv_t);
            return Ok(self.walk_full(u * total));
        }

        // Total mass of the distribution top-p works on: all tokens, or the top-k set.
        let mut total_all = 0.0f64;
        if !use_top_k {
            total_all = self.fill_weights(max, inv_t);
        }
        let logits = &self.logits;
        let candidates = &mut self.candidates;
        let weights = &mut self.weights;
        let weight = |i: u32| ((logits[i as usize] - max) * inv_t).exp();

        // Gather the head: tokens within window·T of the max, widening until it is big enough.
        let mut window_index = 0;
        loop {
            candidates.clear();
            let floor = WINDOWS.get(window_index).map(|w| max - w * temperature);
            match floor {
                Some(floor) => candidates.extend(
                    logits.iter().enumerate().filter(|(_, &v)| v >= floor).map(|(i, _)| i as u32),
                ),
                None => candidates.extend(
                    logits.iter().enumerate().filter(|(_, &v)| v > f32::NEG_INFINITY).map(|(i, _)| i as u32),
                ),
            }
            let last = floor.is_none();
            let enough = if use_top_k {
                candidates.len() >= top_k
            } else {
                let mass: f64 = candidates.iter().map(|&i| weights[i as usize] as f64).sum();
                mass >= top_p as f64 * total_all
            };
            if enough || last {
                break;
            }
            window_index += 1;
        }

        // Descending by logit, lowest index first among ties.
        let by_logit_desc = |a: &u32, b: &u32| {
            logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b))
        };
        let total = if use_top_k {
            if candidates.len() > top_k {
                candidates.select_nth_unstable_by(top_k - 1, by_logit_desc);
                let kth = logits[candidates[top_k - 1] as usize];
                candidates.retain(|&i| logits[i as usize] >= kth);
            }
            let mut sum = 0.0f64;
            for &i in candidates.iter() {
                let w = weight(i);
                weights[i as usize] = w;
                sum += w as f64;
            }
            sum
        } else {
            total_all
        };
        candidates.sort_unstable_by(by_logit_desc);

        // vLLM top-p: keep while the mass strictly above the token is < p·total.
        let mut kept = candidates.len();
        if top_p < 1.0 {
            let limit = top_p as f64 * total;
            let mut above = 0.0f64;
            for (n, &i) in candidates.iter().enumerate() {
                if n > 0 && above >= limit {
                    kept = n;
                    break;
                }
                above += weights[i as usize] as f64;
            }
        }
        let kept = &candidates[..kept];
        let kept_mass: f64 = kept.iter().map(|&i| weights[i as usize] as f64).sum();
        let order = kept.iter().map(|&i| i as usize);
        Ok(walk_cdf(weights, order, u * kept_mass, kept[0] as usize))
    }

    /// `weights[i] = exp((ℓ_i − max)/T)` for the whole vocabulary, with the sum of every
    /// [`CHUNK`]-sized block in `chunk_sums`; returns the total (f64).
    fn fill_weights(&mut self, max: f32, inv_t: f32) -> f64 {
        self.chunk_sums.clear();
        let mut total = 0.0f64;
        for (l, w) in self.logits.chunks(CHUNK).zip(self.weights.chunks_mut(CHUNK)) {
            for (wi, &li) in w.iter_mut().zip(l) {
                *wi = fast_exp((li - max) * inv_t);
            }
            let part = sum_f32(w);
            self.chunk_sums.push(part);
            total += part;
        }
        total
    }

    /// Inverse CDF over the whole vocabulary in index order: skips whole blocks by their sums,
    /// then walks inside the block that holds `target`.
    fn walk_full(&self, target: f64) -> u32 {
        let mut acc = 0.0f64;
        for (b, &sum) in self.chunk_sums.iter().enumerate() {
            if acc + sum > target {
                let start = b * CHUNK;
                let end = (start + CHUNK).min(self.weights.len());
                for i in start..end {
                    acc += self.weights[i] as f64;
                    if acc > target && self.weights[i] > 0.0 {
                        return i as u32;
                    }
                }
            } else {
                acc += sum;
            }
        }
        // Rounding left the target unreached: the last token with weight.
        self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32
    }
}

/// Block size of the weight sums used to skip ahead in the full-vocabulary inverse CDF.
const CHUNK: usize = 1024;

/// Walks `order`, accumulating weights in f64, and returns the first token whose cumulative weight
/// exceeds `target`; `fallback` if rounding leaves the target unreached.
fn walk_cdf(weights: &[f32], order: impl Iterator<Item = usize>, target: f64, fallback: usize) -> u32 {
    let mut acc = 0.0f64;
    let mut last_positive = fallback;
    for i in order {
        let w = weights[i] as f64;
        if w > 0.0 {
            acc += w;
            last_positive = i;
            if acc > target {
                return i as u32;
            }
        }
    }
    last_positive as u32
}

/// `e^x` for `x ≤ 0` in f32 (relative error < 2e-7), branch-free so the weight pass vectorises.
/// Values below −87 (including −inf) give 0.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    // e^x = 2^n · e^r with n = round(x·log2 e), r = x − n·ln2 (Cody–Waite split), |r| ≤ ln2/2.
    let xc = if x < -87.0 { -87.0 } else { x };
    // Round to nearest with the 1.5·2²³ trick (SSE2 has no vector round instruction).
    const MAGIC: f32 = 12_582_912.0;
    let n = (xc * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = xc - n * 0.693_145_75 - n * 1.428_606_8e-6;
    // Taylor/minimax polynomial of degree 6 on [−ln2/2, ln2/2].
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // 2^n from the bits of (n + 127) + 2²³, whose mantissa is the biased exponent: integer ops
    // only, so this vectorises (a float → int cast does not, on baseline x86-64).
    let biased = (n + 127.0 + 8_388_608.0).to_bits() & 0x7F_FFFF;
    let scale = f32::from_bits(biased << 23);
    let y = p * scale;
    if x < -87.0 {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vocab: usize) -> SamplerConfig {
        SamplerConfig { seed: 7, temperature: 1.0, top_k: 0, top_p: 1.0, cfg_scale: 1.0, vocab_size: vocab }
    }

    #[test]
    fn fast_exp_matches_std() {
        let mut x = -90.0f32;
        while x <= 0.0 {
            let want = x.exp();
            let got = fast_exp(x);
            if x >= -87.0 {
                assert!((got - want).abs() <= 3e-7 * want + 1e-37, "x={x} got={got} want={want}");
            } else {
                assert!(got == 0.0);
            }
            x += 0.0137;
        }
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn greedy_is_argmax_with_lowest_index_on_ties() {
        let mut s = Sampler::new(SamplerConfig { temperature: 0.0, ..config(5) }).unwrap();
        assert_eq!(s.sample(&[0.0, 3.0, 1.0, 3.0, -1.0], None, 0).unwrap(), 1);
    }

    #[test]
    fn top_p_keeps_only_the_head() {
        // probs ∝ [8, 4, 2, 1, 1]/16 at T = 1 (logits are logs); p = 0.5: mass above the 2nd token is
        // 0.5 (not < 0.5), so only token 0 is kept.
        let l: Vec<f32> = [8.0f32, 4.0, 2.0, 1.0, 1.0].iter().map(|v| v.ln()).collect();
        let mut s = Sampler::new(SamplerConfig { top_p: 0.5, ..config(5) }).unwrap();
        for step in 0..200 {
            assert_eq!(s.sample(&l, None, step).unwrap(), 0);
        }
        let mut s = Sampler::new(SamplerConfig { top_p: 0.75, ..config(5) }).unwrap();
        let mut seen = [0; 5];
        for step in 0..2000 {
            seen[s.sample(&l, None, step).unwrap() as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0 && seen[2..].iter().all(|&c| c == 0), "{seen:?}");
    }

    #[test]
    fn all_masked_is_an_error() {
        let mut s = Sampler::new(config(3)).unwrap();
        let err = s.sample_with(&[0.0, 1.0, 2.0], None, 0, |l| {
            l.fill(f32::NEG_INFINITY);
            Ok(())
        });
        assert_eq!(err.unwrap_err().kind, ErrorKind::InvalidState);
    }

    #[test]
    fn uniform_depends_on_seed_and_step() {
        assert_ne!(uniform(1, 0), uniform(1, 1));
        assert_ne!(uniform(1, 0), uniform(2, 0));
        assert_eq!(uniform(5, 9), uniform(5, 9));
        assert!((0.0..1.0).contains(&uniform(0, 0)));
    }
}
