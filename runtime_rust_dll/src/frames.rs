//! Duration ↔ latent-frame arithmetic of ACE-Step 1.5 (spec §3.1, §1.9): 48 kHz audio, 1920 samples
//! per 25 Hz latent frame, durations 10–600 s, at most 15000 frames, at least 128 frames fed to
//! the DiT.

use crate::error::{Error, Result};

/// Output sample rate (Hz).
pub const SAMPLE_RATE: u32 = 48_000;
/// Audio samples per latent frame (VAE hop): 48000 / 25.
pub const SAMPLES_PER_FRAME: u32 = 1920;
/// Shortest and longest duration the official pipeline accepts (`DURATION_MIN`/`DURATION_MAX`).
pub const DURATION_MIN_S: f64 = 10.0;
pub const DURATION_MAX_S: f64 = 600.0;
/// Longest latent sequence: 600 s (the length of `silence_latent`).
pub const MAX_FRAMES: u32 = 15_000;
/// Latents shorter than this are padded with silence before the DiT (`max(128, T)`).
pub const MIN_DIT_FRAMES: u32 = 128;

/// Python's `round(x, 1)`: the decimal with one fractional digit nearest to the exact binary value
/// of `x` (ties to even), read back as a double. Rust's `{:.1}` formatting rounds the exact value
/// the same way, so formatting and parsing back reproduces Python bit for bit.
fn python_round_1(x: f64) -> f64 {
    format!("{x:.1}").parse().expect("a formatted finite float parses back")
}

/// Latent frames for a duration: `T = int(round(duration, 1)·48000) // 1920` (spec §3.1), for
/// durations in [10, 600] s. Anything else (including NaN and infinities) is an error naming the
/// value and the range.
pub fn frames_from_duration(duration_s: f64) -> Result<u32> {
    if !(DURATION_MIN_S..=DURATION_MAX_S).contains(&duration_s) {
        return Err(Error::invalid_argument(format!(
            "duration {duration_s} s is outside the supported range [{DURATION_MIN_S}, {DURATION_MAX_S}] s"
        )));
    }
    let samples = (python_round_1(duration_s) * SAMPLE_RATE as f64).trunc() as u64;
    Ok((samples / SAMPLES_PER_FRAME as u64) as u32)
}

fn ensure_frames(frames: u32) -> Result<()> {
    if frames == 0 || frames > MAX_FRAMES {
        return Err(Error::invalid_argument(format!(
            "frames {frames} is outside the supported range [1, {MAX_FRAMES}]"
        )));
    }
    Ok(())
}

/// Length the DiT runs at: `max(128, T)`; the extra frames are silence latents and are not cropped
/// from the decoded audio afterwards (spec §3.1).
pub fn dit_frames(frames: u32) -> Result<u32> {
    ensure_frames(frames)?;
    Ok(frames.max(MIN_DIT_FRAMES))
}

/// Audio samples per channel decoded from `frames` latent frames: `1920·T`.
pub fn samples_from_frames(frames: u32) -> Result<u64> {
    ensure_frames(frames)?;
    Ok(frames as u64 * SAMPLES_PER_FRAME as u64)
}

/// ACE-Step v1 (spec §2): the vocoder's rate, and 8 mel frames of 512 samples per latent frame.
pub const V1_SAMPLE_RATE: u32 = 44_100;
pub const V1_SAMPLES_PER_FRAME: u32 = 4096;
/// The longest v1 song (the official UI's limit and the model's training length).
pub const V1_DURATION_MAX_S: f64 = 240.0;

/// v1 latent frames for a duration: `T = int(duration·44100/512/8)` (float64, in that order, then
/// truncated; spec §2: 240 s → 2583, 60 s → 645, 30 s → 322). Durations must give at least one
/// frame (≥ 4096/44100 s) and be at most 240 s; the official "≤ 0 picks a random duration" is a
/// host decision, not the core's.
pub fn v1_frames_from_duration(duration_s: f64) -> Result<u32> {
    let min = V1_SAMPLES_PER_FRAME as f64 / V1_SAMPLE_RATE as f64;
    if !(duration_s.is_finite() && duration_s <= V1_DURATION_MAX_S) {
        return Err(Error::invalid_argument(format!(
            "duration {duration_s} s is outside the v1 range [{min:.4}, {V1_DURATION_MAX_S}] s"
        )));
    }
    let t = (duration_s * V1_SAMPLE_RATE as f64 / 512.0 / 8.0).trunc();
    if t < 1.0 {
        return Err(Error::invalid_argument(format!(
            "duration {duration_s} s is outside the v1 range [{min:.4}, {V1_DURATION_MAX_S}] s (no whole latent frame)"
        )));
    }
    Ok(t as u32)
}

/// Samples per channel the v1 vocoder produces for `frames` latent frames (44.1 kHz): `4096·T`.
pub fn v1_samples_44k(frames: u32) -> u64 {
    frames as u64 * V1_SAMPLES_PER_FRAME as u64
}

/// Samples per channel after the official 44.1 → 48 kHz step: `ceil(4096·T·48000/44100)`.
pub fn v1_samples_48k(frames: u32) -> u64 {
    (v1_samples_44k(frames) * 160).div_ceil(147)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(frames_from_duration(10.0).unwrap(), 250);
        assert_eq!(frames_from_duration(240.0).unwrap(), 6000);
        assert_eq!(frames_from_duration(600.0).unwrap(), 15000);
        // round(10.04, 1) = 10.0; round(12.37, 1) = 12.4 → 595200 // 1920 = 310
        assert_eq!(frames_from_duration(10.04).unwrap(), 250);
        assert_eq!(frames_from_duration(12.37).unwrap(), 310);
        // exact binary tie: Python rounds 10.25 to 10.2 (even), and 10.2·48000 is
        // 489599.99999999994 in float64, so int() gives 489599 → 254 frames (Python: 254).
        assert_eq!(frames_from_duration(10.25).unwrap(), 254);
        // 10.75 → 10.8; 10.8·48000 = 518400.00000000006 → 270 (Python: 270).
        assert_eq!(frames_from_duration(10.75).unwrap(), 270);
    }

    #[test]
    fn out_of_range() {
        for d in [9.9, 600.1, f64::NAN, -5.0, f64::INFINITY] {
            let e = frames_from_duration(d).unwrap_err();
            assert!(e.message.contains("[10, 600]"), "{}", e.message);
        }
    }

    #[test]
    fn v1_spec_examples() {
        // spec §2 (computed there with the official formula)
        assert_eq!(v1_frames_from_duration(240.0).unwrap(), 2583);
        assert_eq!(v1_frames_from_duration(60.0).unwrap(), 645);
        assert_eq!(v1_frames_from_duration(30.0).unwrap(), 322);
        // an independent evaluation of int(d·44100/512/8) for awkward values
        for d in [0.0929, 0.1, 10.04, 12.37, 100.0 / 3.0, 239.99] {
            let want = (d * 44100.0 / 4096.0f64).floor() as i64;
            match v1_frames_from_duration(d) {
                Ok(t) => assert!((t as i64 - want).abs() <= 1 && t >= 1, "{d}"),
                Err(_) => assert_eq!(want, 0, "{d}"),
            }
        }
        assert!(v1_frames_from_duration(0.05).unwrap_err().message.contains("v1 range"));
        assert!(v1_frames_from_duration(240.5).is_err() && v1_frames_from_duration(f64::NAN).is_err());
        assert_eq!(v1_samples_44k(8), 32768);
        assert_eq!(v1_samples_48k(8), 35666); // spec §2, measured
        assert_eq!(v1_samples_48k(2583), (2583u64 * 4096 * 48000).div_ceil(44100));
    }

    #[test]
    fn padding_and_samples() {
        assert_eq!(dit_frames(50).unwrap(), 128);
        assert_eq!(dit_frames(250).unwrap(), 250);
        assert_eq!(samples_from_frames(250).unwrap(), 480_000);
        assert!(dit_frames(0).is_err() && samples_from_frames(15_001).is_err());
    }
}
