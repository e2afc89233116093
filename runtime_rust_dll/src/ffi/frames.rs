//! C ABI of [`crate::frames`]: duration ↔ latent frames ↔ samples.

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
use crate::frames;

/// Latent frames (25 Hz) for a duration in seconds: `T = int(round(duration, 1)·48000) // 1920`, with
/// Python's `round` (ties to even on the exact binary value). Valid durations are 10–600 s
/// inclusive; anything else (NaN, infinities, negative) fails with `ACE_STATUS_INVALID_ARGUMENT` and
/// a message naming the duration and the range. Thread-safe.
///
/// # Safety
/// `out_frames` must be valid for one `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_frames_from_duration(duration_s: f64, out_frames: *mut u32) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_frames, "out_frames")?;
        let t = frames::frames_from_duration(duration_s)?;
        ptr::write_out(out_frames, t, "out_frames")
    })
}

/// Length the DiT runs at for `frames` latent frames: `max(128, frames)`; the padding is silence
/// latents and is not cropped from the decoded audio. `frames` must be in [1, 15000].
///
/// # Safety
/// `out_frames` must be valid for one `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_frames_dit_length(frames: u32, out_frames: *mut u32) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_frames, "out_frames")?;
        let t = frames::dit_frames(frames)?;
        ptr::write_out(out_frames, t, "out_frames")
    })
}

/// Audio samples per channel for `frames` latent frames: `1920·frames` (48 kHz). `frames` must be in
/// [1, 15000].
///
/// # Safety
/// `out_samples` must be valid for one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_frames_to_samples(frames: u32, out_samples: *mut u64) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_samples, "out_samples")?;
        let n = frames::samples_from_frames(frames)?;
        ptr::write_out(out_samples, n, "out_samples")
    })
}
