//! C ABI of the noise module: `ace_noise_fill` and the stateful `AceNoiseStream`.

use std::ffi::c_char;

use super::guard::guard;
use super::ptr::{self, ensure_len, ensure_out, slice_in, slice_out, write_out};
use crate::shape;
use super::AceStatus;
use crate::noise::{fill_normal, resolve_seed, NoiseMode, NoiseStream};

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

/// Opaque seeded generator that keeps its state between draws (`AceNoiseStream`).
pub struct AceNoiseStream {
    inner: NoiseStream,
}

/// Creates a generator seeded like `ace_noise_fill`: its first `ace_noise_stream_fill` gives the
/// same values as `ace_noise_fill` with this seed and options, and each later fill continues the
/// stream, as successive draws from one `torch.Generator().manual_seed(seed)` do
/// (`randn(..., generator=g)`, `empty(...).normal_(generator=g)`). ACE-Step v1's PingPong sampler
/// draws its step noise from the generator of the initial noise this way (one generator per
/// batch: the official code uses the first item's generator for the whole batch tensor).
///
/// `options_json` as for `ace_noise_fill` (NULL = torch CPU). `seed` ≥ 0 is used as is; < 0 draws
/// a random seed, written to `*out_seed_used`. Free with `ace_noise_stream_free`. One thread at a
/// time per object.
///
/// # Safety
/// `options_json` NULL or a NUL-terminated string; `out_seed_used` valid for one `int64_t`;
/// `out` valid for one `AceNoiseStream *`.
#[no_mangle]
pub unsafe extern "C" fn ace_noise_stream_create(
    options_json: *const c_char,
    seed: i64,
    out_seed_used: *mut i64,
    out: *mut *mut AceNoiseStream,
) -> AceStatus {
    guard(|| {
        ensure_out(out_seed_used, "out_seed_used")?;
        ensure_out(out, "out")?;
        let options = ptr::opt_str_in(options_json, "options_json")?;
        let mode = NoiseMode::from_json(options)?;
        let stream = NoiseStream::new(mode, resolve_seed(seed))?;
        let seed_used = stream.seed() as i64;
        ptr::handle_out(out, AceNoiseStream { inner: stream }, "out")?;
        write_out(out_seed_used, seed_used, "out_seed_used")
    })
}

/// Draws the next `len` standard normal values of the stream into `out` (any shape, row-major;
/// torch's values depend on the element count of each draw, so draw per tensor as the reference
/// does). `len` 0 draws nothing. On error the stream is unchanged.
///
/// # Safety
/// `stream` from `ace_noise_stream_create`; `out` valid for `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_noise_stream_fill(
    stream: *mut AceNoiseStream,
    out: *mut f32,
    len: usize,
) -> AceStatus {
    guard(|| {
        let stream = ptr::handle_mut(stream, "stream")?;
        if len == 0 {
            return Ok(());
        }
        let out = slice_out(out, len, "out")?;
        stream.inner.fill(out)
    })
}

/// Frees a noise stream. Null is a no-op.
///
/// # Safety
/// `stream` must be null or come from `ace_noise_stream_create` and not be freed yet.
#[no_mangle]
pub unsafe extern "C" fn ace_noise_stream_free(stream: *mut AceNoiseStream) {
    ptr::handle_free(stream);
}
