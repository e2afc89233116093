//! Portable re-enactment of the Cephes-style float `log` and `sincos` that torch's AVX2 normal
//! kernel evaluates eight lanes at a time (the `avx_mathfun` polynomials), step for step in f32.
//!
//! Bit-exactness depends on matching not only the formulas but where the compiler fused a multiply
//! and an add into one FMA: torch 2.9.1's x86-64 AVX2 build (GCC, `-mfma`, default FP contraction)
//! fuses every Horner step and a few other pairs. Each `fma` below marks a fused pair found in
//! that build's machine code; every other operation is rounded on its own.

// Constants are spelled as in the Cephes/avx_mathfun source: the kernel uses those decimals
// rounded to f32, which is exactly what these literals give.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

/// Single-rounded a·b + c in f32 (same result as `f32::mul_add`), computed through f64 without a
/// libm call: a·b is exact in f64, so only the sum is rounded before the final rounding to f32.
/// That double rounding can only go wrong when the f64 sum lands exactly on a midpoint between
/// two f32 values (or in f32's subnormal range); those rare cases take the exact slow path.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let p = a as f64 * b as f64;
    let s = p + c as f64;
    // 29 = 52 − 23 low bits dropped when rounding a normal f64 to f32; 1000…0 is the midpoint.
    let on_midpoint = s.to_bits() & 0x1fff_ffff == 0x1000_0000;
    if !on_midpoint && s.abs() >= f32::MIN_POSITIVE as f64 {
        return s as f32;
    }
    fma_round_to_odd(p, c as f64, s)
}

/// The slow path of [`fma`]: rounds p + c to odd in f64 (correct for a later rounding to f32,
/// since 53 ≥ 2·24 + 2), then to f32.
#[cold]
fn fma_round_to_odd(p: f64, c: f64, s: f64) -> f32 {
    if !s.is_finite() {
        return s as f32;
    }
    // TwoSum: the exact rounding error of p + c.
    let bp = s - p;
    let err = (p - (s - bp)) + (c - bp);
    let bits = s.to_bits();
    if err == 0.0 || bits & 1 == 1 {
        return s as f32;
    }
    // s is even and inexact: step to the odd neighbour on the side of the exact value.
    let toward_larger_magnitude = (err > 0.0) == (s > 0.0);
    f64::from_bits(if toward_larger_magnitude { bits + 1 } else { bits - 1 }) as f32
}

/// The kernel's eight lanes: every step below runs over all lanes before the next one, which keeps
/// the (latency-bound) exact-FMA chains of independent lanes interleaved.
pub type Lanes = [f32; 8];

#[inline(always)]
fn lanes(f: impl FnMut(usize) -> f32) -> Lanes {
    std::array::from_fn(f)
}

/// log(x) per lane for x in (0, 1] (the kernel only sees 1 − uniform). Non-positive inputs give
/// NaN, like the vector code; denormals are clamped to the smallest normal first.
pub fn log8(x: Lanes) -> Lanes {
    const SQRTHF: f32 = 0.707_106_781_186_547_524;
    const P: [f32; 9] = [
        7.037_683_629_2e-2,
        -1.151_461_031_0e-1,
        1.167_699_874_0e-1,
        -1.242_014_084_6e-1,
        1.424_932_278_7e-1,
        -1.666_805_766_5e-1,
        2.000_071_476_5e-1,
        -2.499_999_399_3e-1,
        3.333_333_117_4e-1,
    ];
    const Q1: f32 = -2.121_944_40e-4;
    const Q2: f32 = 0.693_359_375;

    let mut e = [0.0f32; 8];
    let mut m = [0.0f32; 8];
    for l in 0..8 {
        let bits = x[l].max(f32::MIN_POSITIVE).to_bits();
        // Exponent as the vector code computes it: (bits >> 23) − 127, + 1 for a mantissa in [0.5, 1).
        e[l] = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
        m[l] = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
        if m[l] < SQRTHF {
            e[l] -= 1.0;
            m[l] = (m[l] - 1.0) + m[l];
        } else {
            m[l] = (m[l] - 1.0) + 0.0;
        }
    }
    let z = lanes(|l| m[l] * m[l]);
    let mut y = [P[0]; 8];
    for &p in &P[1..] {
        y = lanes(|l| fma(y[l], m[l], p));
    }
    let y = lanes(|l| y[l] * m[l]);
    let y = lanes(|l| fma(y[l], z[l], e[l] * Q1));
    let y = lanes(|l| fma(-z[l], 0.5, y[l]));
    lanes(|l| if x[l] <= 0.0 || x[l].is_nan() { f32::NAN } else { fma(e[l], Q2, m[l] + y[l]) })
}

/// (sin(x), cos(x)) per lane, for the kernel's angles 2π·u with u in [0, 1).
pub fn sincos8(x: Lanes) -> (Lanes, Lanes) {
    const FOPI: f32 = 1.273_239_544_735_16;
    const MINUS_DP1: f32 = -0.785_156_25;
    const MINUS_DP2: f32 = -2.418_756_484_985_351_562_5e-4;
    const MINUS_DP3: f32 = -3.774_894_977_445_941_08e-8;
    const SINCOF: [f32; 3] = [-1.951_529_589_1e-4, 8.332_160_873_6e-3, -1.666_665_461_1e-1];
    const COSCOF: [f32; 3] = [2.443_315_711_809_948e-5, -1.388_731_625_493_765e-3, 4.166_664_568_298_827e-2];

    let ax = lanes(|l| x[l].abs());
    // Octant j = (trunc(|x|·4/π) + 1) & !1 (cvttps2dq truncates; angles here stay far below 2^31).
    let j: [i32; 8] = std::array::from_fn(|l| (((ax[l] * FOPI) as i32).wrapping_add(1)) & !1);
    let y = lanes(|l| j[l] as f32);

    // Extended-precision range reduction, each step fused in the AVX2 build.
    let r = lanes(|l| fma(y[l], MINUS_DP1, ax[l]));
    let r = lanes(|l| fma(y[l], MINUS_DP2, r[l]));
    let r = lanes(|l| fma(y[l], MINUS_DP3, r[l]));
    let z = lanes(|l| r[l] * r[l]);

    // Cosine polynomial on [0, π/4].
    let c = lanes(|l| fma(COSCOF[0], z[l], COSCOF[1]));
    let c = lanes(|l| fma(c[l], z[l], COSCOF[2]));
    let c = lanes(|l| c[l] * z[l]);
    let c = lanes(|l| fma(c[l], z[l], -(z[l] * 0.5)));
    let c = lanes(|l| c[l] + 1.0);

    // Sine polynomial on [0, π/4].
    let s = lanes(|l| fma(SINCOF[0], z[l], SINCOF[1]));
    let s = lanes(|l| fma(s[l], z[l], SINCOF[2]));
    let s = lanes(|l| s[l] * z[l]);
    let s = lanes(|l| fma(s[l], r[l], r[l]));

    let mut sin = [0.0f32; 8];
    let mut cos = [0.0f32; 8];
    for l in 0..8 {
        let sign_sin = (x[l].to_bits() & 0x8000_0000) ^ (((j[l] & 4) as u32) << 29);
        let sign_cos = ((!(j[l].wrapping_sub(2)) & 4) as u32) << 29;
        // The vector code blends the two polynomials with masks and adds a +0.0 from the unused
        // one; the `+ 0.0` keeps that (it only ever turns −0 into +0).
        let (sin_abs, cos_abs) = if j[l] & 2 == 0 { (s[l] + 0.0, c[l] + 0.0) } else { (c[l] + 0.0, s[l] + 0.0) };
        sin[l] = f32::from_bits(sin_abs.to_bits() ^ sign_sin);
        cos[l] = f32::from_bits(cos_abs.to_bits() ^ sign_cos);
    }
    (sin, cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_fma_avoids_double_rounding() {
        // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 is exactly halfway between two f32 values; a tiny c
        // decides the direction, but f64 alone would lose it and round the tie to even.
        let a = 1.0 + 2f32.powi(-12);
        let up = 1.0 + 2f32.powi(-11) + 2f32.powi(-23);
        let down = 1.0 + 2f32.powi(-11);
        assert_eq!(fma(a, a, 2f32.powi(-60)), up);
        assert_eq!(fma(a, a, -(2f32.powi(-60))), down);
        assert_eq!(fma(a, a, 0.0), down);
        assert_eq!(a.mul_add(a, 2f32.powi(-60)), up);
        assert_eq!(fma(-a, a, -(2f32.powi(-60))), -up);
        assert_eq!(fma(1e-20, 1e-20, 0.0), 1e-20f32.mul_add(1e-20, 0.0), "f32 subnormal result");
        assert_eq!(fma(-0.0, 1.0, 0.0).to_bits(), 0.0f32.to_bits());
    }

    #[test]
    fn software_fma_matches_hardware_or_libm_fma() {
        // f32::mul_add is the reference (one rounding, by the CPU or libm's fmaf).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..2_000_000 {
            let r = next();
            // Mix of magnitudes, including near-cancellations (c ≈ −a·b) where rounding is subtle.
            let a = f32::from_bits((r as u32 & 0x807f_ffff) | (((r >> 32) as u32 % 40 + 107) << 23));
            let b = f32::from_bits(((r >> 23) as u32 & 0x807f_ffff) | (((r >> 40) as u32 % 40 + 107) << 23));
            let c = if i % 3 == 0 { -(a * b) * (1.0 + f32::EPSILON * ((r >> 56) as f32 - 128.0)) } else {
                f32::from_bits(((r >> 11) as u32 & 0x807f_ffff) | (((r >> 48) as u32 % 60 + 97) << 23))
            };
            assert_eq!(fma(a, b, c).to_bits(), a.mul_add(b, c).to_bits(), "fma({a:e}, {b:e}, {c:e})");
            // A product whose f64 sum with c sits exactly on an f32 midpoint, nudged by a tiny
            // term: the case a naive f64 evaluation double-rounds wrongly.
            let (m, k) = (1.0 + (r as u32 >> 9) as f32 * f32::EPSILON, 1.0 + 2f32.powi(-12));
            let tiny = if i % 2 == 0 { 2f32.powi(-40) } else { -(2f32.powi(-40)) };
            let c2 = m * k - m - tiny * k;
            assert_eq!(fma(m, k, c2).to_bits(), m.mul_add(k, c2).to_bits(), "fma({m:e}, {k:e}, {c2:e})");
        }
    }

    #[test]
    fn log_is_close_to_libm_on_unit_interval() {
        for i in 1..=100_000u32 {
            let x = i as f32 / 100_000.0;
            let (ours, want) = (log8([x; 8])[3] as f64, (x as f64).ln());
            assert!((ours - want).abs() <= 2e-7 * want.abs().max(1e-3), "log({x}) = {ours}, want {want}");
        }
        let edge = log8([0.0, -1.0, 1.0, f32::MIN_POSITIVE / 4.0, 0.5, 0.25, 1e-30, 0.75]);
        assert!(edge[0].is_nan() && edge[1].is_nan());
        assert_eq!(edge[2], 0.0);
        assert_eq!(edge[3], f32::MIN_POSITIVE.ln(), "denormals are clamped to the smallest normal");
        for (got, x) in edge[4..].iter().zip([0.5f32, 0.25, 1e-30, 0.75]) {
            assert!((*got as f64 - (x as f64).ln()).abs() < 1e-6 * (x as f64).ln().abs());
        }
    }

    #[test]
    fn sincos_is_close_to_libm_over_a_full_turn() {
        for i in 0..100_000u32 {
            let x = i as f32 * (std::f32::consts::TAU / 100_000.0);
            let (s, c) = sincos8([x; 8]);
            let (s, c) = (s[5], c[5]);
            assert!((s as f64 - (x as f64).sin()).abs() < 3e-7, "sin({x})");
            assert!((c as f64 - (x as f64).cos()).abs() < 3e-7, "cos({x})");
        }
        let (s, c) = sincos8([-1.0; 8]);
        let (s, c) = (s[0], c[0]);
        assert!((s as f64 + 1f64.sin()).abs() < 1e-7 && (c as f64 - 1f64.cos()).abs() < 1e-7);
    }
}
