//! torch's CUDA `randn` element mapping: Philox4x32-10 per thread + cuRAND's Box–Muller
//! (`curand_normal4`), laid out by torch's grid-stride launch (spec §4.4).
//!
//! Thread t of G threads (G = grid·256) owns Philox subsequence t. Its k-th `curand_normal4` call
//! encrypts counter (offset + k, subsequence t) and yields four normals: sin and cos of words (x, y),
//! then of (z, w). The loop is unrolled by 4, so element e gets thread e mod G, call e div 4G,
//! slot (e div G) mod 4. For numel ≤ G that is simply subsequence e, slot 0.

use serde::Deserialize;

use super::philox::philox4x32_10;
use crate::error::{Error, Result};

const BLOCK: u64 = 256;
const UNROLL: u64 = 4;

/// The launch parameters of the GPU being matched, plus the output dtype rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CudaNoiseOptions {
    /// Streaming multiprocessor count (`multiProcessorCount`, e.g. 132 on H100 SXM, 82 on
    /// RTX 3090). `None`: no grid cap, as if the GPU were large enough (exact whenever
    /// numel ≤ G of the real GPU).
    #[serde(default)]
    pub sm_count: Option<u32>,
    /// `maxThreadsPerMultiProcessor` (2048 on H100/A100, 1536 on RTX 30xx/40xx).
    #[serde(default = "default_max_threads_per_sm")]
    pub max_threads_per_sm: u32,
    /// Round each value to bfloat16 (nearest-even), as `torch.randn(..., dtype=torch.bfloat16)`.
    #[serde(default)]
    pub bf16: bool,
    /// Philox offset of the generator (0 for a freshly seeded one; a multiple of 4).
    #[serde(default)]
    pub offset: u64,
}

fn default_max_threads_per_sm() -> u32 {
    2048
}

impl Default for CudaNoiseOptions {
    fn default() -> Self {
        Self { sm_count: None, max_threads_per_sm: default_max_threads_per_sm(), bf16: false, offset: 0 }
    }
}

impl CudaNoiseOptions {
    /// Fails on launch parameters no GPU has, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.sm_count == Some(0) {
            return Err(Error::invalid_argument("torch_cuda: sm_count must be at least 1, got 0"));
        }
        if self.max_threads_per_sm < BLOCK as u32 {
            return Err(Error::invalid_argument(format!(
                "torch_cuda: max_threads_per_sm must be at least 256, got {}",
                self.max_threads_per_sm
            )));
        }
        if !self.offset.is_multiple_of(4) {
            return Err(Error::invalid_argument(format!(
                "torch_cuda: offset must be a multiple of 4, got {}",
                self.offset
            )));
        }
        Ok(())
    }

    /// G, the total thread count torch launches for `numel` elements.
    pub fn total_threads(&self, numel: u64) -> u64 {
        let blocks = numel.div_ceil(BLOCK).max(1);
        let blocks = match self.sm_count {
            Some(sms) => blocks.min(sms as u64 * (self.max_threads_per_sm as u64 / BLOCK)),
            None => blocks,
        };
        blocks * BLOCK
    }
}

/// How far one `normal_` launch of `numel` elements advances the generator's Philox offset:
/// torch reserves `((numel − 1) / (G·4) + 1)·4` (rounds of the unrolled grid-stride loop, four
/// engine calls each).
pub fn offset_increment(options: &CudaNoiseOptions, numel: u64) -> u64 {
    let g = options.total_threads(numel);
    ((numel.max(1) - 1) / (g * UNROLL) + 1) * 4
}

/// cuRAND's `_curand_box_muller` on two 32-bit words: (√(−2 ln u)·sin v, √(−2 ln u)·cos v) with
/// u = x·2⁻³² + 2⁻³³ and v = y·2π₃₂·2⁻³² + π₃₂·2⁻³² (2π₃₂ = 2π rounded to f32). This is the
/// header's host-side branch (`logf`, `sinf`, `cosf`); the device branch uses the fast
/// `__sincosf` intrinsic, so GPU values can differ in the last float bits (docs/noise.md).
pub fn box_muller(x: u32, y: u32) -> (f32, f32) {
    const POW32_INV: f32 = 2.328_306_4e-10;
    let pow32_inv_2pi: f32 = POW32_INV * 6.283_185_5;
    // nvcc contracts a*b + c into an FMA by default; for u the product is exact either way.
    let u = (x as f32).mul_add(POW32_INV, POW32_INV / 2.0);
    let v = (y as f32).mul_add(pow32_inv_2pi, pow32_inv_2pi / 2.0);
    let s = (-2.0 * u.ln()).sqrt();
    (s * v.sin(), s * v.cos())
}

/// Rounds an f32 to the nearest bfloat16 (ties to even), returned widened back to f32.
pub fn round_bf16(v: f32) -> f32 {
    if v.is_nan() {
        return f32::from_bits((v.to_bits() | 0x0040_0000) & 0xffff_0000);
    }
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    f32::from_bits(rounded & 0xffff_0000)
}

/// Fills `out` with torch CUDA `randn` values for `seed` under `options`.
pub fn fill(options: &CudaNoiseOptions, seed: u64, out: &mut [f32]) -> Result<()> {
    options.validate()?;
    let numel = out.len() as u64;
    let g = options.total_threads(numel);
    let key = [seed as u32, (seed >> 32) as u32];
    for (e, v) in out.iter_mut().enumerate() {
        let e = e as u64;
        let thread = e % g;
        let slot = (e / g) % UNROLL;
        let call = e / (g * UNROLL);
        let ctr = options.offset / 4 + call;
        let words = philox4x32_10([ctr as u32, (ctr >> 32) as u32, thread as u32, (thread >> 32) as u32], key);
        let n = match slot {
            0 => box_muller(words[0], words[1]).0,
            1 => box_muller(words[0], words[1]).1,
            2 => box_muller(words[2], words[3]).0,
            _ => box_muller(words[2], words[3]).1,
        };
        // torch's transform `n·std + mean` (std 1, mean 0; an FMA under nvcc) only changes −0 to +0.
        let n = n.mul_add(1.0, 0.0);
        *v = if options.bf16 { round_bf16(n) } else { n };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_size_follows_launch_policy() {
        let h100 = CudaNoiseOptions { sm_count: Some(132), max_threads_per_sm: 2048, ..Default::default() };
        assert_eq!(h100.total_threads(16_000), 16_128);
        assert_eq!(h100.total_threads(6000 * 64), 270_336);
        let rtx3090 = CudaNoiseOptions { sm_count: Some(82), max_threads_per_sm: 1536, ..Default::default() };
        assert_eq!(rtx3090.total_threads(10_000_000), 125_952);
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 is halfway between 1.0078125 and 1.015625: ties to even (1.015625).
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.015625);
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0 + 1.0 / 65536.0), 1.0078125);
        assert_eq!(round_bf16(-2.0), -2.0);
    }

    #[test]
    fn rejects_impossible_launches() {
        let bad = CudaNoiseOptions { sm_count: Some(0), ..Default::default() };
        assert!(bad.validate().unwrap_err().message.contains("sm_count"));
        let bad = CudaNoiseOptions { max_threads_per_sm: 100, ..Default::default() };
        assert!(bad.validate().unwrap_err().message.contains("max_threads_per_sm"));
    }
}
