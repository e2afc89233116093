//! How the v1 run cuts the song into windows for the DCAE decoder and the vocoder, and joins the
//! windows' outputs back into the song (spec `ace_step_v1.md` §9).
//!
//! Two layouts:
//! - **whole** (the official default, `decode`): the DCAE decodes the song in one run (its attention
//!   is global over the song); the vocoder, convolutional with a receptive field of ≈ ±90 mel
//!   frames, runs in windows of [`VOCODER_WINDOW`] kept frames with [`VOCODER_CONTEXT`] frames of
//!   context on each side, which gives the one-run result up to float rounding while bounding its
//!   activations;
//! - **overlapped** (the official opt-in `overlapped_decode`, used above 48 s: `decode_overlap`):
//!   DCAE windows of 512 latents on a 256-latent hop, trimming 128 latents of context on inner
//!   edges; vocoder blocks of 512 mel frames on a 508-frame hop (the last zero-padded), trimming
//!   1024 samples on inner edges and blending each join with a 128-sample linear crossfade. This
//!   changes the song against the whole layout (the DCAE attention sees one window), as it does in
//!   the official code, and bounds the DCAE's memory, which at full size does not fit 24 GiB for a
//!   240 s song in one run.

/// Mel frames a whole-layout vocoder run keeps (≈ 23.8 s), and the context it sees on each side.
const VOCODER_WINDOW: usize = 2048;
const VOCODER_CONTEXT: usize = 256;

/// The official `decode_overlap` parameters (music_dcae_pipeline.py): DCAE window, in latents.
const DCAE_OVERLAP_WINDOW: usize = 512;
/// Vocoder block in mel frames (512 · 512 = 262144 samples), its trimmed overlap in frames
/// (1024 samples), and the crossfade in samples.
const VOCODER_BLOCK: usize = 512;
const VOCODER_BLOCK_TRIM: usize = 2;
pub(super) const VOCODER_CROSSFADE: usize = 128;

/// One window: input frames `start..end`, zero-padded to `len` frames; of its output, the part for
/// frames `keep_start..keep_end` goes into the song.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
    pub len: usize,
    pub keep_start: usize,
    pub keep_end: usize,
}

impl Window {
    fn unpadded(start: usize, end: usize, keep_start: usize, keep_end: usize) -> Self {
        Self { start, end, len: end - start, keep_start, keep_end }
    }
}

/// DCAE windows over `frames` latent frames.
pub fn dcae_windows(frames: usize, overlapped: bool) -> Vec<Window> {
    if !overlapped || frames <= DCAE_OVERLAP_WINDOW {
        return vec![Window::unpadded(0, frames, 0, frames)];
    }
    // Anchors every half window from a quarter window, while a quarter window is left after them;
    // each window starts a quarter window before its anchor and keeps anchor..anchor + hop
    // (the first from 0, the last to the end).
    let (quarter, hop) = (DCAE_OVERLAP_WINDOW / 4, DCAE_OVERLAP_WINDOW / 2);
    let anchors: Vec<usize> = (quarter..frames - quarter).step_by(hop).collect();
    let last = anchors.len() - 1;
    anchors
        .iter()
        .enumerate()
        .map(|(i, &anchor)| {
            let start = anchor - quarter;
            let end = (start + DCAE_OVERLAP_WINDOW).min(frames);
            let keep_start = if i == 0 { 0 } else { anchor };
            let keep_end = if i == last { end } else { anchor + hop };
            Window::unpadded(start, end, keep_start, keep_end)
        })
        .collect()
}

/// Vocoder windows over `frames` mel frames. In the overlapped layout the last block's kept part
/// may reach past the song (its zero padding); the join writes it and the song is cut after.
pub fn vocoder_windows(frames: usize, overlapped: bool) -> Vec<Window> {
    if overlapped {
        let hop = VOCODER_BLOCK - 2 * VOCODER_BLOCK_TRIM;
        let starts: Vec<usize> = (0..frames).step_by(hop).collect();
        let last = starts.len() - 1;
        return starts
            .iter()
            .enumerate()
            .map(|(i, &start)| Window {
                start,
                end: (start + VOCODER_BLOCK).min(frames),
                len: VOCODER_BLOCK,
                keep_start: if i == 0 { 0 } else { start + VOCODER_BLOCK_TRIM },
                keep_end: start + VOCODER_BLOCK - if i == last { 0 } else { VOCODER_BLOCK_TRIM },
            })
            .collect();
    }
    if frames <= VOCODER_WINDOW + 2 * VOCODER_CONTEXT {
        return vec![Window::unpadded(0, frames, 0, frames)];
    }
    (0..frames.div_ceil(VOCODER_WINDOW))
        .map(|k| {
            let (keep_start, keep_end) = (k * VOCODER_WINDOW, ((k + 1) * VOCODER_WINDOW).min(frames));
            Window::unpadded(
                keep_start.saturating_sub(VOCODER_CONTEXT),
                (keep_end + VOCODER_CONTEXT).min(frames),
                keep_start,
                keep_end,
            )
        })
        .collect()
}

/// Frames the joined song rows must hold for these windows (past the song for a padded last block).
pub fn joined_frames(windows: &[Window]) -> usize {
    windows.iter().map(|w| w.keep_end).max().unwrap_or(0)
}

/// The rows of `song` (each `song_frames · scale` values) sliced to the window's input
/// (`len · scale` values per row, zeros past the song) — the input of one window run.
pub fn cut(song: &[f32], song_frames: usize, w: &Window, scale: usize, into: &mut Vec<f32>) {
    into.clear();
    let pad = (w.len - (w.end - w.start)) * scale;
    for row in song.chunks_exact(song_frames * scale) {
        into.extend_from_slice(&row[w.start * scale..w.end * scale]);
        into.extend(std::iter::repeat_n(0.0, pad));
    }
}

/// Writes the kept part of one window's output rows (`w.len · scale` values each) into the song
/// rows (`song_frames · scale` values each, `song_frames ≥ joined_frames`). With `crossfade > 0`,
/// the `crossfade` values before the kept part are blended with what the previous window wrote
/// there: linearly from all previous (first value) to almost all this window (last value), as
/// `torch.linspace(1, 0, n)` / `torch.linspace(0, 1, n)` weigh them.
pub fn join(song: &mut [f32], song_frames: usize, out: &[f32], w: &Window, scale: usize, crossfade: usize) {
    let (song_row, out_row) = (song_frames * scale, w.len * scale);
    let (from, to) = ((w.keep_start - w.start) * scale, (w.keep_end - w.start) * scale);
    let blend = if w.keep_start == 0 { 0 } else { crossfade.min(from) };
    let weights = linspace01(blend);
    for (dst, src) in song.chunks_exact_mut(song_row).zip(out.chunks_exact(out_row)) {
        let at = w.keep_start * scale;
        for (i, &head) in weights.iter().enumerate() {
            let (d, s) = (at - blend + i, from - blend + i);
            dst[d] = dst[d] * (1.0 - head) + src[s] * head;
        }
        dst[at..at + (to - from)].copy_from_slice(&src[from..to]);
    }
}

/// `torch.linspace(0, 1, n)` in f32 (its CPU kernel: the first half counts up from 0, the second
/// down from 1, with step 1/(n − 1)); the fade-out weights are `1 − w`, which for
/// `linspace(1, 0, n)` differ from torch's by at most one rounding.
fn linspace01(n: usize) -> Vec<f32> {
    if n < 2 {
        return vec![0.0; n];
    }
    let step = 1.0f32 / (n - 1) as f32;
    (0..n).map(|i| if i < n / 2 { step * i as f32 } else { 1.0 - step * (n - 1 - i) as f32 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_layout_vocoder_windows_tile_the_song_with_bounded_context() {
        assert_eq!(vocoder_windows(100, false), vec![Window::unpadded(0, 100, 0, 100)]);
        let whole = VOCODER_WINDOW + 2 * VOCODER_CONTEXT;
        assert_eq!(vocoder_windows(whole, false), vec![Window::unpadded(0, whole, 0, whole)]);
        for frames in [whole + 1, 8 * 2583, 5 * VOCODER_WINDOW, 5 * VOCODER_WINDOW + 3] {
            let w = vocoder_windows(frames, false);
            assert_eq!(w.len(), frames.div_ceil(VOCODER_WINDOW));
            let mut covered = 0;
            for w in &w {
                assert_eq!(w.keep_start, covered, "kept regions are contiguous");
                assert!(w.start <= w.keep_start && w.keep_end <= w.end && w.end <= frames && w.keep_start < w.keep_end);
                assert_eq!(w.len, w.end - w.start);
                // full context wherever the song has it
                assert_eq!(w.keep_start - w.start, VOCODER_CONTEXT.min(w.keep_start));
                assert_eq!(w.end - w.keep_end, VOCODER_CONTEXT.min(frames - w.keep_end));
                covered = w.keep_end;
            }
            assert_eq!(covered, frames);
            assert_eq!(joined_frames(&w), frames);
        }
    }

    /// The official loop, written as it reads (anchor list, first/middle/last trims of the mel).
    fn official_dcae_keep(latent_len: usize) -> Vec<(usize, usize, usize, usize)> {
        let (win, offset, hop, trim) = (512usize, 128usize, 256usize, 1024usize);
        let mut anchors: Vec<usize> = (offset..latent_len.saturating_sub(offset)).step_by(hop).collect();
        if anchors.is_empty() {
            anchors = vec![offset];
        }
        let n = anchors.len();
        anchors
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let s = a.saturating_sub(offset);
                let e = (s + win).min(latent_len);
                let mel = 8 * (e - s);
                let (a_mel, b_mel) = match (i == 0, i == n - 1) {
                    (true, true) => (0, mel),
                    (true, false) => (0, mel - trim),
                    (false, true) => (trim, mel),
                    (false, false) => (trim, mel - trim),
                };
                (s, e, s + a_mel / 8, s + b_mel / 8)
            })
            .collect()
    }

    #[test]
    fn overlapped_dcae_windows_follow_the_official_anchors() {
        for frames in [513, 646, 700, 1024, 1025, 1151, 2583, 2584, 5000] {
            let got: Vec<_> =
                dcae_windows(frames, true).iter().map(|w| (w.start, w.end, w.keep_start, w.keep_end)).collect();
            assert_eq!(got, official_dcae_keep(frames), "{frames} latent frames");
            let mut covered = 0;
            for w in dcae_windows(frames, true) {
                assert_eq!(w.keep_start, covered);
                assert!(w.end - w.start <= 512 && w.len == w.end - w.start);
                covered = w.keep_end;
            }
            assert_eq!(covered, frames);
        }
        assert_eq!(dcae_windows(512, true), vec![Window::unpadded(0, 512, 0, 512)]);
        assert_eq!(dcae_windows(646, false), vec![Window::unpadded(0, 646, 0, 646)]);
    }

    #[test]
    fn overlapped_vocoder_blocks_follow_the_official_sample_loop() {
        // The official loop in samples: the first block keeps win − overlap, each next one starts
        // at p (hop = win − 2·overlap) and appends from p + overlap.
        for frames in [4200usize, 5168, 20_664, 20_672, 1016, 1017, 1018, 1019] {
            let (win, overlap, hop) = (262_144usize, 1024usize, 262_144 - 2048);
            let total = frames * 512;
            let mut kept = vec![(0usize, win - overlap)];
            let mut p = hop;
            while p < total {
                let last = p + hop >= total;
                kept.push((p + overlap, p + win - if last { 0 } else { overlap }));
                p += hop;
            }
            let got: Vec<_> =
                vocoder_windows(frames, true).iter().map(|w| (w.keep_start * 512, w.keep_end * 512)).collect();
            assert_eq!(got, kept, "{frames} mel frames");
            for w in vocoder_windows(frames, true) {
                assert_eq!((w.len, w.end), (512, (w.start + 512).min(frames)));
                assert_eq!(w.start * 512 % hop, 0);
            }
            assert!(joined_frames(&vocoder_windows(frames, true)) >= frames);
        }
    }

    #[test]
    fn join_crossfades_linearly_and_cut_pads_with_zeros() {
        // Two windows of constant rows 1 and 3; the second keeps from frame 4 with a 4-value fade
        // over what the first wrote before it.
        let a = Window { start: 0, end: 6, len: 6, keep_start: 0, keep_end: 6 };
        let b = Window { start: 0, end: 8, len: 8, keep_start: 4, keep_end: 8 };
        let mut song = vec![0.0f32; 8];
        join(&mut song, 8, &[1.0; 6], &a, 1, 4);
        join(&mut song, 8, &[3.0; 8], &b, 1, 4);
        let fade: Vec<f32> = (0..4).map(|i| 1.0 + 2.0 * i as f32 / 3.0).collect();
        assert!(song[..4].iter().zip(&fade).all(|(a, b)| (a - b).abs() <= 1e-6), "{song:?}");
        assert_eq!(&song[4..], &[3.0; 4]);
        assert_eq!(linspace01(5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);

        let mut into = Vec::new();
        let rows: Vec<f32> = (0..10).map(|i| i as f32).collect(); // 2 rows of 5
        cut(&rows, 5, &Window { start: 3, end: 5, len: 4, keep_start: 3, keep_end: 5 }, 1, &mut into);
        assert_eq!(into, vec![3.0, 4.0, 0.0, 0.0, 8.0, 9.0, 0.0, 0.0]);
    }
}
