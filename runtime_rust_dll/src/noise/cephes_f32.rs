//! Scalar re-enactment of the Cephes-style float `log` and `sincos` that torch's AVX2 normal
//! kernel evaluates eight lanes at a time (the `avx_mathfun` polynomials), step for step in f32.
//!
//! Bit-exactness depends on matching not only the formulas but where the compiler fused a multiply
//! and an add into one FMA: torch 2.9.1's x86-64 AVX2 build (GCC, `-mfma`, default FP contraction)
//! fuses every Horner step and a few other pairs. Each `mul_add` below marks a fused pair found in
//! that build's machine code; every other operation is rounded on its own.

/// log(x) for x in (0, 1] (the kernel only sees 1 − uniform). Non-positive inputs give NaN, like
/// the vector code; denormals are clamped to the smallest normal first.
pub fn log(x: f32) -> f32 {
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

    let invalid = x <= 0.0 || x.is_nan();
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    // Exponent as the vector code computes it: (bits >> 23) − 127, then + 1 for a mantissa in [0.5, 1).
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    if m < SQRTHF {
        e -= 1.0;
        m = (m - 1.0) + m;
    } else {
        m -= 1.0;
    }
    let z = m * m;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y.mul_add(m, p);
    }
    y *= m;
    y = y.mul_add(z, e * Q1);
    y = (-z).mul_add(0.5, y);
    let r = e.mul_add(Q2, m + y);
    if invalid {
        f32::NAN
    } else {
        r
    }
}

/// (sin(x), cos(x)) for the kernel's angles 2π·u, u in [0, 1).
pub fn sincos(x: f32) -> (f32, f32) {
    const FOPI: f32 = 1.273_239_544_735_16;
    const MINUS_DP1: f32 = -0.785_156_25;
    const MINUS_DP2: f32 = -2.418_756_484_985_351_562_5e-4;
    const MINUS_DP3: f32 = -3.774_894_977_445_941_08e-8;
    const SINCOF: [f32; 3] = [-1.951_529_589_1e-4, 8.332_160_873_6e-3, -1.666_665_461_1e-1];
    const COSCOF: [f32; 3] = [2.443_315_711_809_948e-5, -1.388_731_625_493_765e-3, 4.166_664_568_298_827e-2];

    let sign_in = x.to_bits() & 0x8000_0000;
    let ax = x.abs();
    // Octant j = (trunc(|x|·4/π) + 1) & !1 (cvttps2dq truncates; angles here stay far below 2^31).
    let j = (((ax * FOPI) as i32).wrapping_add(1)) & !1;
    let y = j as f32;
    let swap_sin = ((j & 4) as u32) << 29;
    let use_sin_poly_for_sin = (j & 2) == 0;
    let sign_cos = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;
    let sign_sin = sign_in ^ swap_sin;

    // Extended-precision range reduction, each step fused in the AVX2 build.
    let mut r = y.mul_add(MINUS_DP1, ax);
    r = y.mul_add(MINUS_DP2, r);
    r = y.mul_add(MINUS_DP3, r);
    let z = r * r;

    // Cosine polynomial on [0, π/4].
    let mut c = COSCOF[0].mul_add(z, COSCOF[1]);
    c = c.mul_add(z, COSCOF[2]);
    c *= z;
    c = c.mul_add(z, -(z * 0.5));
    c += 1.0;

    // Sine polynomial on [0, π/4].
    let mut s = SINCOF[0].mul_add(z, SINCOF[1]);
    s = s.mul_add(z, SINCOF[2]);
    s *= z;
    s = s.mul_add(r, r);

    // The vector code blends the two results with masks and adds a +0.0 from the unused lane;
    // the `+ 0.0` keeps that (it only ever turns −0 into +0).
    let (sin_abs, cos_abs) = if use_sin_poly_for_sin { (s + 0.0, c + 0.0) } else { (c + 0.0, s + 0.0) };
    (f32::from_bits(sin_abs.to_bits() ^ sign_sin), f32::from_bits(cos_abs.to_bits() ^ sign_cos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_close_to_libm_on_unit_interval() {
        for i in 1..=100_000u32 {
            let x = i as f32 / 100_000.0;
            let (ours, want) = (log(x) as f64, (x as f64).ln());
            assert!((ours - want).abs() <= 2e-7 * want.abs().max(1e-3), "log({x}) = {ours}, want {want}");
        }
        assert!(log(0.0).is_nan());
        assert!(log(-1.0).is_nan());
        assert_eq!(log(1.0), 0.0);
    }

    #[test]
    fn sincos_is_close_to_libm_over_a_full_turn() {
        for i in 0..100_000u32 {
            let x = i as f32 * (std::f32::consts::TAU / 100_000.0);
            let (s, c) = sincos(x);
            assert!((s as f64 - (x as f64).sin()).abs() < 3e-7, "sin({x})");
            assert!((c as f64 - (x as f64).cos()).abs() < 3e-7, "cos({x})");
        }
        let (s, c) = sincos(-1.0);
        assert!((s as f64 + 1f64.sin()).abs() < 1e-7 && (c as f64 - 1f64.cos()).abs() < 1e-7);
    }
}
