//! The Oobleck VAE's Snake activation in one pass, for the ONNX Runtime kernel in `ffi::ort_ops`.
//!
//! The exported graphs compute Snake as `(x + c) − c·cos(a·x)` (a = 2·exp(α), c = 0.5/(exp(β) + 1e-9),
//! per channel; `tools/onnx_export/vae.py`, FoldedSnake). ONNX Runtime runs that as five full-tensor
//! passes, one of them a scalar cosine: about a third of the VAE decoder's time. Here it is one pass
//! with a cosine the compiler vectorises, in the same operation order as the graph, so the only
//! difference from the graph is the cosine's rounding (≤ ~1e-7 absolute).

/// Cody–Waite split of π/2: `PIO2_HI` has 8 significant bits, so `q·PIO2_HI` is exact for
/// |q| < 2¹⁶, i.e. for |u| up to [`REDUCTION_LIMIT`].
const PIO2_HI: f32 = 1.570_312_5;
const PIO2_MID: f32 = 4.837_513e-4;
const PIO2_LO: f32 = 7.549_79e-8;
/// Past this |u| the three-part reduction loses accuracy; such lanes are recomputed with libm.
const REDUCTION_LIMIT: f32 = 8192.0;

/// cos(u) for |u| ≤ [`REDUCTION_LIMIT`]: quadrant reduction, then the minimax polynomials of sin and
/// cos on [−π/4, π/4] (Cephes' single-precision coefficients). Branch-free so that loops over it
/// vectorise.
#[inline(always)]
fn cos_reduced(u: f32) -> f32 {
    let q = (u * std::f32::consts::FRAC_2_PI + 0.5).floor();
    let r = ((u - q * PIO2_HI) - q * PIO2_MID) - q * PIO2_LO;
    let z = r * r;
    let sin_r = ((-1.951_529_6e-4 * z + 8.332_161e-3) * z - 1.666_665_5e-1) * z * r + r;
    let cos_r = ((2.443_315_7e-5 * z - 1.388_731_6e-3) * z + 4.166_664_6e-2) * z * z - 0.5 * z + 1.0;
    // cos(r + q·π/2) by quadrant q mod 4: cos r, −sin r, −cos r, sin r. In float arithmetic (q is a
    // small integer, so exact): an integer conversion would keep the loop from vectorising.
    let quadrant = q - 4.0 * (q * 0.25).floor();
    let value = if quadrant == 1.0 || quadrant == 3.0 { sin_r } else { cos_r };
    if quadrant == 1.0 || quadrant == 2.0 {
        -value
    } else {
        value
    }
}

#[inline(always)]
fn snake_row_generic(x: &[f32], y: &mut [f32], scale: f32, c: f32) {
    let mut out_of_range = false;
    for (xi, yi) in x.iter().zip(y.iter_mut()) {
        let u = scale * xi;
        out_of_range |= !(u.abs() <= REDUCTION_LIMIT); // also NaN
        *yi = (xi + c) - c * cos_reduced(u);
    }
    if out_of_range {
        for (xi, yi) in x.iter().zip(y.iter_mut()) {
            let u = scale * xi;
            if !(u.abs() <= REDUCTION_LIMIT) {
                *yi = (xi + c) - c * u.cos();
            }
        }
    }
}

// The same loop compiled for wider vectors, picked at run time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn snake_row_avx512(x: &[f32], y: &mut [f32], scale: f32, c: f32) {
    snake_row_generic(x, y, scale, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn snake_row_avx2(x: &[f32], y: &mut [f32], scale: f32, c: f32) {
    snake_row_generic(x, y, scale, c)
}

/// One channel's row: `y[i] = (x[i] + c) − c·cos(scale·x[i])`. `x` and `y` have the same length.
pub fn snake_row(x: &[f32], y: &mut [f32], scale: f32, c: f32) {
    assert_eq!(x.len(), y.len(), "snake_row: input and output lengths differ");
    // SAFETY (both calls): the CPU has the features the function is compiled for.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return unsafe { snake_row_avx512(x, y, scale, c) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return unsafe { snake_row_avx2(x, y, scale, c) };
    }
    snake_row_generic(x, y, scale, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f32, scale: f32, c: f32) -> f64 {
        let (x, scale, c) = (x as f64, scale as f64, c as f64);
        (x + c) - c * (scale * x).cos()
    }

    #[test]
    fn cosine_is_within_two_ulp_of_one_over_the_reduced_range() {
        // Deterministic sweep plus the quadrant boundaries, where the reduction is most delicate.
        let mut worst = 0.0f64;
        let mut u = -REDUCTION_LIMIT;
        while u <= REDUCTION_LIMIT {
            for v in [u, u + 0.123_456_7, (u / std::f32::consts::FRAC_PI_2).round() * std::f32::consts::FRAC_PI_2] {
                let err = (cos_reduced(v) as f64 - (v as f64).cos()).abs();
                worst = worst.max(err);
            }
            u += 0.731;
        }
        assert!(worst <= 2.0 * f32::EPSILON as f64, "max |cos error| {worst:e}");
    }

    #[test]
    fn a_row_matches_the_graph_formula_in_f64() {
        let x: Vec<f32> = (0..4099).map(|i| ((i as f32) * 0.37).sin() * 3.0 + (i as f32) * 1e-3).collect();
        for (scale, c) in [(2.0f32, 0.5f32), (0.013, 38.0), (117.0, 0.0021)] {
            let mut y = vec![0.0f32; x.len()];
            snake_row(&x, &mut y, scale, c);
            for (xi, yi) in x.iter().zip(&y) {
                let want = reference(*xi, scale, c);
                let tol = 4.0 * f32::EPSILON as f64 * (want.abs() + c as f64 + xi.abs() as f64);
                assert!((*yi as f64 - want).abs() <= tol, "x {xi} scale {scale} c {c}: {yi} vs {want}");
            }
        }
    }

    #[test]
    fn arguments_past_the_reduction_range_fall_back_to_libm() {
        let x = [1e6f32, -3e5, 0.5, f32::INFINITY, f32::NAN];
        let mut y = [0.0f32; 5];
        snake_row(&x, &mut y, 1.0, 0.25);
        for (xi, yi) in x[..3].iter().zip(&y[..3]) {
            assert_eq!(*yi, (xi + 0.25) - 0.25 * xi.cos(), "x {xi}");
        }
        assert!(y[3].is_nan() && y[4].is_nan(), "inf and NaN inputs give NaN, as the graph's Cos does: {y:?}");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_vector_width_gives_the_same_bits() {
        // Plain multiplies and adds (no fused multiply-add) in every path, so the CPU does not change the song.
        let x: Vec<f32> = (0..10_007).map(|i| ((i as f32) * 0.0137).cos() * 40.0 - 3.0).collect();
        let mut generic = vec![0.0f32; x.len()];
        snake_row_generic(&x, &mut generic, 3.7, 0.21);
        for (feature, wide) in [("avx2", snake_row_avx2 as unsafe fn(&[f32], &mut [f32], f32, f32)), ("avx512f", snake_row_avx512)] {
            if !std::arch::is_x86_feature_detected!("avx2") || (feature == "avx512f" && !std::arch::is_x86_feature_detected!("avx512f")) {
                continue;
            }
            let mut y = vec![0.0f32; x.len()];
            // SAFETY: the feature was detected above.
            unsafe { wide(&x, &mut y, 3.7, 0.21) };
            assert!(y.iter().zip(&generic).all(|(a, b)| a.to_bits() == b.to_bits()), "{feature} differs from the scalar loop");
        }
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn mismatched_rows_are_refused() {
        snake_row(&[1.0, 2.0], &mut [0.0], 1.0, 1.0);
    }
}
