//! Sample-rate conversion of decoded audio: ACE-Step v1's vocoder runs at 44.1 kHz and the
//! official pipeline hands out 48 kHz (spec §9), so every host needs the same 44.1 → 48 kHz step.
//!
//! The conversion is rubato's synchronous FFT resampler (overlap-add with a windowed-sinc
//! anti-aliasing filter; the rate ratio is exact, 160/147 for 44.1 → 48 kHz). It is not
//! torchaudio's polyphase `Resample` that the official code uses, so outputs agree with the
//! official ones to the resamplers' passband accuracy, not bit for bit; `docs/resampling.md` has
//! the measured passband ripple, stopband attenuation and the distance to the official
//! resampler.
//!
//! Layout: planar float32, `[channels, frames]` (channel after channel), as the decoders output.

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use crate::error::{Error, Result};

/// Highest sample rate accepted (both sides); far above any audio rate in use.
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Most channels of one call.
pub const MAX_CHANNELS: usize = 64;

/// FFT block of the filter, in units of the rates' smallest exact block (147 input frames for
/// 44.1 → 48 kHz): 14 units give a 2058-tap filter whose transition band sits above 20 kHz.
/// Larger blocks sharpen the filter and lengthen the (trimmed) start-up delay.
const BLOCK_UNITS: usize = 14;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn check_rates(in_rate: u32, out_rate: u32) -> Result<()> {
    for (name, rate) in [("in_rate", in_rate), ("out_rate", out_rate)] {
        if rate == 0 || rate > MAX_SAMPLE_RATE {
            return Err(Error::invalid_argument(format!(
                "{name} {rate} Hz is outside [1, {MAX_SAMPLE_RATE}] Hz"
            )));
        }
    }
    Ok(())
}

/// Frames per channel after conversion: `ceil(frames·out_rate/in_rate)` in exact integer
/// arithmetic (the official `ceil(T·4096·48000/44100)`, spec §2: 32768 → 35666).
pub fn resampled_frames(frames: u64, in_rate: u32, out_rate: u32) -> Result<u64> {
    check_rates(in_rate, out_rate)?;
    let g = gcd(in_rate as u64, out_rate as u64);
    let (num, den) = (out_rate as u64 / g, in_rate as u64 / g);
    frames
        .checked_mul(num)
        .map(|n| n.div_ceil(den))
        .ok_or_else(|| Error::length_mismatch(format!("{frames} frames overflow at this rate ratio")))
}

/// Converts planar `input` (`channels` × `frames`) from `in_rate` to `out_rate` into `out`, which
/// must hold `channels × resampled_frames(frames)` values. Equal rates copy the input unchanged.
/// Non-finite input values are an error (they would smear over the whole filter length).
pub fn resample(
    input: &[f32],
    channels: usize,
    in_rate: u32,
    out_rate: u32,
    out: &mut [f32],
) -> Result<()> {
    check_rates(in_rate, out_rate)?;
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(Error::invalid_argument(format!(
            "channels {channels} is outside [1, {MAX_CHANNELS}]"
        )));
    }
    if input.is_empty() || !input.len().is_multiple_of(channels) {
        return Err(Error::length_mismatch(format!(
            "input has {} values, which is not a non-zero multiple of {channels} channels",
            input.len()
        )));
    }
    let frames = input.len() / channels;
    let out_frames = usize::try_from(resampled_frames(frames as u64, in_rate, out_rate)?)
        .map_err(|_| Error::length_mismatch("output length overflows"))?;
    let needed = out_frames
        .checked_mul(channels)
        .ok_or_else(|| Error::length_mismatch("output length overflows"))?;
    if out.len() != needed {
        return Err(Error::length_mismatch(format!(
            "out has {} values but {channels} channels × {out_frames} frames need {needed}",
            out.len()
        )));
    }
    crate::error::ensure_finite(input, "input")?;
    if in_rate == out_rate {
        out.copy_from_slice(input);
        return Ok(());
    }
    // The float32 FFT overflows for inputs near f32::MAX; resample such input scaled down by a
    // power of two (exact) and scale back (an overshoot past f32::MAX is then an error below).
    let peak = input.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    if peak > LARGE_INPUT {
        let scale = 2.0f32.powi(-(peak.log2().ceil() as i32));
        let scaled: Vec<f32> = input.iter().map(|&v| v * scale).collect();
        resample_finite(&scaled, channels, frames, in_rate, out_rate, out)?;
        let inv = 1.0 / scale;
        out.iter_mut().for_each(|v| *v *= inv);
        return crate::error::ensure_finite_result(out, "out");
    }
    resample_finite(input, channels, frames, in_rate, out_rate, out)
}

/// Inputs above this magnitude are scaled before the FFT (audio is within ±1).
const LARGE_INPUT: f32 = 1e30;

fn resample_finite(
    input: &[f32],
    channels: usize,
    frames: usize,
    in_rate: u32,
    out_rate: u32,
    out: &mut [f32],
) -> Result<()> {
    let out_frames = out.len() / channels;

    let g = gcd(in_rate as u64, out_rate as u64) as usize;
    let chunk = BLOCK_UNITS * (in_rate as usize / g);
    let internal = |e: &dyn std::fmt::Display| Error::invalid_argument(format!("resampler: {e}"));
    let mut resampler = Fft::<f32>::new_custom(
        in_rate as usize,
        out_rate as usize,
        chunk,
        1,
        channels,
        WindowFunction::BlackmanHarris2,
        FixedSync::Both,
    )
    .map_err(|e| internal(&e))?;
    // rubato needs room for its delay and a last partial block; its own length is
    // ceil(ratio·frames) in float arithmetic, ours the exact integer one: they may differ by one.
    let scratch_frames = resampler.process_all_needed_output_len(frames);
    let mut scratch = vec![0.0f32; scratch_frames * channels];
    let input_adapter = SequentialSlice::new(input, channels, frames).map_err(|e| internal(&e))?;
    let mut output_adapter =
        SequentialSlice::new_mut(&mut scratch, channels, scratch_frames).map_err(|e| internal(&e))?;
    let (_, written) = resampler
        .process_all_into_buffer(&input_adapter, &mut output_adapter, frames, None)
        .map_err(|e| internal(&e))?;
    if written + 1 < out_frames {
        return Err(internal(&format!("produced {written} frames, expected {out_frames}")));
    }
    for c in 0..channels {
        let src = &scratch[c * scratch_frames..(c + 1) * scratch_frames];
        out[c * out_frames..(c + 1) * out_frames].copy_from_slice(&src[..out_frames]);
    }
    crate::error::ensure_finite_result(out, "out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_official_formula() {
        // spec §2: T = 8 latent frames → 32768 samples at 44.1 kHz → 35666 at 48 kHz
        assert_eq!(resampled_frames(32768, 44_100, 48_000).unwrap(), 35666);
        // exact multiples stay exact: 147 → 160
        assert_eq!(resampled_frames(147 * 1000, 44_100, 48_000).unwrap(), 160_000);
        assert_eq!(resampled_frames(1, 44_100, 48_000).unwrap(), 2);
        assert!(resampled_frames(10, 0, 48_000).is_err());
        assert!(resampled_frames(10, 44_100, 1_000_000).is_err());
    }

    #[test]
    fn a_low_tone_keeps_its_amplitude_and_phase() {
        let (fi, fo, n) = (44_100.0f64, 48_000.0f64, 44_100usize);
        let f = 1000.0;
        let input: Vec<f32> =
            (0..2 * n).map(|i| (0.5 * (2.0 * std::f64::consts::PI * f * (i % n) as f64 / fi).sin()) as f32).collect();
        let m = resampled_frames(n as u64, 44_100, 48_000).unwrap() as usize;
        let mut out = vec![0.0f32; 2 * m];
        resample(&input, 2, 44_100, 48_000, &mut out).unwrap();
        // away from the edges the output is the same tone sampled at 48 kHz, aligned in time
        let err = (2000..m - 2000)
            .map(|j| (out[m + j] as f64 - 0.5 * (2.0 * std::f64::consts::PI * f * j as f64 / fo).sin()).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-4, "max deviation {err}");
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut out = vec![0.0f32; 4];
        assert!(resample(&[0.0; 3], 2, 44_100, 48_000, &mut out).is_err());
        assert!(resample(&[0.0; 4], 0, 44_100, 48_000, &mut out).is_err());
        assert!(resample(&[0.0; 4], 2, 44_100, 48_000, &mut out).unwrap_err().message.contains("out has 4"));
        // near f32::MAX the FFT would overflow: scaled internally, same result as a scaled input
        let big: Vec<f32> = (0..200).map(|i| if i % 2 == 0 { 3.0e38 } else { -3.0e38 }).collect();
        let small: Vec<f32> = big.iter().map(|v| v * 2.0f32.powi(-128)).collect();
        let m = resampled_frames(100, 44_100, 48_000).unwrap() as usize * 2;
        let (mut a, mut b) = (vec![0.0f32; m], vec![0.0f32; m]);
        match resample(&big, 2, 44_100, 48_000, &mut a) {
            Ok(()) => {
                resample(&small, 2, 44_100, 48_000, &mut b).unwrap();
                assert!(a.iter().zip(&b).all(|(x, y)| *x == y * 2.0f32.powi(128)));
            }
            Err(e) => assert!(e.message.contains("out"), "{}", e.message),
        }
        let mut same = vec![0.0f32; 4];
        resample(&[1.0, 2.0, 3.0, 4.0], 2, 48_000, 48_000, &mut same).unwrap();
        assert_eq!(same, [1.0, 2.0, 3.0, 4.0]);
        let mut out = vec![0.0f32; 6];
        assert!(resample(&[0.0, f32::NAN, 0.0, 0.0], 2, 44_100, 48_000, &mut out).is_err());
    }
}
