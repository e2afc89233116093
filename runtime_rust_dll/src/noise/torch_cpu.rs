//! `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` for float32 on the CPU.
//!
//! torch fills a float tensor in one of two ways:
//! - numel ≥ 16: every element first gets a float uniform (24 bits of one MT draw); then each
//!   block of 16 is turned into normals by Box–Muller (u1 = 1 − data[j], u2 = data[j + 8],
//!   j < 8; radius·cos → data[j], radius·sin → data[j + 8]). If numel is not a multiple of 16,
//!   the last 16 positions are refilled with 16 fresh uniforms and transformed again.
//!   The transform's arithmetic depends on the CPU capability torch dispatched to ([`CpuKernel`]).
//! - numel < 16: a scalar double-precision Box–Muller, two double uniforms per pair
//!   (53 bits of two MT draws each), r·cos for the first element, the cached r·sin for the next.

use super::cephes_f32;
use super::mt19937::Mt19937;

// torch applies `n·std + mean` even for randn (std 1, mean 0). That is exact, except that adding
// +0 turns a −0 (radius 0 times a negative cos/sin) into +0; keep the step for bit-exactness.
const MEAN: f32 = 0.0;
const STD: f32 = 1.0;

/// Which of torch's CPU normal kernels to reproduce (they differ in the last bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuKernel {
    /// `normal_fill_16_AVX2`: Cephes float polynomials for log and sincos, float 2π, FMA where
    /// GCC fused. torch runs it on any x86-64 CPU with AVX2 (capabilities `avx2` and `avx512`).
    #[default]
    Avx2,
    /// The portable `normal_fill_16`: C `logf`/`cosf`/`sinf`, angle rounded from double
    /// 2π·u. torch runs it with `ATEN_CPU_CAPABILITY=default` and on CPUs without AVX2. Matches
    /// only where this library's `f32::ln/cos/sin` call the same libm as torch (glibc on Linux).
    Baseline,
}

/// Fills `out` with what torch draws for a fresh generator seeded with `seed`.
pub fn fill(kernel: CpuKernel, seed: u64, out: &mut [f32]) {
    let mut state = GeneratorState::new(seed);
    state.fill(kernel, out);
}

/// The state of a torch CPU generator between draws: its Mersenne Twister and the cached second
/// sample of the scalar (numel < 16) path.
#[derive(Clone)]
pub struct GeneratorState {
    mt: Mt19937,
    cached_normal: Option<f64>,
}

impl GeneratorState {
    /// `torch.Generator().manual_seed(seed)`.
    pub fn new(seed: u64) -> Self {
        Self { mt: Mt19937::new(seed), cached_normal: None }
    }

    /// The next `randn`/`normal_` draw of `out.len()` values from this generator.
    pub fn fill(&mut self, kernel: CpuKernel, out: &mut [f32]) {
        fill_from(kernel, &mut self.mt, &mut self.cached_normal, out);
    }
}

fn fill_from(kernel: CpuKernel, mt: &mut Mt19937, cached: &mut Option<f64>, out: &mut [f32]) {
    if out.len() < 16 {
        fill_small(mt, cached, out);
        return;
    }
    for v in out.iter_mut() {
        *v = mt.uniform_f32();
    }
    let transform: fn(&mut [f32]) = match kernel {
        CpuKernel::Avx2 => transform16_avx2,
        CpuKernel::Baseline => transform16_baseline,
    };
    for block in out.chunks_exact_mut(16) {
        transform(block);
    }
    if !out.len().is_multiple_of(16) {
        let n = out.len();
        let tail = &mut out[n - 16..];
        for v in tail.iter_mut() {
            *v = mt.uniform_f32();
        }
        transform(tail);
    }
}

/// The scalar path for fewer than 16 elements (torch's `normal_distribution<double>` with its
/// cached second sample; the cache starts empty on a fresh generator). torch 2.9 uses
/// `log1p(−u2)`, not `log(1 − u2)`: float64 `randn` of torch matches only the former.
fn fill_small(mt: &mut Mt19937, cached: &mut Option<f64>, out: &mut [f32]) {
    for v in out.iter_mut() {
        let n = match cached.take() {
            Some(n) => n,
            None => {
                let u1 = mt.uniform_f64();
                let u2 = mt.uniform_f64();
                let r = (-2.0 * (-u2).ln_1p()).sqrt();
                let theta = 2.0 * std::f64::consts::PI * u1;
                *cached = Some(r * theta.sin());
                r * theta.cos()
            }
        };
        *v = (n * STD as f64 + MEAN as f64) as f32;
    }
}

/// One block of 16 as `normal_fill_16_AVX2` computes it (ending in `fma(n, std, mean)`).
fn transform16_avx2(block: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let u1: cephes_f32::Lanes = std::array::from_fn(|j| 1.0 - block[j]);
    let theta: cephes_f32::Lanes = std::array::from_fn(|j| block[j + 8] * two_pi);
    let log = cephes_f32::log8(u1);
    let (sin, cos) = cephes_f32::sincos8(theta);
    for j in 0..8 {
        let radius = (-2.0 * log[j]).sqrt();
        block[j] = cephes_f32::fma(radius * cos[j], STD, MEAN);
        block[j + 8] = cephes_f32::fma(radius * sin[j], STD, MEAN);
    }
}

/// One block of 16 as the portable `normal_fill_16<float>` computes it.
fn transform16_baseline(block: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let theta = (2.0 * std::f64::consts::PI * block[j + 8] as f64) as f32;
        let radius = (-2.0 * u1.ln()).sqrt();
        block[j] = radius * theta.cos() * STD + MEAN;
        block[j + 8] = radius * theta.sin() * STD + MEAN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bits printed by torch 2.9.1 (x86-64): `torch.randn(n, generator=torch.Generator().manual_seed(s))`
    // run with ATEN_CPU_CAPABILITY=avx2 and =default. The Python tests compare far more cases live.
    const AVX2_17_42: [u32; 17] = [
        0x3ff6a529, 0xbe236d85, 0xbefeaae4, 0x3ee111d8, 0xbf4214e2, 0x3f8a0650, 0x3f4d0144, 0x3fd71e93,
        0x3eb63345, 0x3fa5f12f, 0x3f1c4788, 0x3faad8b0, 0xbe6d2eed, 0x3d2b0c00, 0xbe80ce7a, 0x3f5c1fb0,
        0xbe9e9482,
    ];
    const AVX2_16_0: [u32; 16] = [
        0xbf901b85, 0xbf93808a, 0xbe804bd6, 0xbede255d, 0x3f594515, 0x3f312783, 0xbea1cc6d, 0xc0075fc1,
        0x3ea50138, 0xbfa1b4f4, 0x3eb330ff, 0x3e9dc3bb, 0x3df56f77, 0x3f9e6b93, 0x3f8ef28e, 0xbe7d367c,
    ];
    const BASELINE_17_42: [u32; 17] = [
        0x3ff6a527, 0xbe236d7b, 0xbefeaae2, 0x3ee111d7, 0xbf4214e2, 0x3f8a0650, 0x3f4d0143, 0x3fd71e93,
        0x3eb63341, 0x3fa5f12f, 0x3f1c4788, 0x3faad8b0, 0xbe6d2eed, 0x3d2b0c00, 0xbe80ce7a, 0x3f5c1fb0,
        0xbe9e9487,
    ];
    const BASELINE_16_0: [u32; 16] = [
        0xbf901b85, 0xbf93808a, 0xbe804bd6, 0xbede255e, 0x3f594515, 0x3f312784, 0xbea1cc6d, 0xc0075fc2,
        0x3ea50138, 0xbfa1b4f4, 0x3eb330ff, 0x3e9dc3ba, 0x3df56f77, 0x3f9e6b93, 0x3f8ef28e, 0xbe7d365a,
    ];
    // numel < 16 takes the same double-precision path under every capability.
    const SMALL_5_42: [u32; 5] = [0x3eac62ae, 0x3e03e69d, 0x3e7016e7, 0x3e6bdc6c, 0xbf8fb9c2];

    fn bits(kernel: CpuKernel, seed: u64, n: usize) -> Vec<u32> {
        let mut out = vec![0.0f32; n];
        fill(kernel, seed, &mut out);
        out.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn avx2_kernel_matches_torch() {
        assert_eq!(bits(CpuKernel::Avx2, 42, 17), AVX2_17_42);
        assert_eq!(bits(CpuKernel::Avx2, 0, 16), AVX2_16_0);
    }

    #[test]
    fn baseline_kernel_matches_torch_on_glibc() {
        // Depends on the platform libm (see docs/noise.md); recorded with glibc.
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(bits(CpuKernel::Baseline, 42, 17), BASELINE_17_42);
            assert_eq!(bits(CpuKernel::Baseline, 0, 16), BASELINE_16_0);
        }
    }

    #[test]
    fn small_path_matches_torch_and_ignores_high_seed_bits() {
        for kernel in [CpuKernel::Avx2, CpuKernel::Baseline] {
            assert_eq!(bits(kernel, 42, 5), SMALL_5_42);
            assert_eq!(bits(kernel, (1 << 40) + 7, 1), [0xbe165174]);
        }
    }

    #[test]
    fn tail_redraw_keeps_the_leading_blocks() {
        // 17 elements: block 0..16 is the 16-element fill of the same stream, then positions
        // 1..17 are redrawn, so only element 0 survives from the first block.
        let a = bits(CpuKernel::Avx2, 9, 16);
        let b = bits(CpuKernel::Avx2, 9, 17);
        assert_eq!(a[0], b[0]);
        let c = bits(CpuKernel::Avx2, 9, 48);
        let d = bits(CpuKernel::Avx2, 9, 40);
        assert_eq!(c[..24], d[..24]);
    }
}
