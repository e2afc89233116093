//! Output peak guard (spec §6, official `generate_music` after the VAE decode):
//! `peak = |x|.amax(dim=[1, 2])` per item; if ANY item has `peak > 1`, the whole batch is divided by
//! `peak.clamp(min=1)`. Each item is thus divided by its own peak when that peak exceeds 1, and items
//! with `peak <= 1` are divided by exactly 1 (unchanged). No loudness normalisation, no limiting.

use crate::error::{Error, Result};

/// Applies the guard in place to `audio` laid out `[batch, channels, samples]` (float32) and returns
/// each item's peak as measured before the guard. Non-finite samples are an error and leave the
/// audio unchanged.
pub fn peak_guard(audio: &mut [f32], batch: usize, channels: usize, samples: usize) -> Result<Vec<f32>> {
    for (name, v) in [("batch", batch), ("channels", channels), ("samples", samples)] {
        if v == 0 {
            return Err(Error::length_mismatch(format!("audio shape dimension {name} is 0")));
        }
    }
    let overflow = || Error::length_mismatch(format!("shape [{batch}, {channels}, {samples}] overflows"));
    let item = channels.checked_mul(samples).ok_or_else(overflow)?;
    let total = item.checked_mul(batch).ok_or_else(overflow)?;
    if audio.len() != total {
        return Err(Error::length_mismatch(format!(
            "audio has {} elements but shape [{batch}, {channels}, {samples}] needs {total}",
            audio.len()
        )));
    }
    let mut peaks = Vec::with_capacity(batch);
    for (b, x) in audio.chunks_exact(item).enumerate() {
        // max of |x| with NaN detection folded in (NaN compares false, so track it separately).
        let mut peak = 0.0f32;
        let mut finite = true;
        for &v in x {
            peak = peak.max(v.abs());
            finite &= v.is_finite();
        }
        if !finite {
            let i = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(Error::invalid_argument(format!(
                "audio item {b} contains a non-finite sample ({}) at index {i} of the item",
                x[i]
            )));
        }
        peaks.push(peak);
    }
    if peaks.iter().any(|&p| p > 1.0) {
        for (x, &p) in audio.chunks_exact_mut(item).zip(&peaks) {
            if p > 1.0 {
                for v in x {
                    *v /= p;
                }
            }
        }
    }
    Ok(peaks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loud_items_are_scaled() {
        let mut a = vec![0.5, -0.25, 0.1, 0.2, /* item 1 */ 2.0, -4.0, 1.0, 0.0];
        let peaks = peak_guard(&mut a, 2, 2, 2).unwrap();
        assert_eq!(peaks, vec![0.5, 4.0]);
        assert_eq!(a, vec![0.5, -0.25, 0.1, 0.2, 0.5, -1.0, 0.25, 0.0]);
    }

    #[test]
    fn nan_is_rejected_and_audio_kept() {
        let mut a = vec![2.0, f32::NAN];
        assert!(peak_guard(&mut a, 1, 1, 2).is_err());
        assert_eq!(a[0], 2.0);
    }
}
