//! The generation driver: one request on one package, from prompts to peak-guarded audio.
//!
//! The core never runs a graph. [`Generation::next`] describes the next graph run — which
//! component, its named inputs, the outputs wanted — and the host runs it with its own ONNX Runtime
//! session and hands the outputs back with [`Generation::submit`]. Between the two the core does
//! everything else: prompts, tokenization and truncation, the frame rule, LM-hint padding, encoder
//! feeds, seeded noise per item, the schedule, guided [cond | uncond] batching with CFG / APG and
//! the cfg interval, the solver steps, the VAE tile plan with its crops, and the peak guard.
//!
//! The calls of a text2music run, in order (spec §3.1):
//! 1. `audio_detokenizer` — only with LM audio codes: codes → 25 Hz hints, cropped or padded with
//!    the first silence-latent frames to T;
//! 2. `text_encoder`, `lyric_embedding` — their outputs stay in the host ("keep as");
//! 3. `condition_encoder` — encoder states and context latents (kept by the host when unguided;
//!    read by the core when guided, which builds the [cond | uncond] batch once);
//! 4. `dit_cross_kv` once — every DiT layer's cross-attention K/V of those encoder states, kept by
//!    the host for all steps (they do not change between steps) and released after the last;
//! 5. `dit_decoder` once per step — the core applies guidance and the solver step in place;
//! 6. `vae_decoder` once per tile — the core crops and concatenates, then applies the peak guard.
//!
//! Inputs that the core does not need to read (the text encoder's states, say, or a future LM KV
//! cache) are named as "the host's value kept under key K": they never cross the boundary.
//!
//! With the 5 Hz LM (`lm`), the LM phases run first (`lm_prefill`, then `lm_decode` per token;
//! the KV cache is host-kept) and the DiT run above is built from what they wrote
//! ([`Generation`] in `driver` chains the two).
//!
//! Cancelling is dropping the generation: nothing is written anywhere by the core.

mod driver;
mod lm;
mod params;
mod v1;
mod v1_windows;

pub use driver::Generation;
pub use lm::package_has_lm;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::context::{Method, ModelKind, SchedulerContext};
use crate::error::{Error, Result};
use crate::frames;
use crate::guidance::{self, Apg, ApgConfig};
use crate::noise::{self, NoiseMode};
use crate::package::{DType, Package};
use crate::request::{self, GuidanceType, Request};
use crate::tiling::{self, AceTileWindow};

pub use params::track_params;

/// Timbre reference length fed to the condition encoder (spec §3.1: `silence_latent[:, :750]`).
pub const TIMBRE_FRAMES: usize = 750;
/// Largest batch × latent frames one generation may hold (8 items of 600 s: ~1.8 GB of audio).
/// Checked before anything is allocated: an allocation failure would abort the host process.
pub const MAX_BATCH_FRAMES: usize = 8 * frames::MAX_FRAMES as usize;

/// Stages a host can show progress for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// LM phases: progress counts tokens against the phase's budget.
    LmSimple,
    LmMetadata,
    LmCodes,
    Encode,
    Diffusion,
    Decode,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::LmSimple => "lm_simple",
            Stage::LmMetadata => "lm_metadata",
            Stage::LmCodes => "lm_codes",
            Stage::Encode => "encode",
            Stage::Diffusion => "diffusion",
            Stage::Decode => "decode",
        }
    }
}

/// Where a graph input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A buffer the core owns (see [`Generation::buffer`]); valid until the next `submit`/`next`.
    Core(Buffer),
    /// A value the host kept from an earlier call under this key.
    Host(&'static str),
}

/// The core-owned buffers a call can point into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    AudioCodes,
    CaptionIds,
    CaptionMask,
    LyricIds,
    LyricMask,
    Timbre,
    TimbreOrder,
    SrcLatents,
    ChunkMasks,
    Latents,
    GuidedLatents,
    Timestep,
    GuidedContext,
    GuidedEncoder,
    Tile,
    LmIds,
    LmMask,
    LmPositions,
    // ACE-Step v1 (see `v1`).
    ZeroLyricIds,
    ZeroText,
    Speaker,
    EncoderMask,
    FrameMask,
    TextQScale,
    TextErgQScale,
    LyricQScale,
    LyricErgQScale,
    DitQScale,
    DitErgQScale,
    WindowLatents,
    Mel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: &'static str,
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: &'static str,
    /// `Some(key)`: the host keeps this output under `key` and does not submit it.
    pub keep_as: Option<&'static str>,
}

/// One graph run the host is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub component: &'static str,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    /// Host-kept values that no later call needs: drop them after this call.
    pub release: Vec<&'static str>,
    pub stage: Stage,
    /// Calls of this stage completed before this one, and the stage's total.
    pub stage_done: usize,
    pub stage_total: usize,
}

/// An output the host hands back.
#[derive(Debug, Clone, Copy)]
pub struct Submitted<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [i64],
    /// The raw bytes (native endianness), `numel · dtype size` of them.
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Detokenize,
    TextEncoder,
    LyricEmbedding,
    ConditionEncoder,
    CrossKv,
    Dit(usize),
    Vae(usize),
    Finished,
}

// Host keys of the values the core does not read.
const KEY_TEXT: &str = "text_hidden_states";
const KEY_LYRIC: &str = "lyric_hidden_states";
const KEY_ENCODER: &str = "encoder_hidden_states";
const KEY_CONTEXT: &str = "context_latents";
const KEY_CROSS_KV: &str = "cross_kv";

/// The DiT part of a generation (encoders, diffusion, VAE); see the module documentation.
pub struct DitRun {
    package: Arc<Package>,
    request: Request,
    notes: Vec<String>,
    kind: ModelKind,
    batch: usize,
    frames: usize,
    channels: usize,
    seeds: Vec<u64>,
    dit_caption: String,
    dit_lyrics: String,
    ctx: SchedulerContext,
    guided: bool,
    apg: Option<Apg>,
    noise_mode: NoiseMode,
    plan: Vec<AceTileWindow>,

    // Inputs, built once.
    codes: Vec<i64>,
    caption_ids: Vec<i64>,
    caption_mask: Vec<i64>,
    lyric_ids: Vec<i64>,
    lyric_mask: Vec<i64>,
    timbre: Vec<f32>,
    timbre_frames: usize,
    timbre_order: Vec<i64>,
    src_latents: Vec<f32>,
    chunk_masks: Vec<f32>,
    // Guided runs: [cond | uncond] context and encoder states, and the doubled latents.
    guided_context: Vec<f32>,
    guided_encoder: Vec<f32>,
    guided_encoder_len: usize,
    guided_latents: Vec<f32>,
    // The loop state, allocated once.
    latents: Vec<f32>,
    next_latents: Vec<f32>,
    velocity: Vec<f32>,
    eps: Vec<f32>,
    timestep: Vec<f32>,
    tile: Vec<f32>,
    tile_frames: usize,
    /// Latent frames per VAE window (the request's `vae_decode_chunk`, else the official 512).
    tile_chunk: u32,
    audio: Vec<f32>,
    audio_written: usize,
    peaks: Vec<f32>,

    step: Step,
    pending: bool,
    finished_reported: bool,
}

impl DitRun {
    /// Resolves seeds, length, prompts and schedule of a normalised request for `package`, and
    /// checks that the package has every graph this run needs with the inputs the core feeds.
    pub fn new(package: Arc<Package>, normalized: request::Normalized) -> Result<Self> {
        let kind = package.kind();
        let request = normalized.request;
        let mut notes = normalized.notes;
        let batch = request.batch_size;
        let channels = package.config().latent_channels;

        let target_frames = match &request.audio_codes {
            // The DiT length follows the code count, not a requested duration (spec §3.1).
            Some(codes) => (5 * codes.len()) as u32,
            None => frames::frames_from_duration(request.duration.unwrap_or(request::DEFAULT_DURATION_S))
                .map_err(|e| Error::invalid_argument(format!("request.duration: {}", e.message)))?,
        };
        let frames = frames::dit_frames(target_frames)? as usize;
        if batch * frames > MAX_BATCH_FRAMES {
            return Err(Error::invalid_argument(format!(
                "request.batch_size: {batch} items of {frames} latent frames exceed the limit of \
                 {MAX_BATCH_FRAMES} batch × frames per generation (split the batch)"
            )));
        }
        let silence = package.silence_latent();
        let silence_frames = silence.shape[1];
        if frames > silence_frames {
            return Err(Error::invalid_argument(format!(
                "{frames} latent frames exceed the package's silence latent ({silence_frames} frames)"
            )));
        }

        let seeds = resolve_seeds(&request.seeds, batch, &mut notes);
        let noise_mode = NoiseMode::from_json(Some(&json!({ "mode": request.noise_mode }).to_string()))?;
        let ctx = SchedulerContext::from_json(&context_config(&request, kind, &seeds).to_string())
            .map_err(|e| Error::new(e.kind, format!("request: {}", e.message)))?;
        notes.extend(ctx.notes().iter().cloned());

        let guided = request.guidance.is_some_and(|g| g.scale > 1.0);
        let apg = match request.guidance {
            Some(g) if guided && g.kind == GuidanceType::Apg => Some(Apg::new(ApgConfig::default())?),
            _ => None,
        };

        let has_codes = request.audio_codes.is_some();
        let prompts = crate::prompt::PromptRequest::from_json(&request.prompt_json(has_codes).to_string())?.build()?;
        let tokenizer = package.text_tokenizer()?;
        let config = package.config();
        let caption_ids = tokenize(tokenizer, &prompts.dit_caption, config.caption_max_length)?;
        let lyric_ids = tokenize(tokenizer, &prompts.dit_lyrics, config.lyric_max_length)?;

        let timbre_frames = TIMBRE_FRAMES.min(silence_frames);
        let silence_rows = |n: usize| &silence.data[..n * channels];
        let tile_chunk = request.vae_decode_chunk.unwrap_or(tiling::DEFAULT_CHUNK);
        let plan = tiling::tile_plan(frames as u32, tile_chunk, tiling::DRIVER_OVERLAP)?;
        if tile_chunk != tiling::DEFAULT_CHUNK
            && plan == tiling::tile_plan(frames as u32, tiling::DEFAULT_CHUNK, tiling::DRIVER_OVERLAP)?
        {
            notes.push(format!(
                "vae_decode_chunk {tile_chunk} changes nothing here: the song's {frames} latent frames are decoded in \
                 one window either way"
            ));
        }
        let tile_frames = plan.iter().map(|w| (w.end - w.start) as usize).max().unwrap_or(0);
        let samples = frames * config.hop_length as usize;
        let latent_len = checked_len(&[batch, frames, channels])?;
        let audio_len = checked_len(&[batch, config.audio_channels, samples])?;

        let mut generation = Self {
            kind,
            batch,
            frames,
            channels,
            seeds,
            dit_caption: prompts.dit_caption,
            dit_lyrics: prompts.dit_lyrics,
            guided,
            apg,
            noise_mode,
            codes: request.audio_codes.clone().unwrap_or_default(),
            caption_mask: vec![1; batch * caption_ids.len()],
            caption_ids: repeat(&caption_ids, batch),
            lyric_mask: vec![1; batch * lyric_ids.len()],
            lyric_ids: repeat(&lyric_ids, batch),
            timbre: repeat(silence_rows(timbre_frames), batch),
            timbre_frames,
            timbre_order: (0..batch as i64).collect(),
            // Without codes the context source is silence; with codes it is set from the hints.
            src_latents: if has_codes { Vec::new() } else { repeat(silence_rows(frames), batch) },
            chunk_masks: filled(latent_len, 1.0)?,
            guided_context: Vec::new(),
            guided_encoder: Vec::new(),
            guided_encoder_len: 0,
            guided_latents: if guided { filled(2 * latent_len, 0.0)? } else { Vec::new() },
            latents: filled(latent_len, 0.0)?,
            next_latents: filled(latent_len, 0.0)?,
            velocity: if guided { filled(latent_len, 0.0)? } else { Vec::new() },
            eps: if request.infer_method == Method::Sde { filled(latent_len, 0.0)? } else { Vec::new() },
            timestep: Vec::new(),
            tile: Vec::with_capacity(checked_len(&[batch, channels, tile_frames])?),
            tile_frames: 0,
            audio: filled(audio_len, 0.0)?,
            audio_written: 0,
            peaks: Vec::new(),
            plan,
            tile_chunk,
            ctx,
            request,
            notes,
            package,
            step: Step::Finished,
            pending: false,
            finished_reported: false,
        };
        generation.check_package()?;
        // Initial noise: one generator per item, [1, T, C] each (spec §4.4).
        let item = frames * channels;
        for (chunk, &seed) in generation.latents.chunks_mut(item).zip(&generation.seeds) {
            noise::fill_normal(&generation.noise_mode, seed, chunk)?;
        }
        generation.step = if has_codes { Step::Detokenize } else { Step::TextEncoder };
        Ok(generation)
    }

    /// The graphs this run needs, in the order of first use.
    pub fn components(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if !self.codes.is_empty() {
            names.push("audio_detokenizer");
        }
        names.extend(["text_encoder", "lyric_embedding", "condition_encoder", "dit_cross_kv", "dit_decoder", "vae_decoder"]);
        names
    }

    /// Every component exists and takes exactly the inputs the core feeds it.
    fn check_package(&self) -> Result<()> {
        for name in self.components() {
            let component = self.package.component(name)?;
            let expected = self.input_names(name);
            let mut have: Vec<&str> = component.inputs.iter().map(|s| s.name.as_str()).collect();
            let mut want = expected.clone();
            have.sort_unstable();
            want.sort_unstable();
            if have != want {
                return Err(Error::invalid_argument(format!(
                    "component {name} of package {} takes inputs {have:?} but this core feeds {want:?} \
                     (package exported by an incompatible exporter version?)",
                    self.package.root().display()
                )));
            }
            for output in self.output_names(name) {
                component.output(output)?;
            }
        }
        if self.guided {
            let null = self.package.null_condition_emb()?;
            if null.data.is_empty() {
                return Err(Error::invalid_argument("null_condition_emb is empty"));
            }
        }
        Ok(())
    }

    fn input_names(&self, component: &str) -> Vec<&'static str> {
        match component {
            "audio_detokenizer" => vec!["audio_codes"],
            "text_encoder" => vec!["input_ids", "attention_mask"],
            "lyric_embedding" => vec!["input_ids"],
            "condition_encoder" => vec![
                "text_hidden_states",
                "text_attention_mask",
                "lyric_hidden_states",
                "lyric_attention_mask",
                "refer_audio_packed",
                "refer_audio_order_mask",
                "src_latents",
                "chunk_masks",
            ],
            "dit_cross_kv" => vec!["encoder_hidden_states"],
            "dit_decoder" => vec!["hidden_states", "timestep", "timestep_r", "context_latents", "cross_kv"],
            "vae_decoder" => vec!["latents"],
            _ => Vec::new(),
        }
    }

    fn output_names(&self, component: &str) -> Vec<&'static str> {
        match component {
            "audio_detokenizer" => vec!["lm_hints"],
            "text_encoder" => vec!["last_hidden_state"],
            "lyric_embedding" => vec!["token_embeddings"],
            "condition_encoder" => vec!["encoder_hidden_states", "context_latents"],
            "dit_cross_kv" => vec!["cross_kv"],
            "dit_decoder" => vec!["velocity"],
            "vae_decoder" => vec!["audio"],
            _ => Vec::new(),
        }
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn is_finished(&self) -> bool {
        self.step == Step::Finished
    }

    /// The next graph run, or `None` once the audio is ready. Asking again before submitting
    /// returns the same call; asking again after `None` is an error.
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

    fn describe(&self) -> Call {
        let (b, t, c) = (self.batch as i64, self.frames as i64, self.channels as i64);
        let core = |name, dtype, shape: Vec<i64>, buffer| Input { name, dtype, shape, source: Source::Core(buffer) };
        let host = |name, dtype, shape: Vec<i64>, key| Input { name, dtype, shape, source: Source::Host(key) };
        let submit = |name| Output { name, keep_as: None };
        let keep = |name, key| Output { name, keep_as: Some(key) };
        let encode_total = if self.codes.is_empty() { 4 } else { 5 };
        let encode_done = |i: usize| if self.codes.is_empty() { i - 1 } else { i };
        let (lc, ll) = ((self.caption_ids.len() / self.batch) as i64, (self.lyric_ids.len() / self.batch) as i64);
        let call = |component, inputs, outputs, release: Vec<&'static str>, stage, done, total| Call {
            component,
            inputs,
            outputs,
            release,
            stage,
            stage_done: done,
            stage_total: total,
        };
        match self.step {
            Step::Detokenize => call(
                "audio_detokenizer",
                vec![core("audio_codes", DType::I64, vec![1, self.codes.len() as i64], Buffer::AudioCodes)],
                vec![submit("lm_hints")],
                vec![],
                Stage::Encode,
                0,
                encode_total,
            ),
            Step::TextEncoder => call(
                "text_encoder",
                vec![
                    core("input_ids", DType::I64, vec![b, lc], Buffer::CaptionIds),
                    core("attention_mask", DType::I64, vec![b, lc], Buffer::CaptionMask),
                ],
                vec![keep("last_hidden_state", KEY_TEXT)],
                vec![],
                Stage::Encode,
                encode_done(1),
                encode_total,
            ),
            Step::LyricEmbedding => call(
                "lyric_embedding",
                vec![core("input_ids", DType::I64, vec![b, ll], Buffer::LyricIds)],
                vec![keep("token_embeddings", KEY_LYRIC)],
                vec![],
                Stage::Encode,
                encode_done(2),
                encode_total,
            ),
            Step::ConditionEncoder => {
                let text_dim = self.hidden_dim("text_encoder", "last_hidden_state");
                let lyric_dim = self.hidden_dim("lyric_embedding", "token_embeddings");
                let outputs = if self.guided {
                    vec![submit("encoder_hidden_states"), submit("context_latents")]
                } else {
                    vec![keep("encoder_hidden_states", KEY_ENCODER), keep("context_latents", KEY_CONTEXT)]
                };
                call(
                    "condition_encoder",
                    vec![
                        host("text_hidden_states", DType::F32, vec![b, lc, text_dim], KEY_TEXT),
                        core("text_attention_mask", DType::I64, vec![b, lc], Buffer::CaptionMask),
                        host("lyric_hidden_states", DType::F32, vec![b, ll, lyric_dim], KEY_LYRIC),
                        core("lyric_attention_mask", DType::I64, vec![b, ll], Buffer::LyricMask),
                        core("refer_audio_packed", DType::F32, vec![b, self.timbre_frames as i64, c], Buffer::Timbre),
                        core("refer_audio_order_mask", DType::I64, vec![b], Buffer::TimbreOrder),
                        core("src_latents", DType::F32, vec![b, t, c], Buffer::SrcLatents),
                        core("chunk_masks", DType::F32, vec![b, t, c], Buffer::ChunkMasks),
                    ],
                    outputs,
                    vec![KEY_TEXT, KEY_LYRIC],
                    Stage::Encode,
                    encode_done(3),
                    encode_total,
                )
            }
            Step::CrossKv => {
                let (input, release) = self.cross_kv_input();
                call("dit_cross_kv", vec![input], vec![keep("cross_kv", KEY_CROSS_KV)], release, Stage::Encode, encode_done(4), encode_total)
            }
            Step::Dit(i) => {
                let n = self.ctx.num_steps();
                let last = i + 1 == n;
                let rows = if self.guided { 2 * b } else { b };
                let cross_kv = host("cross_kv", DType::F32, vec![rows, -1, -1, -1, -1], KEY_CROSS_KV);
                let inputs = if self.guided {
                    vec![
                        core("hidden_states", DType::F32, vec![rows, t, c], Buffer::GuidedLatents),
                        core("timestep", DType::F32, vec![rows], Buffer::Timestep),
                        core("timestep_r", DType::F32, vec![rows], Buffer::Timestep),
                        core("context_latents", DType::F32, vec![rows, t, 2 * c], Buffer::GuidedContext),
                        cross_kv,
                    ]
                } else {
                    vec![
                        core("hidden_states", DType::F32, vec![b, t, c], Buffer::Latents),
                        core("timestep", DType::F32, vec![b], Buffer::Timestep),
                        core("timestep_r", DType::F32, vec![b], Buffer::Timestep),
                        host("context_latents", DType::F32, vec![b, t, 2 * c], KEY_CONTEXT),
                        cross_kv,
                    ]
                };
                let release = match (last, self.guided) {
                    (false, _) => vec![],
                    (true, true) => vec![KEY_CROSS_KV],
                    (true, false) => vec![KEY_CONTEXT, KEY_CROSS_KV],
                };
                call("dit_decoder", inputs, vec![submit("velocity")], release, Stage::Diffusion, i, n)
            }
            Step::Vae(k) => call(
                "vae_decoder",
                vec![core("latents", DType::F32, vec![b, c, self.tile_frames as i64], Buffer::Tile)],
                vec![submit("audio")],
                vec![],
                Stage::Decode,
                k,
                self.plan.len(),
            ),
            Step::Finished => unreachable!("describe is not called once finished"),
        }
    }

    /// The `dit_cross_kv` input, and the host values it is the last reader of: unguided, the encoder
    /// states the host kept; guided, the core's [cond | uncond] encoder batch.
    fn cross_kv_input(&self) -> (Input, Vec<&'static str>) {
        let b = self.batch as i64;
        if self.guided {
            let rows = 2 * b;
            let enc_len = self.guided_encoder_len as i64;
            let hidden = self.guided_encoder.len() as i64 / (rows * enc_len.max(1));
            let shape = vec![rows, enc_len, hidden];
            (Input { name: "encoder_hidden_states", dtype: DType::F32, shape, source: Source::Core(Buffer::GuidedEncoder) }, vec![])
        } else {
            let shape = vec![b, -1, -1];
            (Input { name: "encoder_hidden_states", dtype: DType::F32, shape, source: Source::Host(KEY_ENCODER) }, vec![KEY_ENCODER])
        }
    }

    /// The last dimension of a graph output as the manifest declares it (-1 when symbolic).
    fn hidden_dim(&self, component: &str, output: &str) -> i64 {
        let spec = self.package.component(component).and_then(|c| c.output(output).cloned());
        match spec.ok().and_then(|s| s.shape.last().cloned()) {
            Some(crate::package::Dim::Fixed(n)) => n,
            _ => -1,
        }
    }

    /// The bytes of a core-owned input buffer of the pending call.
    pub fn buffer(&self, buffer: Buffer) -> &[u8] {
        fn bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
            bytemuck::cast_slice(v)
        }
        match buffer {
            Buffer::AudioCodes => bytes(&self.codes),
            Buffer::CaptionIds => bytes(&self.caption_ids),
            Buffer::CaptionMask => bytes(&self.caption_mask),
            Buffer::LyricIds => bytes(&self.lyric_ids),
            Buffer::LyricMask => bytes(&self.lyric_mask),
            Buffer::Timbre => bytes(&self.timbre),
            Buffer::TimbreOrder => bytes(&self.timbre_order),
            Buffer::SrcLatents => bytes(&self.src_latents),
            Buffer::ChunkMasks => bytes(&self.chunk_masks),
            Buffer::Latents => bytes(&self.latents),
            Buffer::GuidedLatents => bytes(&self.guided_latents),
            Buffer::Timestep => bytes(&self.timestep),
            Buffer::GuidedContext => bytes(&self.guided_context),
            Buffer::GuidedEncoder => bytes(&self.guided_encoder),
            Buffer::Tile => bytes(&self.tile),
            _ => &[],
        }
    }

    /// Prepares the buffers the current step's call reads (done when the previous call is
    /// submitted, so `next` itself never computes).
    fn prepare(&mut self) -> Result<()> {
        match self.step {
            Step::Dit(i) => {
                let t = self.ctx.step_inputs(i)?.timestep_input;
                let n = if self.guided { 2 * self.batch } else { self.batch };
                self.timestep.clear();
                self.timestep.resize(n, t);
                if self.guided {
                    let half = self.latents.len();
                    self.guided_latents[..half].copy_from_slice(&self.latents);
                    self.guided_latents[half..].copy_from_slice(&self.latents);
                }
            }
            Step::Vae(k) => {
                // The tile's latent window, channels first: z[b, c, f] = latents[b, start + f, c].
                let w = self.plan[k];
                let (start, end) = (w.start as usize, w.end as usize);
                let (t, c) = (self.frames, self.channels);
                self.tile_frames = end - start;
                self.tile.clear();
                for b in 0..self.batch {
                    let item = &self.latents[b * t * c..(b + 1) * t * c];
                    for ch in 0..c {
                        self.tile.extend((start..end).map(|f| item[f * c + ch]));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes the outputs of the pending call. A rejected submission changes nothing: the host may
    /// correct it and submit again.
    pub fn submit(&mut self, outputs: &[Submitted]) -> Result<()> {
        check_pending(self.pending, self.step == Step::Finished)?;
        let call = self.describe();
        check_outputs(&call, outputs)?;
        let get = |name: &str| outputs.iter().find(|o| o.name == name).copied().expect("checked above");
        match self.step {
            Step::Detokenize => self.take_hints(get("lm_hints"))?,
            Step::TextEncoder | Step::LyricEmbedding => {}
            Step::ConditionEncoder if self.guided => {
                self.take_guided_condition(get("encoder_hidden_states"), get("context_latents"))?
            }
            Step::ConditionEncoder | Step::CrossKv => {}
            Step::Dit(i) => self.take_velocity(i, get("velocity"))?,
            Step::Vae(k) => self.take_audio(k, get("audio"))?,
            Step::Finished => unreachable!("pending is false once finished"),
        }
        self.pending = false;
        self.step = match self.step {
            Step::Detokenize => Step::TextEncoder,
            Step::TextEncoder => Step::LyricEmbedding,
            Step::LyricEmbedding => Step::ConditionEncoder,
            Step::ConditionEncoder => Step::CrossKv,
            Step::CrossKv => {
                // The steps read the host's cross K/V: the guided encoder batch is no longer needed.
                self.guided_encoder = Vec::new();
                Step::Dit(0)
            }
            Step::Dit(i) if i + 1 < self.ctx.num_steps() => Step::Dit(i + 1),
            Step::Dit(_) => Step::Vae(0),
            Step::Vae(k) if k + 1 < self.plan.len() => Step::Vae(k + 1),
            Step::Vae(_) => {
                self.finish()?;
                Step::Finished
            }
            Step::Finished => Step::Finished,
        };
        self.prepare()
    }

    /// Detokenized LM hints [1, n, C] → [1, T, C]: cropped, or padded with the *first* frames of
    /// the silence latent (as the official handler does), then repeated for every item.
    fn take_hints(&mut self, out: Submitted) -> Result<()> {
        expect_shape(&out, &[Some(1), None, Some(self.channels as i64)], "audio_detokenizer")?;
        let values: &[f32] = cast_f32(&out)?;
        crate::error::ensure_finite(values, "audio_detokenizer output")?;
        let (t, c) = (self.frames, self.channels);
        let have = out.shape[1] as usize;
        let mut hints = Vec::with_capacity(t * c);
        hints.extend_from_slice(&values[..have.min(t) * c]);
        if have < t {
            hints.extend_from_slice(&self.package.silence_latent().data[..(t - have) * c]);
        }
        self.src_latents = repeat(&hints, self.batch);
        Ok(())
    }

    /// Guided runs feed the DiT [cond | uncond]: the context twice, and the encoder states followed
    /// by `null_condition_emb` broadcast over them (spec §4.3). They do not change between steps.
    fn take_guided_condition(&mut self, enc: Submitted, context: Submitted) -> Result<()> {
        let b = self.batch as i64;
        expect_shape(&enc, &[Some(b), None, None], "condition_encoder")?;
        expect_shape(&context, &[Some(b), Some(self.frames as i64), Some(2 * self.channels as i64)], "condition_encoder")?;
        let null = &self.package.null_condition_emb()?.data;
        let hidden = enc.shape[2] as usize;
        if null.len() != hidden {
            return Err(Error::invalid_argument(format!(
                "condition_encoder: encoder_hidden_states has width {hidden} but null_condition_emb has {}",
                null.len()
            )));
        }
        let enc_values = cast_f32(&enc)?;
        let ctx_values = cast_f32(&context)?;
        crate::error::ensure_finite(enc_values, "condition_encoder output encoder_hidden_states")?;
        crate::error::ensure_finite(ctx_values, "condition_encoder output context_latents")?;
        self.guided_encoder_len = enc.shape[1] as usize;
        self.guided_encoder = Vec::with_capacity(2 * enc_values.len());
        self.guided_encoder.extend_from_slice(enc_values);
        for _ in 0..enc_values.len() / hidden {
            self.guided_encoder.extend_from_slice(null);
        }
        self.guided_context = Vec::with_capacity(2 * ctx_values.len());
        self.guided_context.extend_from_slice(ctx_values);
        self.guided_context.extend_from_slice(ctx_values);
        Ok(())
    }

    /// The DiT velocity of step i: guidance (guided runs), then the solver step on the latents.
    fn take_velocity(&mut self, i: usize, out: Submitted) -> Result<()> {
        let rows = if self.guided { 2 * self.batch } else { self.batch } as i64;
        expect_shape(&out, &[Some(rows), Some(self.frames as i64), Some(self.channels as i64)], "dit_decoder")?;
        let v = cast_f32(&out)?;
        // Checked before guidance touches APG's momentum: a rejected submission changes nothing.
        crate::error::ensure_finite(v, "dit_decoder output velocity")?;
        let shape = [self.batch, self.frames, self.channels];
        let step = self.ctx.step_inputs(i)?;
        let velocity: &[f32] = if self.guided {
            let half = self.latents.len();
            let (cond, uncond) = v.split_at(half);
            let g = self.request.guidance.expect("guided runs have guidance");
            let t = step.t as f32;
            if guidance::cfg_interval_active(t, g.interval_start as f32, g.interval_end as f32)? {
                let gshape = guidance::Shape::new(self.batch, self.frames, self.channels)?;
                match self.apg.as_mut() {
                    Some(apg) => apg.apply(cond, uncond, &mut self.velocity, gshape, g.scale)?,
                    None => guidance::cfg(cond, uncond, &mut self.velocity, g.scale)?,
                }
                &self.velocity
            } else {
                cond
            }
        } else {
            v
        };
        if let (true, Some(seeds)) = (step_is_sde(&step), self.ctx.step_seeds(i)) {
            let item = self.frames * self.channels;
            for (chunk, seed) in self.eps.chunks_mut(item).zip(seeds) {
                noise::fill_normal(&self.noise_mode, seed, chunk)?;
            }
            self.ctx.step_with_noise(i, &self.latents, velocity, &self.eps, &shape, &mut self.next_latents)?;
        } else {
            self.ctx.step(i, &self.latents, velocity, &shape, &mut self.next_latents)?;
        }
        std::mem::swap(&mut self.latents, &mut self.next_latents);
        Ok(())
    }

    /// One decoded tile: keep the samples between its crops.
    fn take_audio(&mut self, k: usize, out: Submitted) -> Result<()> {
        let w = self.plan[k];
        let hop = self.package.config().hop_length as i64;
        let channels = self.package.config().audio_channels;
        let decoded = (w.end - w.start) as i64 * hop;
        expect_shape(&out, &[Some(self.batch as i64), Some(channels as i64), Some(decoded)], "vae_decoder")?;
        let audio = cast_f32(&out)?;
        crate::error::ensure_finite(audio, "vae_decoder output")?;
        let keep_from = w.crop_left as usize;
        let keep_to = decoded as usize - w.crop_right as usize;
        let kept = keep_to - keep_from;
        let samples = self.frames * hop as usize;
        for row in 0..self.batch * channels {
            let src = &audio[row * decoded as usize..][keep_from..keep_to];
            let dst = row * samples + self.audio_written;
            self.audio[dst..dst + kept].copy_from_slice(src);
        }
        self.audio_written += kept;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let samples = self.frames * self.package.config().hop_length as usize;
        if self.audio_written != samples {
            return Err(Error::invalid_state(format!(
                "the tile plan covered {} of {samples} samples (internal error)",
                self.audio_written
            )));
        }
        let channels = self.package.config().audio_channels;
        self.peaks = crate::peak_guard::peak_guard(&mut self.audio, self.batch, channels, samples)?;
        // Buffers no longer needed.
        for v in [&mut self.guided_latents, &mut self.guided_context, &mut self.guided_encoder, &mut self.next_latents] {
            *v = Vec::new();
        }
        Ok(())
    }

    /// Audio [B, channels, samples] (peak-guarded), once finished.
    pub fn audio(&self) -> Result<(&[f32], [usize; 3])> {
        self.ensure_finished("audio")?;
        let samples = self.frames * self.package.config().hop_length as usize;
        Ok((&self.audio, [self.batch, self.package.config().audio_channels, samples]))
    }

    /// The final latents [B, T, C], once finished.
    pub fn latents(&self) -> Result<(&[f32], [usize; 3])> {
        self.ensure_finished("latents")?;
        Ok((&self.latents, [self.batch, self.frames, self.channels]))
    }

    fn ensure_finished(&self, what: &str) -> Result<()> {
        if self.step != Step::Finished {
            return Err(Error::invalid_state(format!("{what}: the generation has not finished yet")));
        }
        Ok(())
    }

    /// The resolved request: what a host must pass back to reproduce item `item` exactly (one
    /// item, its seed), or the whole batch with `None`.
    pub fn resolved_request(&self, item: Option<usize>) -> Value {
        let mut r = self.request.to_json();
        let seeds: Vec<i64> = match item {
            Some(i) => vec![self.seeds[i] as i64],
            None => self.seeds.iter().map(|&s| s as i64).collect(),
        };
        r["seeds"] = json!(seeds);
        r["batch_size"] = json!(seeds.len());
        // The values the run used where the request left them open, so the request is complete.
        if let Some(shift) = self.ctx.shift_used() {
            r["shift"] = json!(shift);
        }
        if self.request.duration.is_none() && self.codes.is_empty() {
            r["duration"] = json!(request::DEFAULT_DURATION_S);
        }
        r
    }

    /// Everything decided before the first graph run: resolved request, seeds, frames, schedule,
    /// notes, the graphs needed, and each item's track id.
    pub fn info_json(&self) -> Result<Value> {
        let ids = (0..self.batch).map(|i| self.track_id(i)).collect::<Result<Vec<_>>>()?;
        Ok(json!({
            "model_kind": self.kind.name(),
            "request": self.resolved_request(None),
            "notes": self.notes,
            "seeds": self.seeds,
            "batch_size": self.batch,
            "frames": self.frames,
            "sample_rate": self.package.config().sample_rate,
            "audio_channels": self.package.config().audio_channels,
            "samples": self.frames * self.package.config().hop_length as usize,
            "duration_s": (self.frames * self.package.config().hop_length as usize) as f64 / self.package.config().sample_rate as f64,
            "schedule": self.ctx.timesteps_f32(),
            "num_steps": self.ctx.num_steps(),
            "guided": self.guided,
            "vae_tiles": self.plan.len(),
            "vae_tile_plan": {"chunk": self.tile_chunk, "overlap": tiling::DRIVER_OVERLAP},
            "components": self.components(),
            "prompts": {"dit_caption": self.dit_caption, "dit_lyrics": self.dit_lyrics},
            "tokens": {
                "caption": &self.caption_ids[..self.caption_ids.len() / self.batch],
                "lyrics": &self.lyric_ids[..self.lyric_ids.len() / self.batch],
            },
            "file_names": file_names(&ids),
            "track_ids": ids,
        }))
    }

    pub fn track_params(&self, item: usize) -> Result<Value> {
        if item >= self.batch {
            return Err(Error::invalid_argument(format!("item {item} is out of range: the batch has {} items", self.batch)));
        }
        Ok(params::track_params(self, item))
    }

    pub fn track_id(&self, item: usize) -> Result<String> {
        crate::track_id::track_id(&self.track_params(item)?.to_string())
    }

    /// The sidecar of item `item`: everything needed to reproduce it, plus what the host adds
    /// (`host`: file, format, runtime versions, timings — any JSON object).
    pub fn sidecar_json(&self, item: usize, host: Value) -> Result<Value> {
        self.ensure_finished("sidecar")?;
        let params = self.track_params(item)?;
        let samples = self.frames * self.package.config().hop_length as usize;
        Ok(json!({
            "track_id": self.track_id(item)?,
            "seed": self.seeds[item],
            "sample_rate": self.package.config().sample_rate,
            "channels": self.package.config().audio_channels,
            "samples": samples,
            "frames": self.frames,
            "request": self.resolved_request(Some(item)),
            "notes": self.notes,
            "params": params,
            "schedule": self.ctx.timesteps_f32(),
            "peak_before_guard": self.peaks.get(item),
            "model": {
                "path": self.package.root().to_string_lossy(),
                "variant": self.package.variant(),
                "kind": self.kind.name(),
                "manifest_sha256": self.package.manifest_sha256(),
                "random_weights": self.package.random_weights(),
            },
            "runtime": {"core_version": env!("CARGO_PKG_VERSION"), "core_abi": crate::ffi::ACE_ABI_VERSION},
            "host": host,
        }))
    }

    fn dit_prompts(&self) -> (&str, &str) {
        (&self.dit_caption, &self.dit_lyrics)
    }

    fn schedule(&self) -> Vec<f32> {
        self.ctx.timesteps_f32()
    }

    fn package(&self) -> &Package {
        &self.package
    }
}

/// Each item's file name in an output directory, per format: the first 16 hex digits of its track
/// id and a suffix that tells the formats apart. Every host names a song the same way from this.
fn file_names(track_ids: &[String]) -> Value {
    let suffixes =
        [("flac", ".flac"), ("mp3", ".mp3"), ("wav16", ".wav"), ("wav24", ".24bit.wav"), ("wav32f", ".f32.wav")];
    let mut names = serde_json::Map::new();
    for (format, suffix) in suffixes {
        let list: Vec<String> = track_ids.iter().map(|id| format!("{}{suffix}", &id[..16])).collect();
        names.insert(format.to_string(), json!(list));
    }
    Value::Object(names)
}

fn step_is_sde(step: &crate::context::StepInputs) -> bool {
    matches!(step.update, crate::context::Update::Sde { .. })
}

/// Seeds per item: the given ones; missing items continue from the last given seed (+1 each), or
/// from a random seed when none was given. Negative seeds are drawn at random. The rule is
/// documented in docs/dll_api.md; the official code draws an independent random seed per item.
fn resolve_seeds(requested: &[i64], batch: usize, notes: &mut Vec<String>) -> Vec<u64> {
    let mut seeds: Vec<u64> = requested.iter().map(|&s| noise::resolve_seed(s)).collect();
    if requested.iter().any(|&s| s < 0) {
        notes.push(format!("negative seeds were replaced by random ones: {seeds:?}"));
    }
    if seeds.is_empty() {
        seeds.push(noise::resolve_seed(-1));
    }
    while seeds.len() < batch {
        let last = *seeds.last().expect("at least one seed");
        seeds.push(last.wrapping_add(1) & 0xffff_ffff_ffff_ffff);
    }
    seeds
}

/// The scheduling context config of a request (see `context`).
fn context_config(request: &Request, kind: ModelKind, seeds: &[u64]) -> Value {
    let mut config = json!({
        "model": kind.name(),
        "method": request.infer_method.name(),
        "seeds": seeds,
        "noise": {"mode": request.noise_mode},
    });
    if let Some(s) = request.shift {
        config["shift"] = json!(s);
    }
    if let Some(ts) = &request.timesteps {
        config["timesteps"] = json!(ts);
    }
    if let Some(n) = request.inference_steps {
        config["steps"] = json!(n);
    }
    config
}

/// HF truncation (`truncation=True, max_length`): the content is cut so that the special tokens
/// the post-processor appends still fit.
fn tokenize(tokenizer: &crate::tokenizer::Tokenizer, text: &str, max_length: usize) -> Result<Vec<i64>> {
    let with_special = tokenizer.encode(text, true)?;
    let ids = if with_special.len() <= max_length {
        with_special
    } else {
        let content = tokenizer.encode(text, false)?;
        if with_special.get(..content.len()) != Some(&content[..]) {
            return Err(Error::invalid_argument(
                "the text tokenizer's post-processor does not append to the end; cannot truncate",
            ));
        }
        let tail = &with_special[content.len()..];
        let keep = max_length.saturating_sub(tail.len());
        content[..keep].iter().chain(tail).copied().collect()
    };
    Ok(ids.into_iter().map(i64::from).collect())
}

/// A buffer of `len` copies of `value`; an allocation the system refuses is an error, not an abort.
fn filled(len: usize, value: f32) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        Error::invalid_argument(format!("cannot allocate {} MB for the generation's buffers", len * 4 >> 20))
    })?;
    v.resize(len, value);
    Ok(v)
}

fn repeat<T: Copy>(item: &[T], times: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(item.len() * times);
    for _ in 0..times {
        out.extend_from_slice(item);
    }
    out
}

fn checked_len(dims: &[usize]) -> Result<usize> {
    crate::shape::numel(dims, "generation buffer")
}

fn check_tensor(out: &Submitted, component: &str) -> Result<()> {
    let mut numel: usize = 1;
    for &d in out.shape {
        if d < 0 {
            return Err(Error::invalid_argument(format!("submit: {component} output {:?} has a negative dimension {:?}", out.name, out.shape)));
        }
        numel = numel.checked_mul(d as usize).ok_or_else(|| {
            Error::length_mismatch(format!("submit: {component} output {:?} shape {:?} overflows", out.name, out.shape))
        })?;
    }
    let bytes = numel.checked_mul(out.dtype.size()).ok_or_else(|| Error::length_mismatch("submit: size overflows"))?;
    if out.data.len() != bytes {
        return Err(Error::length_mismatch(format!(
            "submit: {component} output {:?} has {} bytes but shape {:?} of {} needs {bytes}",
            out.name,
            out.data.len(),
            out.shape,
            out.dtype.name()
        )));
    }
    Ok(())
}

fn expect_shape(out: &Submitted, dims: &[Option<i64>], component: &str) -> Result<()> {
    let fits = out.shape.len() == dims.len() && out.shape.iter().zip(dims).all(|(&d, e)| e.is_none_or(|e| e == d) && d > 0);
    if out.dtype != DType::F32 || !fits {
        let want: Vec<String> = dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
        return Err(Error::invalid_argument(format!(
            "submit: {component} output {:?} is {}{:?}, expected float32[{}]",
            out.name,
            out.dtype.name(),
            out.shape,
            want.join(", ")
        )));
    }
    Ok(())
}

fn cast_f32<'a>(out: &Submitted<'a>) -> Result<&'a [f32]> {
    bytemuck::try_cast_slice(out.data).map_err(|e| {
        Error::invalid_argument(format!("submit: output {:?} data is not float32-aligned: {e}", out.name))
    })
}

/// The first check of a submission: a call is pending (before `describe`, which has no call to
/// describe once the run is finished).
fn check_pending(pending: bool, finished: bool) -> Result<()> {
    if pending {
        return Ok(());
    }
    Err(Error::invalid_state(if finished {
        "submit: the generation is finished; there is no call to submit outputs for"
    } else {
        "submit: no call is pending; call ace_generation_next first (each call is submitted once)"
    }))
}

/// Checks a submission against the pending call before any state changes: every output the host
/// must submit is there once, and none that it keeps or that the call lacks. Shared by the
/// families' runs and the LM, so a host gets the same errors from each.
fn check_outputs(call: &Call, outputs: &[Submitted]) -> Result<()> {
    let wanted: Vec<&Output> = call.outputs.iter().filter(|o| o.keep_as.is_none()).collect();
    for (i, out) in outputs.iter().enumerate() {
        if outputs[..i].iter().any(|o| o.name == out.name) {
            return Err(Error::invalid_argument(format!("submit: output {:?} is given twice", out.name)));
        }
        if let Some(kept) = call.outputs.iter().find(|o| o.name == out.name && o.keep_as.is_some()) {
            return Err(Error::invalid_argument(format!(
                "submit: {} output {:?} is kept by the host (as {:?}), not submitted",
                call.component,
                out.name,
                kept.keep_as.unwrap_or_default()
            )));
        }
        if !wanted.iter().any(|o| o.name == out.name) {
            let names: Vec<&str> = wanted.iter().map(|o| o.name).collect();
            return Err(Error::invalid_argument(format!(
                "submit: {} has no output {:?} to submit (expected {names:?})",
                call.component, out.name
            )));
        }
        check_tensor(out, call.component)?;
    }
    for w in &wanted {
        if !outputs.iter().any(|o| o.name == w.name) {
            return Err(Error::invalid_argument(format!("submit: {} output {:?} is missing", call.component, w.name)));
        }
    }
    Ok(())
}
