//! VAE tile plan (spec §6, official `handler.tiled_decode`): which latent windows a host decodes and
//! how many audio samples it drops at each end of each decoded window, so that concatenating the
//! kept parts gives exactly `1920·T` samples.

use crate::error::{Error, Result};
use crate::frames::{MAX_FRAMES, SAMPLES_PER_FRAME};

/// Official window on CUDA/CPU (`handler.tiled_decode`), in latent frames; the driver's default too.
pub const DEFAULT_CHUNK: u32 = 512;
/// Official overlap, in latent frames. A host looping over `ace_vae_tile_plan` itself may pass less, down
/// to 10 (the decoder's receptive radius), for the same audio; the driver uses 16.
pub const DEFAULT_OVERLAP: u32 = 64;

/// The overlap the driver decodes with, at every chunk. The 1.5 decoder sees at most ~9.5 latent frames
/// on either side of a sample (the receptive-radius test below), so any overlap of 10 or more decodes
/// each kept sample from exactly the latents an untiled decode uses, and the official 64 recomputes far
/// more than that: 16 gives the official plan's audio up to float rounding (bit-identical in
/// `bindings/python/tests/test_vae_tiling.py` and at full size at 30 s) while decoding 782 instead of
/// 878 frames at 30 s and 13 instead of 16 windows at 240 s (docs/performance.md, "VAE decode").
pub(crate) const DRIVER_OVERLAP: u32 = 16;

/// Smallest window a request may ask for (`vae_decode_chunk`): a quarter of it is then decoded twice.
/// Every allowed chunk decodes the same audio up to float rounding; only the memory of a window (linear
/// in its frames) and the frames decoded twice change.
pub(crate) const MIN_REQUEST_CHUNK: u32 = 128;

/// One window of the plan. Latent ranges are half-open `[start, end)`; the host decodes latent
/// frames `[start, end)`, which gives `(end − start)·1920` samples, drops `crop_left` samples at the
/// front and `crop_right` at the back, and appends the rest (`(core_end − core_start)·1920`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AceTileWindow {
    /// First latent frame decoded.
    pub start: u32,
    /// One past the last latent frame decoded.
    pub end: u32,
    /// First latent frame whose audio is kept.
    pub core_start: u32,
    /// One past the last latent frame whose audio is kept.
    pub core_end: u32,
    /// Samples to drop at the front of the decoded window: `round((core_start − start)·1920)`.
    pub crop_left: u64,
    /// Samples to drop at the back of the decoded window: `round((end − core_end)·1920)`.
    pub crop_right: u64,
}

fn validate(frames: u32, chunk: u32, overlap: u32) -> Result<()> {
    if frames == 0 || frames > MAX_FRAMES {
        return Err(Error::invalid_argument(format!(
            "frames {frames} is outside the supported range [1, {MAX_FRAMES}]"
        )));
    }
    if chunk == 0 {
        return Err(Error::invalid_argument("chunk must be at least 1 frame, got 0"));
    }
    if overlap as u64 * 2 >= chunk as u64 {
        return Err(Error::invalid_argument(format!(
            "overlap {overlap} is too large for chunk {chunk}: need 2·overlap < chunk"
        )));
    }
    Ok(())
}

/// Number of windows the plan has: 1 if `frames <= chunk`, else `ceil(frames / (chunk − 2·overlap))`.
pub fn tile_count(frames: u32, chunk: u32, overlap: u32) -> Result<usize> {
    validate(frames, chunk, overlap)?;
    if frames <= chunk {
        return Ok(1);
    }
    let stride = chunk - 2 * overlap;
    Ok(frames.div_ceil(stride) as usize)
}

/// The full plan. `T <= chunk`: one direct window `[0, T)` with no crops. Otherwise, with
/// `stride = chunk − 2·overlap`, core `i` is `[i·stride, min((i+1)·stride, T))` and its window
/// extends it by up to `overlap` frames on each side, clamped to `[0, T]`.
pub fn tile_plan(frames: u32, chunk: u32, overlap: u32) -> Result<Vec<AceTileWindow>> {
    let count = tile_count(frames, chunk, overlap)?;
    let spf = SAMPLES_PER_FRAME as u64;
    if frames <= chunk {
        return Ok(vec![AceTileWindow {
            start: 0,
            end: frames,
            core_start: 0,
            core_end: frames,
            crop_left: 0,
            crop_right: 0,
        }]);
    }
    let stride = chunk - 2 * overlap;
    Ok((0..count as u32)
        .map(|i| {
            let core_start = i * stride;
            let core_end = ((i + 1) * stride).min(frames);
            let start = core_start.saturating_sub(overlap);
            let end = (core_end + overlap).min(frames);
            AceTileWindow {
                start,
                end,
                core_start,
                core_end,
                // The decoded length is exactly 1920 per frame, so round(extra·1920) is exact.
                crop_left: (core_start - start) as u64 * spf,
                crop_right: (end - core_end) as u64 * spf,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(tile_count(250, 512, 64).unwrap(), 1);
        assert_eq!(tile_count(6000, 512, 64).unwrap(), 16);
        let plan = tile_plan(6000, 512, 64).unwrap();
        assert_eq!(plan[0], AceTileWindow { start: 0, end: 448, core_start: 0, core_end: 384, crop_left: 0, crop_right: 64 * 1920 });
        assert_eq!(plan[15].core_end, 6000);
        assert_eq!(plan[15].end, 6000);
        let kept: u64 = plan.iter().map(|w| (w.end - w.start) as u64 * 1920 - w.crop_left - w.crop_right).sum();
        assert_eq!(kept, 6000 * 1920);
    }

    /// Receptive radius, in latent frames, of the official 1.5 decoder (diffusers `OobleckDecoder`):
    /// conv k7 on the latents; per block (upsampling strides 10, 6, 4, 4, 2) a ConvTranspose
    /// (k = 2s, padding s/2: each output sample reads input samples within 1.5 input samples) and
    /// three k7 convs with dilations 1, 3, 9 at the block's output rate; a final k7 conv at 1920/frame.
    fn decoder_receptive_radius() -> f64 {
        let mut rate = 1.0; // samples per latent frame at the current layer
        let mut radius = 3.0; // conv1: (7 − 1)/2 frames
        for stride in [10.0, 6.0, 4.0, 4.0, 2.0] {
            radius += 1.5 / rate;
            rate *= stride;
            radius += (3.0 + 9.0 + 27.0) / rate;
        }
        radius + 3.0 / rate
    }

    #[test]
    fn the_driver_overlap_covers_the_decoder_receptive_field() {
        let radius = decoder_receptive_radius();
        assert!(radius > 9.0 && radius < 10.0, "{radius}"); // 9.46…
        assert!(DRIVER_OVERLAP as f64 >= radius.ceil() + 4.0, "overlap {DRIVER_OVERLAP} has no margin over {radius}");
        assert!(DRIVER_OVERLAP < DEFAULT_OVERLAP);
    }

    #[test]
    fn every_chunk_a_request_may_ask_for_has_a_plan() {
        for chunk in MIN_REQUEST_CHUNK..=2 * DEFAULT_CHUNK {
            let plan = tile_plan(6000, chunk, DRIVER_OVERLAP).unwrap();
            assert!(plan.windows(2).all(|w| w[0].core_end == w[1].core_start), "chunk {chunk}");
        }
    }

    #[test]
    fn the_driver_overlap_decodes_fewer_frames_than_the_official_one() {
        let decoded = |frames, overlap| -> u32 {
            tile_plan(frames, DEFAULT_CHUNK, overlap).unwrap().iter().map(|w| w.end - w.start).sum()
        };
        assert_eq!((decoded(750, DEFAULT_OVERLAP), decoded(750, DRIVER_OVERLAP)), (878, 782)); // 30 s
        assert_eq!(tile_count(6000, DEFAULT_CHUNK, DRIVER_OVERLAP).unwrap(), 13); // 240 s: 16 officially
        assert_eq!(decoded(250, DRIVER_OVERLAP), 250); // 10 s: one direct window either way
    }

    #[test]
    fn bad_configs() {
        assert!(tile_plan(600, 128, 64).unwrap_err().message.contains("2·overlap < chunk"));
        assert!(tile_plan(600, 0, 0).is_err());
        assert!(tile_plan(0, 512, 64).is_err());
        assert!(tile_plan(15_001, 512, 64).is_err());
    }
}
