//! The ACE-Step v1 family in the driver (docs/io_contract_v1.md, spec `ace_step_v1.md`): the same
//! call stream as 1.5 — the core says which graph to run with which inputs, the host runs it — so
//! a host runs a v1 package with no code of its own.
//!
//! The calls of a v1 text2music run, in order:
//! 1. `text_encoder` — the prompt (UMT5), all `erg_q_scale` ones; on guided runs with `use_erg_tag`
//!    a second pass with τ at `config.erg.text_encoder_layers` (the ERG "tag" negative). Kept by
//!    the host.
//! 2. `condition_encoder` — once per condition the guidance needs (contract §4): conditional;
//!    unconditional (ERG tag text or zeros, real lyric ids with the ERG lyric q-scale or zero ids);
//!    text-only for the double-condition guidance. Each output is kept by the host under its own
//!    key; the encoder mask `[1 | text mask | lyric mask]` is the core's.
//! 3. `dit_decoder` — per model call of [`V1Diffusion`] (N, or 2N − 1 for Heun), one decode per
//!    condition it lists, each on the batch of B items (conditions differ in their q-scales, so
//!    they are separate runs, as in the official loop); the core guides and steps.
//! 4. `dcae_decoder` — per DCAE window of the final latents, stereo log-mel `[B, 2, 128, 8·t]`,
//!    submitted (one window, the whole song, unless the request asks for `overlapped_decode`);
//! 5. `vocoder` — per vocoder window of the mel, as `[2B, 128, frames]` rows (row 2b left, 2b+1
//!    right), submitted; the core joins the windows, then resamples 44.1 → 48 kHz (output
//!    `ceil(4096·T·48000/44100)` samples) and applies the peak guard.
//!
//! The windows and how they are joined are in [`super::v1_windows`].

use std::sync::Arc;

use serde_json::{json, Value};

use super::v1_windows::{self, Window, VOCODER_CROSSFADE};
use super::{cast_f32, check_outputs, check_pending, expect_shape, resolve_seeds, Buffer, Call, Input, Output, Source, Stage, Submitted};
use crate::error::{Error, Result};
use crate::frames;
use crate::lyrics_v1::V1LyricTokenizer;
use crate::noise::NoiseMode;
use crate::package::{DType, Dim, Package};
use crate::request_v1::{self, V1Request};
use crate::schedule;
use crate::v1_diffusion::{Condition, V1Diffusion, V1LoopConfig, CHANNELS, HEIGHT};

/// Version of the v1 track-id parameter set; bump it when what goes in changes.
const V1_TRACK_ID_SCHEME: u32 = 2;
/// The DCAE graphs need at least 3 latent frames (contract §6).
const MIN_FRAMES: u32 = 3;
/// Mel frames per latent frame and mel bins (contract §6–§7).
const MEL_PER_LATENT: usize = 8;
const MEL_BINS: usize = 128;
const SPEAKER_DIM: usize = 512;
/// Vocoder samples per mel frame (the hop).
const HOP: usize = 512;
/// The official `overlapped_decode` applies only to songs longer than this (seconds).
const OVERLAPPED_DECODE_MIN_DURATION: f64 = 48.0;

// Host keys.
const KEY_TEXT: &str = "text_hidden_states";
const KEY_TEXT_ERG: &str = "text_hidden_states_erg";
const KEY_ENC: &str = "encoder_hidden_states";
const KEY_ENC_UNCOND: &str = "encoder_hidden_states_uncond";
const KEY_ENC_TEXT: &str = "encoder_hidden_states_text_only";

/// A call of the encode stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encode {
    Text { erg: bool },
    Condition(Condition),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Encode(usize),
    /// Decode `k` of the current model call.
    Dit(usize),
    /// DCAE window `k`.
    Dcae(usize),
    /// Vocoder window `k`.
    Vocoder(usize),
    Finished,
}

/// The v1 generation; see the module documentation.
pub struct V1Run {
    package: Arc<Package>,
    request: V1Request,
    notes: Vec<String>,
    seeds: Vec<u64>,
    batch: usize,
    frames: usize,
    diffusion: V1Diffusion,
    sigmas: Vec<f32>,
    /// Decodes per model call (the guidance plan), and their total.
    plan: Vec<Vec<Condition>>,
    decodes_total: usize,
    decodes_done: usize,
    encodes: Vec<Encode>,
    erg_tau: f32,

    text_ids: Vec<i64>,
    text_mask: Vec<i64>,
    text_len: usize,
    text_dim: usize,
    lyric_ids: Vec<i64>,
    lyric_mask: Vec<i64>,
    lyric_len: usize,
    zero_lyric_ids: Vec<i64>,
    zero_text: Vec<f32>,
    speaker: Vec<f32>,
    encoder_mask: Vec<i64>,
    frame_mask: Vec<i64>,
    q_text: Vec<f32>,
    q_text_erg: Vec<f32>,
    q_lyric: Vec<f32>,
    q_lyric_erg: Vec<f32>,
    q_dit: Vec<f32>,
    q_dit_erg: Vec<f32>,
    timestep: Vec<f32>,
    /// Velocities of the current model call's decodes so far.
    velocities: Vec<Vec<f32>>,
    /// Whether the official overlapped layout is used (requested, and the song is long enough).
    overlapped: bool,
    /// DCAE windows in latent frames, the current one's latent rows, and the joined mel rows.
    dcae_windows: Vec<Window>,
    window_latents: Vec<f32>,
    mel: Vec<f32>,
    mel_frames: usize,
    /// Vocoder windows in mel frames, the current one's mel rows, and the joined 44.1 kHz rows
    /// [2B, 512 · joined frames] (past the song for a padded last block; cut at the end).
    vocoder_windows: Vec<Window>,
    window_mel: Vec<f32>,
    audio44: Vec<f32>,
    audio: Vec<f32>,
    samples: usize,
    peaks: Vec<f32>,

    step: Step,
    pending: bool,
    finished_reported: bool,
}

impl V1Run {
    /// Normalises `request_json` with the v1 schema, tokenizes, plans the calls and draws the
    /// initial noise; checks that the package has every graph with the inputs the core feeds.
    pub fn new(package: Arc<Package>, request_json: &str) -> Result<Self> {
        let request = request_v1::normalize(request_json)?;
        let mut notes = Vec::new();
        if request.frames < MIN_FRAMES {
            return Err(Error::invalid_argument(format!(
                "request.duration: {} s gives {} latent frames; ACE-Step v1 needs at least {MIN_FRAMES} ({:.3} s)",
                request.duration,
                request.frames,
                (MIN_FRAMES * frames::V1_SAMPLES_PER_FRAME) as f64 / frames::V1_SAMPLE_RATE as f64
            )));
        }
        let batch = request.batch_size as usize;
        let frames = request.frames as usize;
        let seeds = resolve_seeds(&request.seeds, batch, &mut notes);
        let noise_mode = NoiseMode::from_json(Some(&json!({ "mode": request.noise_mode }).to_string()))?;
        let loop_config = V1LoopConfig::from_request(&request).map_err(|e| Error::new(e.kind, format!("request: {}", e.message)))?;
        let diffusion = V1Diffusion::new(loop_config.clone(), frames, &seeds, noise_mode)
            .map_err(|e| Error::new(e.kind, format!("request: {}", e.message)))?;
        let sigmas = schedule::to_f32(&schedule::v1_sigmas(
            loop_config.steps as usize,
            loop_config.shift,
            1.0,
            schedule::v1_default_sigma_min(loop_config.shift)?,
        )?);

        // Which decodes each model call needs: the encodes and the progress total follow from it.
        let plan = diffusion.plan()?;
        let double = plan.iter().flatten().any(|c| *c == Condition::TextOnly);
        let guided = plan.iter().any(|l| l.len() > 1);
        if !guided && request.guidance_scale != 0.0 && request.guidance_scale != 1.0 {
            notes.push(format!(
                "guidance_scale {}: no model call lies in the guidance interval ({} steps, guidance_interval {}), \
                 so the run is unguided",
                request.guidance_scale, request.inference_steps, request.guidance_interval
            ));
        }
        let mut encodes = vec![Encode::Text { erg: false }];
        if guided && request.use_erg_tag {
            encodes.push(Encode::Text { erg: true });
        }
        encodes.push(Encode::Condition(Condition::Conditional));
        if guided {
            if double {
                encodes.push(Encode::Condition(Condition::TextOnly));
            }
            encodes.push(Encode::Condition(Condition::Unconditional { erg: request.use_erg_diffusion }));
        }
        let decodes_total = plan.iter().map(Vec::len).sum();

        // Tokens: the prompt (UMT5, truncated to max_length keeping </s>) and the lyrics.
        let config = package.config();
        let text_tokenizer = package.text_tokenizer()?;
        let text_ids = super::tokenize(text_tokenizer, &request.caption, config.caption_max_length)
            .map_err(|e| Error::new(e.kind, format!("request.caption: {}", e.message)))?;
        let lyric_tokenizer = lyric_tokenizer(&package)?;
        let (lyric_ids, lyric_mask) = lyric_tokenizer
            .encode_lyrics(&request.lyrics, &request.vocal_language)
            .map_err(|e| Error::new(e.kind, format!("request.lyrics: {}", e.message)))?;
        let (text_len, lyric_len) = (text_ids.len(), lyric_ids.len());

        let tau = package
            .manifest()
            .pointer("/config/erg/tau")
            .and_then(Value::as_f64)
            .unwrap_or(0.01) as f32;
        let q = |component: &str, list: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            let n = fixed_dim(&package, component, "erg_q_scale", 0)?;
            let ones = vec![1.0f32; n];
            let mut erg = ones.clone();
            let layers = package.manifest().pointer(&format!("/config/erg/{list}")).and_then(Value::as_array);
            for layer in layers.into_iter().flatten() {
                let i = layer.as_u64().filter(|&i| (i as usize) < n).ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "model package {}: config.erg.{list} has {layer}, not a layer of {component} ({n} layers)",
                        package.root().display()
                    ))
                })?;
                erg[i as usize] = tau;
            }
            Ok((ones, erg))
        };
        let (q_text, q_text_erg) = q("text_encoder", "text_encoder_layers")?;
        let (q_lyric, q_lyric_erg) = q("condition_encoder", "lyric_encoder_layers")?;
        let (q_dit, q_dit_erg) = q("dit_decoder", "dit_layers")?;
        let text_dim = fixed_dim(&package, "text_encoder", "last_hidden_state", 2).unwrap_or(0);

        let rows = |v: &[i64]| super::repeat(v, batch);
        let text_ids: Vec<i64> = text_ids;
        let text_mask = vec![1i64; text_len];
        let lyric_ids: Vec<i64> = lyric_ids.iter().map(|&i| i as i64).collect();
        let lyric_mask: Vec<i64> = lyric_mask.iter().map(|&m| m as i64).collect();
        let mut encoder_mask = vec![1i64];
        encoder_mask.extend(&text_mask);
        encoder_mask.extend(&lyric_mask);
        let needs_zero_text = encodes.contains(&Encode::Condition(Condition::Unconditional { erg: request.use_erg_diffusion }))
            && !request.use_erg_tag;
        let samples = frames::v1_samples_48k(request.frames) as usize;
        let overlapped = request.overlapped_decode && request.duration > OVERLAPPED_DECODE_MIN_DURATION;
        if request.overlapped_decode && !overlapped {
            notes.push(format!(
                "overlapped_decode: applies to songs longer than {OVERLAPPED_DECODE_MIN_DURATION} s (as in the official \
                 pipeline); this {} s song is decoded whole",
                request.duration
            ));
        }

        let run = Self {
            batch,
            frames,
            seeds,
            diffusion,
            sigmas,
            plan,
            decodes_total,
            decodes_done: 0,
            encodes,
            erg_tau: tau,
            text_ids: rows(&text_ids),
            text_mask: rows(&text_mask),
            text_len,
            text_dim,
            zero_lyric_ids: vec![0; batch * lyric_len],
            lyric_ids: rows(&lyric_ids),
            lyric_mask: rows(&lyric_mask),
            lyric_len,
            zero_text: if needs_zero_text { super::filled(batch * text_len * text_dim, 0.0)? } else { Vec::new() },
            speaker: vec![0.0; batch * SPEAKER_DIM],
            encoder_mask: rows(&encoder_mask),
            frame_mask: vec![1; batch * frames],
            q_text,
            q_text_erg,
            q_lyric,
            q_lyric_erg,
            q_dit,
            q_dit_erg,
            timestep: Vec::new(),
            velocities: Vec::new(),
            overlapped,
            dcae_windows: v1_windows::dcae_windows(frames, overlapped),
            window_latents: Vec::new(),
            mel: Vec::new(),
            mel_frames: frames * MEL_PER_LATENT,
            vocoder_windows: v1_windows::vocoder_windows(frames * MEL_PER_LATENT, overlapped),
            window_mel: Vec::new(),
            audio44: Vec::new(),
            audio: Vec::new(),
            samples,
            peaks: Vec::new(),
            request,
            notes,
            package,
            step: Step::Encode(0),
            pending: false,
            finished_reported: false,
        };
        run.check_package()?;
        if needs_zero_text && run.text_dim == 0 {
            return Err(Error::invalid_argument("text_encoder output last_hidden_state has no fixed width"));
        }
        Ok(run)
    }

    /// The graphs this run needs, in the order of first use.
    pub fn components(&self) -> Vec<&'static str> {
        vec!["text_encoder", "condition_encoder", "dit_decoder", "dcae_decoder", "vocoder"]
    }

    fn check_package(&self) -> Result<()> {
        let io: [(&str, &[&str], &[&str]); 5] = [
            ("text_encoder", &["input_ids", "attention_mask", "erg_q_scale"], &["last_hidden_state"]),
            (
                "condition_encoder",
                &[
                    "text_hidden_states",
                    "text_attention_mask",
                    "speaker_embeds",
                    "lyric_token_ids",
                    "lyric_attention_mask",
                    "erg_q_scale",
                ],
                &["encoder_hidden_states"],
            ),
            (
                "dit_decoder",
                &["hidden_states", "attention_mask", "encoder_hidden_states", "encoder_attention_mask", "timestep", "erg_q_scale"],
                &["velocity"],
            ),
            ("dcae_decoder", &["latents"], &["mel"]),
            ("vocoder", &["mel"], &["audio"]),
        ];
        for (name, inputs, outputs) in io {
            let component = self.package.component(name)?;
            let mut have: Vec<&str> = component.inputs.iter().map(|s| s.name.as_str()).collect();
            let mut want: Vec<&str> = inputs.to_vec();
            have.sort_unstable();
            want.sort_unstable();
            if have != want {
                return Err(Error::invalid_argument(format!(
                    "component {name} of package {} takes inputs {have:?} but this core feeds {want:?} \
                     (package exported by an incompatible exporter version?)",
                    self.package.root().display()
                )));
            }
            for output in outputs {
                component.output(output)?;
            }
        }
        let speaker = fixed_dim(&self.package, "condition_encoder", "speaker_embeds", 1)?;
        if speaker != SPEAKER_DIM {
            return Err(Error::invalid_argument(format!(
                "condition_encoder input speaker_embeds has width {speaker}, expected {SPEAKER_DIM}"
            )));
        }
        Ok(())
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn is_finished(&self) -> bool {
        self.step == Step::Finished
    }

    pub fn next(&mut self) -> Result<Option<Call>> {
        if self.step == Step::Finished {
            if self.finished_reported {
                return Err(Error::invalid_state("the generation is finished: read its results or free it"));
            }
            self.finished_reported = true;
            return Ok(None);
        }
        let call = self.describe();
        self.pending = true;
        Ok(Some(call))
    }

    fn key_of(c: Condition) -> &'static str {
        match c {
            Condition::Conditional => KEY_ENC,
            Condition::Unconditional { .. } => KEY_ENC_UNCOND,
            Condition::TextOnly => KEY_ENC_TEXT,
        }
    }

    fn describe(&self) -> Call {
        let (b, t) = (self.batch as i64, self.frames as i64);
        let (lt, ll) = (self.text_len as i64, self.lyric_len as i64);
        let core = |name, dtype, shape: Vec<i64>, buffer| Input { name, dtype, shape, source: Source::Core(buffer) };
        let host = |name, shape: Vec<i64>, key| Input { name, dtype: DType::F32, shape, source: Source::Host(key) };
        let q = |v: &Vec<f32>| vec![v.len() as i64];
        match self.step {
            Step::Encode(i) => {
                let total = self.encodes.len();
                let (component, inputs, outputs, release) = match self.encodes[i] {
                    Encode::Text { erg } => (
                        "text_encoder",
                        vec![
                            core("input_ids", DType::I64, vec![b, lt], Buffer::CaptionIds),
                            core("attention_mask", DType::I64, vec![b, lt], Buffer::CaptionMask),
                            if erg {
                                core("erg_q_scale", DType::F32, q(&self.q_text_erg), Buffer::TextErgQScale)
                            } else {
                                core("erg_q_scale", DType::F32, q(&self.q_text), Buffer::TextQScale)
                            },
                        ],
                        vec![Output { name: "last_hidden_state", keep_as: Some(if erg { KEY_TEXT_ERG } else { KEY_TEXT }) }],
                        vec![],
                    ),
                    Encode::Condition(c) => {
                        let text_shape = vec![b, lt, self.text_dim as i64];
                        let real_lyrics = core("lyric_token_ids", DType::I64, vec![b, ll], Buffer::LyricIds);
                        let zero_lyrics = core("lyric_token_ids", DType::I64, vec![b, ll], Buffer::ZeroLyricIds);
                        let ones = core("erg_q_scale", DType::F32, q(&self.q_lyric), Buffer::LyricQScale);
                        let (text, lyrics, scale) = match c {
                            Condition::Conditional => (host("text_hidden_states", text_shape, KEY_TEXT), real_lyrics, ones),
                            Condition::TextOnly => (host("text_hidden_states", text_shape, KEY_TEXT), zero_lyrics, ones),
                            Condition::Unconditional { .. } => {
                                let text = if self.request.use_erg_tag {
                                    host("text_hidden_states", text_shape, KEY_TEXT_ERG)
                                } else {
                                    core("text_hidden_states", DType::F32, text_shape, Buffer::ZeroText)
                                };
                                if self.request.use_erg_lyric {
                                    let erg = core("erg_q_scale", DType::F32, q(&self.q_lyric_erg), Buffer::LyricErgQScale);
                                    (text, real_lyrics, erg)
                                } else {
                                    (text, zero_lyrics, ones)
                                }
                            }
                        };
                        // The text states are read by the condition encodes only: the last one drops them.
                        let release = if i + 1 == total {
                            let mut keys = vec![KEY_TEXT];
                            if self.encodes.contains(&Encode::Text { erg: true }) {
                                keys.push(KEY_TEXT_ERG);
                            }
                            keys
                        } else {
                            vec![]
                        };
                        (
                            "condition_encoder",
                            vec![
                                text,
                                core("text_attention_mask", DType::I64, vec![b, lt], Buffer::CaptionMask),
                                core("speaker_embeds", DType::F32, vec![b, SPEAKER_DIM as i64], Buffer::Speaker),
                                lyrics,
                                core("lyric_attention_mask", DType::I64, vec![b, ll], Buffer::LyricMask),
                                scale,
                            ],
                            vec![Output { name: "encoder_hidden_states", keep_as: Some(Self::key_of(c)) }],
                            release,
                        )
                    }
                };
                Call { component, inputs, outputs, release, stage: Stage::Encode, stage_done: i, stage_total: total }
            }
            Step::Dit(k) => {
                let call = self.diffusion.call_index();
                let condition = self.plan[call][k];
                let last = call + 1 == self.plan.len() && k + 1 == self.plan[call].len();
                let release = if last {
                    let mut keys = vec![KEY_ENC];
                    if self.plan.iter().any(|l| l.len() > 1) {
                        if self.plan.iter().flatten().any(|c| *c == Condition::TextOnly) {
                            keys.push(KEY_ENC_TEXT);
                        }
                        keys.push(KEY_ENC_UNCOND);
                    }
                    keys
                } else {
                    vec![]
                };
                let scale = match condition {
                    Condition::Unconditional { erg: true } => {
                        core("erg_q_scale", DType::F32, q(&self.q_dit_erg), Buffer::DitErgQScale)
                    }
                    _ => core("erg_q_scale", DType::F32, q(&self.q_dit), Buffer::DitQScale),
                };
                let enc_len = 1 + lt + ll;
                Call {
                    component: "dit_decoder",
                    inputs: vec![
                        core("hidden_states", DType::F32, vec![b, CHANNELS as i64, HEIGHT as i64, t], Buffer::Latents),
                        core("attention_mask", DType::I64, vec![b, t], Buffer::FrameMask),
                        host("encoder_hidden_states", vec![b, enc_len, -1], Self::key_of(condition)),
                        core("encoder_attention_mask", DType::I64, vec![b, enc_len], Buffer::EncoderMask),
                        core("timestep", DType::F32, vec![b], Buffer::Timestep),
                        scale,
                    ],
                    outputs: vec![Output { name: "velocity", keep_as: None }],
                    release,
                    stage: Stage::Diffusion,
                    stage_done: self.decodes_done,
                    stage_total: self.decodes_total,
                }
            }
            Step::Dcae(k) => {
                let len = self.dcae_windows[k].len as i64;
                Call {
                    component: "dcae_decoder",
                    inputs: vec![core(
                        "latents",
                        DType::F32,
                        vec![b, CHANNELS as i64, HEIGHT as i64, len],
                        Buffer::WindowLatents,
                    )],
                    outputs: vec![Output { name: "mel", keep_as: None }],
                    release: vec![],
                    stage: Stage::Decode,
                    stage_done: k,
                    stage_total: self.decode_calls(),
                }
            }
            Step::Vocoder(k) => {
                let len = self.vocoder_windows[k].len as i64;
                Call {
                    component: "vocoder",
                    inputs: vec![core("mel", DType::F32, vec![2 * b, MEL_BINS as i64, len], Buffer::Mel)],
                    outputs: vec![Output { name: "audio", keep_as: None }],
                    release: vec![],
                    stage: Stage::Decode,
                    stage_done: self.dcae_windows.len() + k,
                    stage_total: self.decode_calls(),
                }
            }
            Step::Finished => unreachable!("describe is not called once finished"),
        }
    }

    pub fn buffer(&self, buffer: Buffer) -> &[u8] {
        fn bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
            bytemuck::cast_slice(v)
        }
        match buffer {
            Buffer::CaptionIds => bytes(&self.text_ids),
            Buffer::CaptionMask => bytes(&self.text_mask),
            Buffer::LyricIds => bytes(&self.lyric_ids),
            Buffer::LyricMask => bytes(&self.lyric_mask),
            Buffer::ZeroLyricIds => bytes(&self.zero_lyric_ids),
            Buffer::ZeroText => bytes(&self.zero_text),
            Buffer::Speaker => bytes(&self.speaker),
            Buffer::EncoderMask => bytes(&self.encoder_mask),
            Buffer::FrameMask => bytes(&self.frame_mask),
            Buffer::TextQScale => bytes(&self.q_text),
            Buffer::TextErgQScale => bytes(&self.q_text_erg),
            Buffer::LyricQScale => bytes(&self.q_lyric),
            Buffer::LyricErgQScale => bytes(&self.q_lyric_erg),
            Buffer::DitQScale => bytes(&self.q_dit),
            Buffer::DitErgQScale => bytes(&self.q_dit_erg),
            Buffer::Latents => bytes(self.diffusion.latents()),
            Buffer::Timestep => bytes(&self.timestep),
            Buffer::WindowLatents => bytes(&self.window_latents),
            Buffer::Mel => bytes(&self.window_mel),
            _ => &[],
        }
    }

    /// Takes the outputs of the pending call; a rejected submission changes nothing.
    pub fn submit(&mut self, outputs: &[Submitted]) -> Result<()> {
        check_pending(self.pending, self.step == Step::Finished)?;
        let call = self.describe();
        check_outputs(&call, outputs)?;
        let get = |name: &str| outputs.iter().find(|o| o.name == name).copied().expect("checked above");
        let (b, t) = (self.batch as i64, self.frames as i64);
        match self.step {
            Step::Encode(_) => {}
            Step::Dit(_) => {
                let out = get("velocity");
                expect_shape(&out, &[Some(b), Some(CHANNELS as i64), Some(HEIGHT as i64), Some(t)], "dit_decoder")?;
                let v = cast_f32(&out)?;
                crate::error::ensure_finite(v, "dit_decoder output velocity")?;
                self.take_velocity(v)?;
            }
            Step::Dcae(k) => {
                let out = get("mel");
                let w = self.dcae_windows[k];
                let f = (w.len * MEL_PER_LATENT) as i64;
                expect_shape(&out, &[Some(b), Some(2), Some(MEL_BINS as i64), Some(f)], "dcae_decoder")?;
                let mel = cast_f32(&out)?;
                crate::error::ensure_finite(mel, "dcae_decoder output mel")?;
                if k == 0 {
                    self.mel = super::filled(2 * self.batch * MEL_BINS * self.mel_frames, 0.0)?;
                }
                // [B, 2, 128, F] is [2B, 128, F] in memory: row 2b is item b's left channel.
                v1_windows::join(&mut self.mel, self.frames, mel, &w, MEL_PER_LATENT, 0);
                if k + 1 == self.dcae_windows.len() {
                    let joined = v1_windows::joined_frames(&self.vocoder_windows);
                    self.audio44 = super::filled(2 * self.batch * joined * HOP, 0.0)?;
                }
            }
            Step::Vocoder(k) => {
                let out = get("audio");
                let w = self.vocoder_windows[k];
                expect_shape(&out, &[Some(2 * b), Some((w.len * HOP) as i64)], "vocoder")?;
                let audio = cast_f32(&out)?;
                crate::error::ensure_finite(audio, "vocoder output audio")?;
                let joined = v1_windows::joined_frames(&self.vocoder_windows);
                let crossfade = if self.overlapped { VOCODER_CROSSFADE } else { 0 };
                v1_windows::join(&mut self.audio44, joined, audio, &w, HOP, crossfade);
                if k + 1 == self.vocoder_windows.len() {
                    let audio44 = std::mem::take(&mut self.audio44);
                    if let Err(e) = self.finish(&audio44) {
                        self.audio44 = audio44;
                        return Err(e);
                    }
                }
            }
            Step::Finished => unreachable!("pending is false once finished"),
        }
        self.pending = false;
        self.step = match self.step {
            Step::Encode(i) if i + 1 < self.encodes.len() => Step::Encode(i + 1),
            Step::Encode(_) => Step::Dit(0),
            Step::Dit(_) if !self.velocities.is_empty() => Step::Dit(self.velocities.len()),
            Step::Dit(_) if self.diffusion.is_finished() => Step::Dcae(0),
            Step::Dit(_) => Step::Dit(0),
            Step::Dcae(k) if k + 1 < self.dcae_windows.len() => Step::Dcae(k + 1),
            Step::Dcae(_) => Step::Vocoder(0),
            Step::Vocoder(k) if k + 1 < self.vocoder_windows.len() => Step::Vocoder(k + 1),
            Step::Vocoder(_) => Step::Finished,
            Step::Finished => Step::Finished,
        };
        if let Step::Dit(0) = self.step {
            let ts = self.diffusion.timestep()?;
            self.timestep = vec![ts; self.batch];
        }
        match self.step {
            Step::Dcae(k) => {
                let w = self.dcae_windows[k];
                v1_windows::cut(self.diffusion.latents(), self.frames, &w, 1, &mut self.window_latents);
            }
            Step::Vocoder(k) => {
                self.window_latents = Vec::new();
                let w = self.vocoder_windows[k];
                v1_windows::cut(&self.mel, self.mel_frames, &w, 1, &mut self.window_mel);
            }
            Step::Finished => {
                self.mel = Vec::new();
                self.window_mel = Vec::new();
            }
            _ => {}
        }
        Ok(())
    }

    /// One decode's velocity; the call's last one guides and steps.
    fn take_velocity(&mut self, v: &[f32]) -> Result<()> {
        let call = self.diffusion.call_index();
        let wanted = self.plan[call].len();
        self.velocities.push(v.to_vec());
        if self.velocities.len() < wanted {
            self.decodes_done += 1;
            return Ok(());
        }
        let refs: Vec<&[f32]> = self.velocities.iter().map(Vec::as_slice).collect();
        if let Err(e) = self.diffusion.submit(&refs) {
            self.velocities.pop();
            return Err(e);
        }
        self.velocities.clear();
        self.decodes_done += 1;
        Ok(())
    }

    /// Calls of the decode stage: the DCAE windows, then the vocoder windows.
    fn decode_calls(&self) -> usize {
        self.dcae_windows.len() + self.vocoder_windows.len()
    }

    /// Joined vocoder rows → the song's 512·F samples per row at 44.1 kHz → 48 kHz → peak guard.
    fn finish(&mut self, audio44: &[f32]) -> Result<()> {
        let rows = 2 * self.batch;
        let song = self.mel_frames * HOP;
        let joined = audio44.len() / rows;
        let cut: Vec<f32>;
        let audio44 = if joined == song {
            audio44
        } else {
            // The overlapped layout's last block runs on zero padding past the song: cut it off.
            cut = audio44.chunks_exact(joined).flat_map(|row| &row[..song]).copied().collect();
            &cut
        };
        let mut out = super::filled(rows * self.samples, 0.0)?;
        crate::resample::resample(audio44, rows, frames::V1_SAMPLE_RATE, self.package.config().sample_rate, &mut out)?;
        let peaks = crate::peak_guard::peak_guard(&mut out, self.batch, 2, self.samples)?;
        self.audio = out;
        self.peaks = peaks;
        Ok(())
    }

    fn ensure_finished(&self, what: &str) -> Result<()> {
        if self.step != Step::Finished {
            return Err(Error::invalid_state(format!("{what}: the generation has not finished yet")));
        }
        Ok(())
    }

    /// Audio [B, 2, samples] at 48 kHz (peak-guarded), once finished.
    pub fn audio(&self) -> Result<(&[f32], [usize; 3])> {
        self.ensure_finished("audio")?;
        Ok((&self.audio, [self.batch, 2, self.samples]))
    }

    /// The final latents `[B, 8, 16, T]`, reported as `[B, 128, T]` (the same memory).
    pub fn latents(&self) -> Result<(&[f32], [usize; 3])> {
        self.ensure_finished("latents")?;
        Ok((self.diffusion.latents(), [self.batch, CHANNELS * HEIGHT, self.frames]))
    }

    fn resolved_request(&self, item: Option<usize>) -> Value {
        let mut r = self.request.to_json();
        let seeds: Vec<i64> = match item {
            Some(i) => vec![self.seeds[i] as i64],
            None => self.seeds.iter().map(|&s| s as i64).collect(),
        };
        r["seeds"] = json!(seeds);
        r["batch_size"] = json!(seeds.len());
        r
    }

    /// What decides item `item`'s audio: the request's sound-affecting values (not batch size,
    /// format or the duration beyond its frame count), the seed and the package.
    pub fn track_params(&self, item: usize) -> Result<Value> {
        if item >= self.batch {
            return Err(Error::invalid_argument(format!("item {item} is out of range: the batch has {} items", self.batch)));
        }
        let mut r = self.request.to_json();
        let map = r.as_object_mut().expect("an object");
        for key in ["seeds", "batch_size", "audio_format", "duration"] {
            map.remove(key);
        }
        Ok(json!({
            "scheme": V1_TRACK_ID_SCHEME,
            "model_family": "ace-step-v1",
            "model_manifest_sha256": self.package.manifest_sha256(),
            "frames": self.frames,
            "seed": self.seeds[item],
            "settings": r,
        }))
    }

    pub fn track_id(&self, item: usize) -> Result<String> {
        crate::track_id::track_id(&self.track_params(item)?.to_string())
    }

    pub fn info_json(&self) -> Result<Value> {
        let ids = (0..self.batch).map(|i| self.track_id(i)).collect::<Result<Vec<_>>>()?;
        let rate = self.package.config().sample_rate;
        Ok(json!({
            "model_family": "ace-step-v1",
            "model_kind": "v1",
            "request": self.resolved_request(None),
            "notes": self.notes,
            "seeds": self.seeds,
            "batch_size": self.batch,
            "frames": self.frames,
            "sample_rate": rate,
            "audio_channels": 2,
            "samples": self.samples,
            "duration_s": self.samples as f64 / rate as f64,
            "schedule": self.sigmas,
            "num_steps": self.request.inference_steps,
            "model_calls": self.plan.len(),
            "dit_decodes": self.decodes_total,
            "guided": self.plan.iter().any(|l| l.len() > 1),
            "decode": {
                "overlapped": self.overlapped,
                "dcae_windows": self.dcae_windows.len(),
                "vocoder_windows": self.vocoder_windows.len(),
            },
            "erg_tau": self.erg_tau,
            "components": self.components(),
            "prompts": {"caption": self.request.caption, "lyrics": self.request.lyrics},
            "tokens": {
                "caption": &self.text_ids[..self.text_len],
                "lyrics": &self.lyric_ids[..self.lyric_len],
            },
            "file_names": super::file_names(&ids),
            "track_ids": ids,
            "lm": null,
        }))
    }

    pub fn sidecar_json(&self, item: usize, host: Value) -> Result<Value> {
        self.ensure_finished("sidecar")?;
        let params = self.track_params(item)?;
        Ok(json!({
            "track_id": self.track_id(item)?,
            "seed": self.seeds[item],
            "sample_rate": self.package.config().sample_rate,
            "channels": 2,
            "samples": self.samples,
            "frames": self.frames,
            "request": self.resolved_request(Some(item)),
            "notes": self.notes,
            "params": params,
            "schedule": self.sigmas,
            "peak_before_guard": self.peaks.get(item),
            "model": {
                "path": self.package.root().to_string_lossy(),
                "family": "ace-step-v1",
                "variant": self.package.variant(),
                "kind": "v1",
                "manifest_sha256": self.package.manifest_sha256(),
                "random_weights": self.package.random_weights(),
            },
            "runtime": {"core_version": env!("CARGO_PKG_VERSION"), "core_abi": crate::ffi::ACE_ABI_VERSION},
            "host": host,
            "lm": null,
        }))
    }
}

/// The package's lyric tokenizer (`tokenizers.lyric`).
fn lyric_tokenizer(package: &Package) -> Result<V1LyricTokenizer> {
    let dir = package.manifest().pointer("/tokenizers/lyric/dir").and_then(Value::as_str).ok_or_else(|| {
        Error::invalid_argument(format!("model package {} has no \"lyric\" tokenizer", package.root().display()))
    })?;
    if dir.split(['/', '\\']).any(|p| p == "..") || std::path::Path::new(dir).is_absolute() {
        return Err(Error::invalid_argument(format!("tokenizers.lyric.dir {dir:?} is not a path inside the package")));
    }
    let path = package.root().join(dir).join("tokenizer.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::new(crate::error::ErrorKind::Io, format!("{}: cannot read: {e}", path.display())))?;
    V1LyricTokenizer::from_json(&text).map_err(|e| Error::new(e.kind, format!("{}: {}", path.display(), e.message)))
}

/// A fixed dimension of a graph input or output as the manifest declares it.
fn fixed_dim(package: &Package, component: &str, name: &str, axis: usize) -> Result<usize> {
    let c = package.component(component)?;
    let spec = c.input(name).or_else(|_| c.output(name))?;
    match spec.shape.get(axis) {
        Some(Dim::Fixed(n)) if *n > 0 => Ok(*n as usize),
        other => Err(Error::invalid_argument(format!(
            "component {component} {name} dimension {axis} is {other:?}, expected a fixed size (incompatible exporter version?)"
        ))),
    }
}
