//! C ABI of [`crate::peak_guard`].

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
use crate::peak_guard;

/// Output peak guard, in place, on float32 audio `[batch, channels, samples]` (`len` floats):
/// per item `peak = max |x|`; if any item's peak exceeds 1, every item is divided by
/// `max(its peak, 1)` (so items with peak <= 1 are unchanged). If `peaks_out` is not null it
/// receives the `batch` peaks measured before the guard (`peaks_len` must then be `batch`).
///
/// Errors: null `audio`, zero dimensions, `len` not `batch·channels·samples`, a non-finite sample
/// (audio left unchanged), `peaks_len != batch`. Thread-safe.
///
/// # Safety
/// `audio` must be valid for `len` floats; `peaks_out` null or valid for `peaks_len` floats and not
/// overlapping `audio`.
#[no_mangle]
pub unsafe extern "C" fn ace_peak_guard(
    audio: *mut f32,
    len: usize,
    batch: u32,
    channels: u32,
    samples: u64,
    peaks_out: *mut f32,
    peaks_len: usize,
) -> AceStatus {
    guard(|| {
        let audio = ptr::slice_out(audio, len, "audio")?;
        let samples = usize::try_from(samples)
            .map_err(|_| crate::Error::length_mismatch(format!("samples {samples} is too large")))?;
        let peaks_slot = if peaks_out.is_null() {
            None
        } else {
            ptr::ensure_len(peaks_len, batch as usize, "peaks_out")?;
            let slot = ptr::slice_out(peaks_out, peaks_len, "peaks_out")?;
            ptr::ensure_disjoint(audio, "audio", slot, "peaks_out")?;
            Some(slot)
        };
        let peaks = peak_guard::peak_guard(audio, batch as usize, channels as usize, samples)?;
        if let Some(slot) = peaks_slot {
            slot.copy_from_slice(&peaks);
        }
        Ok(())
    })
}
