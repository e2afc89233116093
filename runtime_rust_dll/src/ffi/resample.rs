//! C ABI of [`crate::resample`]: sample-rate conversion of planar float32 audio.

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
use crate::resample;

/// Frames per channel after converting `frames` from `in_rate` to `out_rate`:
/// `ceil(frames·out_rate/in_rate)` (exact integer arithmetic; 32768 at 44100 → 35666 at 48000).
///
/// Errors: a rate of 0 or above `ACE_MAX_SAMPLE_RATE` (768000 Hz) (INVALID_ARGUMENT), overflow,
/// null `out_frames`. Thread-safe.
///
/// # Safety
/// `out_frames` valid for one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_resample_frames(
    frames: u64,
    in_rate: u32,
    out_rate: u32,
    out_frames: *mut u64,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_frames, "out_frames")?;
        let n = resample::resampled_frames(frames, in_rate, out_rate)?;
        ptr::write_out(out_frames, n, "out_frames")
    })
}

/// Converts planar float32 audio (`channels` blocks of `input_len / channels` frames, channel after
/// channel) from `in_rate` to `out_rate` Hz, e.g. ACE-Step v1's 44.1 kHz vocoder output to 48 kHz.
/// `out` holds `out_len = channels·ace_resample_frames(...)` floats, same layout; the start-up
/// delay is removed, so output frame j is at time j/out_rate. rubato's FFT resampler (windowed
/// sinc, exact ratio); its measured quality is in docs/resampling.md. Equal rates copy.
///
/// Errors: null pointers, `input_len` 0 or not a multiple of `channels`, `channels` 0 or > `ACE_RESAMPLE_MAX_CHANNELS` (64),
/// bad rates, `out_len` not the needed length (LENGTH_MISMATCH, naming it), non-finite input
/// values, overlapping buffers. Nothing is written on error except when the conversion itself
/// fails, which leaves `out` unspecified. Thread-safe.
///
/// # Safety
/// `input` valid for `input_len` floats, `out` for `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_resample(
    input: *const f32,
    input_len: usize,
    channels: u32,
    in_rate: u32,
    out_rate: u32,
    out: *mut f32,
    out_len: usize,
) -> AceStatus {
    guard(|| {
        let input = ptr::slice_in(input, input_len, "input")?;
        let out = ptr::slice_out(out, out_len, "out")?;
        ptr::ensure_disjoint(input, "input", out, "out")?;
        resample::resample(input, channels as usize, in_rate, out_rate, out)
    })
}
