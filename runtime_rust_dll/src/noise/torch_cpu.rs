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

// torch applies `n·std + mean` even for randn (std 1, mean 0). That is exact, except that adding
// +0 turns a −0 (radius 0 times a negative cos/sin) into +0; keep the step for bit-exactness.
const MEAN: f32 = 0.0;
const STD: f32 = 1.0;
use super::mt19937::Mt19937;

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
    let mut mt = Mt19937::new(seed);
    if out.len() < 16 {
        fill_small(&mut mt, out);
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
    if out.len() % 16 != 0 {
        let n = out.len();
        let tail = &mut out[n - 16..];
        for v in tail.iter_mut() {
            *v = mt.uniform_f32();
        }
        transform(tail);
    }
}

/// The scalar path for fewer than 16 elements (torch's `normal_distribution<double>` with its
/// cached second sample; the cache starts empty on a fresh generator).
fn fill_small(mt: &mut Mt19937, out: &mut [f32]) {
    let mut cached: Option<f64> = None;
    for v in out.iter_mut() {
        let n = match cached.take() {
            Some(n) => n,
            None => {
                let u1 = mt.uniform_f64();
                let u2 = mt.uniform_f64();
                let r = (-2.0 * (-u2).ln_1p()).sqrt();
                let theta = 2.0 * std::f64::consts::PI * u1;
                cached = Some(r * theta.sin());
                r * theta.cos()
            }
        };
        *v = (n * STD as f64 + MEAN as f64) as f32;
    }
}

/// One block of 16 as `normal_fill_16_AVX2` computes it (ending in `fma(n, std, mean)`).
fn transform16_avx2(block: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let theta = block[j + 8] * two_pi;
        let radius = (-2.0 * cephes_f32::log(u1)).sqrt();
        let (sin, cos) = cephes_f32::sincos(theta);
        block[j] = (radius * cos).mul_add(STD, MEAN);
        block[j + 8] = (radius * sin).mul_add(STD, MEAN);
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
