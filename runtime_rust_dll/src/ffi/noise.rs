//! C ABI of the noise module: `ace_noise_fill`.

use std::ffi::c_char;

use super::guard::guard;
use super::ptr::{self, ensure_len, ensure_out, slice_in, slice_out, write_out};
use crate::shape;
use super::AceStatus;
use crate::noise::{fill_normal, resolve_seed, NoiseMode};

/// Fills `out` with standard normal noise of the given shape, reproducing torch's `randn` for a
/// freshly seeded generator.
///
/// - `options_json`: NULL (or `""`) for the default, else a JSON object:
///   `{"mode": "torch_cpu", "cpu_kernel": "avx2" | "baseline"}` (bit-exact
///   `torch.randn(shape, generator=torch.Generator().manual_seed(seed))`, float32 CPU; `avx2`,
///   the default, is what torch computes on x86-64 CPUs with AVX2, `baseline` its portable
///   kernel), or `{"mode": "torch_cuda", "sm_count": N, "max_threads_per_sm": 2048,
///   "bf16": false, "offset": 0}` (torch's CUDA Philox mapping; every key optional). Unknown
///   modes or keys fail with `ACE_STATUS_INVALID_JSON` naming them.
/// - `seed`: ≥ 0 is used as is (torch CPU uses its low 32 bits); < 0 draws a random seed in
///   0..=2^32−1. The seed actually used is written to `*out_seed_used`.
/// - `shape`/`ndim`: the tensor shape (row-major); every dimension must be ≥ 1; `ndim` 0 is a
///   scalar. `out_len` must equal the product of the dimensions.
///
/// Errors: `ACE_STATUS_NULL_POINTER` (shape, out, out_seed_used, naming it),
/// `ACE_STATUS_LENGTH_MISMATCH` (zero dimension, overflow, `out_len` ≠ numel),
/// `ACE_STATUS_INVALID_JSON`/`ACE_STATUS_INVALID_ARGUMENT` (options). Nothing is written on error.
/// Thread-safe: no shared state.
///
/// # Safety
/// `shape` must point to `ndim` values, `out` to `out_len` writable floats, `options_json` be
/// NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ace_noise_fill(
    options_json: *const c_char,
    seed: i64,
    shape: *const usize,
    ndim: usize,
    out: *mut f32,
    out_len: usize,
    out_seed_used: *mut i64,
) -> AceStatus {
    guard(|| {
        let options = ptr::opt_str_in(options_json, "options_json")?;
        let mode = NoiseMode::from_json(options)?;
        let dims = slice_in(shape, ndim, "shape")?;
        let numel = shape::numel(dims, "shape")?;
        ensure_len(out_len, numel, "out")?;
        ensure_out(out_seed_used, "out_seed_used")?;
        let out = slice_out(out, out_len, "out")?;
        let seed_used = resolve_seed(seed);
        fill_normal(&mode, seed_used, out)?;
        write_out(out_seed_used, seed_used as i64, "out_seed_used")
    })
}
