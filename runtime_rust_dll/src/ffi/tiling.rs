//! C ABI of [`crate::tiling`]: the VAE tile plan.

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
pub use crate::tiling::AceTileWindow;
use crate::tiling;

/// Number of windows in the VAE tile plan for `frames` latent frames (official defaults: chunk 512,
/// overlap 64): 1 if `frames <= chunk`, else `ceil(frames / (chunk − 2·overlap))`.
///
/// Errors: `frames` outside [1, 15000], `chunk == 0`, `2·overlap >= chunk`. Thread-safe.
///
/// # Safety
/// `out_count` must be valid for one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_vae_tile_count(frames: u32, chunk: u32, overlap: u32, out_count: *mut usize) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_count, "out_count")?;
        let n = tiling::tile_count(frames, chunk, overlap)?;
        ptr::write_out(out_count, n, "out_count")
    })
}

/// Fills `windows[0..count]` with the VAE tile plan (spec §6) and writes `count` to `*out_count`.
/// Decode latent frames `[start, end)` of each window, drop `crop_left` samples at the front and
/// `crop_right` at the back, and concatenate: the result has exactly `1920·frames` samples.
///
/// `capacity` is the number of `AceTileWindow` slots at `windows`; it must be at least
/// `ace_vae_tile_count(...)` (else `ACE_STATUS_LENGTH_MISMATCH`, nothing written). Other errors as
/// for `ace_vae_tile_count`. Thread-safe.
///
/// # Safety
/// `windows` must be valid for `capacity` elements; `out_count` for one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_vae_tile_plan(
    frames: u32,
    chunk: u32,
    overlap: u32,
    windows: *mut AceTileWindow,
    capacity: usize,
    out_count: *mut usize,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_count, "out_count")?;
        let plan = tiling::tile_plan(frames, chunk, overlap)?;
        if windows.is_null() {
            return Err(crate::Error::new(crate::ErrorKind::NullPointer, "windows is null"));
        }
        if capacity < plan.len() {
            return Err(crate::Error::length_mismatch(format!(
                "windows has capacity {capacity} but the plan has {} windows",
                plan.len()
            )));
        }
        ptr::slice_out(windows, plan.len(), "windows")?.copy_from_slice(&plan);
        ptr::write_out(out_count, plan.len(), "out_count")
    })
}
