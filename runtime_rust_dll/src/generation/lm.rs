//! The 5 Hz LM phases of a generation (spec §5): the planner that writes the metadata and the
//! audio codes the DiT is conditioned on.
//!
//! Phases, in order, each a prefill call and then one decode call per token:
//! - `lm_simple` (simple mode, a request with `description`): the official "inspiration" prompt;
//!   the FSM in the understand phase writes the CoT block (caption, metadata, genres), then free
//!   text after `</think>` — the lyrics — until EOS. No CFG, as in the official `create_sample`.
//!   Its values then count as the user's, exactly as the official simple mode passes them on.
//! - `lm_metadata` (phase 1): the CoT metadata block, user values injected, stopped by EOS where
//!   `</think>` would come. Skipped when bpm, keyscale, timesignature and duration are all given
//!   (or `use_cot_metas` is off).
//! - `lm_codes` (phase 2): the CoT as an assistant turn, then `<|audio_code_N|>` tokens; with a user
//!   duration exactly 5 per second.
//!
//! CFG (spec §5.5): row 0 is the conditional prompt, row 1 the unconditional one, left-padded to
//! one length, each with its own positions from 0 (nano-vllm, not the pt backend's shifted ones).
//! The sampled token is appended to both rows. The KV cache never crosses into the core: every
//! `present_*` output is kept by the host under a key, and the next decode call names the key as
//! its `past_*` input. Only the logits `[rows, vocab]` are submitted.
//!
//! Sampling is the core's [`Sampler`] (CFG → FSM mask → temperature → top-k → top-p → draw). Its
//! seed is the request's resolved seed (item 0); draw k (counted over all phases from 0) uses
//! `(seed, k)`, so one seed fixes the whole plan.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Map, Value};

use super::{Buffer, Call, Input, Output, Source, Stage, Submitted};
use crate::error::{Error, Result};
use crate::fsm::{Fsm, FsmConfig, MetaValue, Phase as FsmPhase, UserMetadata};
use crate::package::{DType, Package};
use crate::request::{Request, MAX_AUDIO_CODES};
use crate::sampling::{Sampler, SamplerConfig};
use crate::tokenizer::Tokenizer;

/// Official simple-mode system instruction (`constants.DEFAULT_LM_INSPIRED_INSTRUCTION`).
pub const INSPIRED_INSTRUCTION: &str =
    "Expand the user's input into a more detailed and specific musical description:";
/// Positions kept free at the end of the context (nano-vllm's `max_tokens = max_model_len − 64`).
const CONTEXT_RESERVE: usize = 64;
/// The fewest new tokens a phase must be able to write; a prompt leaving less is refused.
const MIN_NEW_TOKENS: usize = 64;
/// Layers the host-kept KV names are prepared for (the 4B LM has 36).
const MAX_LM_LAYERS: usize = 256;

/// The LM's host config (manifest `config.lm`, docs/io_contract_lm.md).
#[derive(Debug, Clone)]
pub struct LmHostConfig {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub eos: u32,
    pub pad: u32,
    pub code_base: u32,
    pub num_codes: u32,
}

impl LmHostConfig {
    pub fn from_package(package: &Package) -> Result<Self> {
        let lm = package.manifest().pointer("/config/lm").ok_or_else(|| missing_lm(package, "config.lm"))?;
        let get = |key: &str| -> Result<usize> {
            lm.get(key).and_then(Value::as_u64).map(|v| v as usize).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "model package {}: manifest config.lm.{key} is missing or not a positive integer",
                    package.root().display()
                ))
            })
        };
        let config = Self {
            num_layers: get("num_layers")?,
            num_kv_heads: get("num_kv_heads")?,
            head_dim: get("head_dim")?,
            vocab_size: get("vocab_size")?,
            max_positions: get("max_position_embeddings")?,
            eos: get("eos_token_id")? as u32,
            pad: get("pad_token_id")? as u32,
            code_base: get("audio_code_base")? as u32,
            num_codes: get("num_audio_codes")? as u32,
        };
        if config.num_layers == 0 || config.num_layers > MAX_LM_LAYERS {
            return Err(Error::invalid_argument(format!(
                "model package {}: config.lm.num_layers {} is outside 1..={MAX_LM_LAYERS}",
                package.root().display(),
                config.num_layers
            )));
        }
        if config.vocab_size == 0 || config.vocab_size > crate::limits::MAX_VOCAB {
            return Err(Error::invalid_argument(format!(
                "model package {}: config.lm.vocab_size {} is outside 1..={}",
                package.root().display(),
                config.vocab_size,
                crate::limits::MAX_VOCAB
            )));
        }
        Ok(config)
    }
}

/// Whether `package` holds a runnable LM: both graphs, the LM tokenizer and its host config.
pub fn package_has_lm(package: &Package) -> bool {
    package.has("lm_prefill")
        && package.has("lm_decode")
        && package.manifest().pointer("/tokenizers/lm/dir").is_some()
        && package.manifest().pointer("/config/lm").is_some()
}

fn missing_lm(package: &Package, what: &str) -> Error {
    Error::invalid_argument(format!(
        "model package {} has no 5 Hz LM ({what} is missing; an LM run needs the components lm_prefill \
         and lm_decode, the \"lm\" tokenizer and config.lm — export the package with an \
         acestep-5Hz-lm checkpoint)",
        package.root().display()
    ))
}

/// The graph input/output names and host keys of layer i, made once for the process (the call
/// structures hold `&'static str`).
struct LayerNames {
    past_key: String,
    past_value: String,
    present_key: String,
    present_value: String,
    key_k: String,
    key_v: String,
}

fn layer(i: usize) -> &'static LayerNames {
    static NAMES: OnceLock<Vec<LayerNames>> = OnceLock::new();
    &NAMES.get_or_init(|| {
        (0..MAX_LM_LAYERS)
            .map(|i| LayerNames {
                past_key: format!("past_key_{i}"),
                past_value: format!("past_value_{i}"),
                present_key: format!("present_key_{i}"),
                present_value: format!("present_value_{i}"),
                key_k: format!("lm_cache_key_{i}"),
                key_v: format!("lm_cache_value_{i}"),
            })
            .collect()
    })[i]
}

/// Which LM phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmPhase {
    Simple,
    Metadata,
    Codes,
}

impl LmPhase {
    pub fn name(self) -> &'static str {
        match self {
            LmPhase::Simple => "lm_simple",
            LmPhase::Metadata => "lm_metadata",
            LmPhase::Codes => "lm_codes",
        }
    }
    fn stage(self) -> Stage {
        match self {
            LmPhase::Simple => Stage::LmSimple,
            LmPhase::Metadata => Stage::LmMetadata,
            LmPhase::Codes => Stage::LmCodes,
        }
    }
}

/// One phase in flight.
struct Running {
    phase: LmPhase,
    fsm: Fsm,
    sampler: Sampler,
    rows: usize,
    /// Real prompt tokens per row.
    prompt_lens: Vec<usize>,
    /// Width of the attention mask so far (padded prompt length + tokens generated).
    width: usize,
    ids: Vec<i64>,
    mask: Vec<i64>,
    positions: Vec<i64>,
    generated: Vec<u32>,
    budget: usize,
    prefilled: bool,
}

/// What one finished phase produced (reported in info and sidecars).
#[derive(Debug, Clone)]
struct PhaseRecord {
    phase: LmPhase,
    prompt_tokens: Vec<usize>,
    tokens: usize,
    budget: usize,
    stopped_by: &'static str,
    text: String,
}

/// The LM part of one generation.
pub struct LmRun {
    tok: Arc<Tokenizer>,
    host: LmHostConfig,
    /// The request as the LM phases see it: simple mode fills caption, lyrics and metadata in.
    request: Request,
    thinking: bool,
    seed: u64,
    draws: u64,
    running: Option<Running>,
    queue: VecDeque<LmPhase>,
    records: Vec<PhaseRecord>,
    /// Phase-1 metadata (parsed CoT), or the user's when phase 1 was skipped.
    metadata: Map<String, Value>,
    /// Simple mode's sample: its parsed fields and lyrics.
    sample: Option<Map<String, Value>>,
    codes: Vec<i64>,
    notes: Vec<String>,
}

impl LmRun {
    /// Checks the package and sets up the phases of `request` (already normalised, seeds resolved).
    pub fn new(package: Arc<Package>, request: Request, thinking: bool, seed: u64) -> Result<Self> {
        if !package_has_lm(&package) {
            let what = ["lm_prefill", "lm_decode"].into_iter().find(|c| !package.has(c)).map_or(
                "the \"lm\" tokenizer or config.lm".to_string(),
                |c| format!("component {c:?}"),
            );
            return Err(missing_lm(&package, &what));
        }
        let host = LmHostConfig::from_package(&package)?;
        let tok = package.lm_tokenizer()?;
        if tok.vocab_size() > host.vocab_size {
            return Err(Error::invalid_argument(format!(
                "model package {}: the LM tokenizer has {} tokens but config.lm.vocab_size is {}",
                package.root().display(),
                tok.vocab_size(),
                host.vocab_size
            )));
        }
        let mut queue = VecDeque::new();
        if request.description.is_some() {
            queue.push_back(LmPhase::Simple);
        }
        let mut run = Self {
            tok,
            host,
            request,
            thinking,
            seed,
            draws: 0,
            running: None,
            queue,
            records: Vec::new(),
            metadata: Map::new(),
            sample: None,
            codes: Vec::new(),
            notes: Vec::new(),
        };
        if run.queue.is_empty() {
            run.plan_after_sample();
        }
        run.start_next()?;
        Ok(run)
    }

    /// Phase 1 unless every metadata value is known (or CoT metadata is off), then phase 2.
    fn plan_after_sample(&mut self) {
        if !self.thinking {
            return;
        }
        let r = &self.request;
        let has_all = r.bpm.is_some() && r.keyscale.is_some() && r.timesignature.is_some() && r.duration.is_some();
        if !has_all && r.lm.use_cot_metas {
            self.queue.push_back(LmPhase::Metadata);
        } else {
            self.metadata = self.user_metadata_map();
        }
        self.queue.push_back(LmPhase::Codes);
    }

    pub fn thinking(&self) -> bool {
        self.thinking
    }

    pub fn is_done(&self) -> bool {
        self.running.is_none()
    }

    /// The user's bpm, duration (int), keyscale and timesignature (official `user_metadata`).
    fn user_metadata_map(&self) -> Map<String, Value> {
        let r = &self.request;
        let mut m = Map::new();
        if let Some(b) = r.bpm {
            m.insert("bpm".into(), b.into());
        }
        if let Some(d) = r.duration {
            m.insert("duration".into(), (d.trunc() as i64).into());
        }
        if let Some(k) = &r.keyscale {
            m.insert("keyscale".into(), k.clone().into());
        }
        if let Some(t) = &r.timesignature {
            m.insert("timesignature".into(), t.clone().into());
        }
        m
    }

    fn prompts(&self, lm_metadata: Option<&Map<String, Value>>) -> Result<crate::prompt::Prompts> {
        let r = &self.request;
        let mut p = r.prompt_json(false);
        p["negative_prompt"] = json!(r.lm.negative_prompt);
        p["use_cot_caption"] = json!(r.lm.use_cot_caption);
        p["use_cot_language"] = json!(r.lm.use_cot_language);
        if let Some(m) = lm_metadata {
            p["lm_metadata"] = Value::Object(m.clone());
        }
        crate::prompt::PromptRequest::from_json(&p.to_string())?.build()
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tok.encode(text, false)
    }

    /// Starts the next queued phase (prompts, FSM, sampler, prefill buffers), if any.
    fn start_next(&mut self) -> Result<()> {
        let Some(phase) = self.queue.pop_front() else {
            self.running = None;
            return Ok(());
        };
        let r = &self.request;
        let cfg_scale = if phase == LmPhase::Simple { 1.0 } else { r.lm.cfg_scale };
        let (prompts, fsm_config): (Vec<String>, FsmConfig) = match phase {
            LmPhase::Simple => {
                let instrumental = if r.instrumental { "true" } else { "false" };
                let query = r.description.as_deref().map(crate::metadata::py_strip).unwrap_or("");
                let query = if query.is_empty() { crate::prompt::DEFAULT_NEGATIVE_PROMPT } else { query };
                let prompt = format!(
                    "<|im_start|>system\n# Instruction\n{INSPIRED_INSTRUCTION}\n\n<|im_end|>\n<|im_start|>user\n\
                     {query}\n\ninstrumental: {instrumental}<|im_end|>\n<|im_start|>assistant\n"
                );
                let mut user = UserMetadata::default();
                if r.vocal_language != "unknown" {
                    user.language = Some(MetaValue::Text(r.vocal_language.clone()));
                }
                // Not in the official create_sample (it takes no duration): a requested duration is
                // injected like any user value, so simple mode can be asked for a length.
                if let Some(d) = r.duration {
                    user.duration = Some(MetaValue::Int(d.trunc() as i64));
                }
                let cfg = FsmConfig {
                    phase: FsmPhase::Understand,
                    skip_genres: false,
                    user_metadata: user,
                    ..FsmConfig::default()
                };
                (vec![prompt], cfg)
            }
            LmPhase::Metadata => {
                let p = self.prompts(None)?;
                let user = self.user_metadata_map();
                let meta = |k: &str| {
                    user.get(k).map(|v| match v {
                        Value::Number(n) => MetaValue::Int(n.as_i64().unwrap_or_default()),
                        other => MetaValue::Text(other.as_str().unwrap_or_default().to_string()),
                    })
                };
                let cfg = FsmConfig {
                    phase: FsmPhase::Cot,
                    stop_at_reasoning: true,
                    skip_caption: !r.lm.use_cot_caption,
                    skip_language: !r.lm.use_cot_language,
                    user_metadata: UserMetadata {
                        bpm: meta("bpm"),
                        duration: meta("duration"),
                        keyscale: meta("keyscale"),
                        timesignature: meta("timesignature"),
                        ..UserMetadata::default()
                    },
                    ..FsmConfig::default()
                };
                (vec![p.lm_phase1, p.lm_phase1_uncond], cfg)
            }
            LmPhase::Codes => {
                let p = self.prompts(Some(&self.metadata))?;
                let cfg =
                    FsmConfig { phase: FsmPhase::Codes, target_duration: r.duration, ..FsmConfig::default() };
                (vec![p.lm_phase2, p.lm_phase2_uncond], cfg)
            }
        };
        let rows = if cfg_scale > 1.0 { 2 } else { 1 };
        let encoded: Vec<Vec<u32>> = prompts[..rows].iter().map(|p| self.encode(p)).collect::<Result<_>>()?;
        let prompt_lens: Vec<usize> = encoded.iter().map(Vec::len).collect();
        let width = *prompt_lens.iter().max().expect("one row at least");
        let budget = self.budget(phase, width)?;

        let mut fsm = Fsm::new(Arc::clone(&self.tok), fsm_config)?;
        fsm.reset_with_prompt(&encoded[0])?;
        let sampler = Sampler::new(SamplerConfig {
            seed: self.seed,
            temperature: r.lm.temperature as f32,
            top_k: r.lm.top_k,
            top_p: r.lm.top_p as f32,
            cfg_scale: cfg_scale as f32,
            vocab_size: self.host.vocab_size,
        })?;
        // Left padding; each row's positions count its own real tokens from 0.
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        let mut positions = Vec::with_capacity(rows * width);
        for row in &encoded {
            let pad = width - row.len();
            ids.extend(std::iter::repeat_n(i64::from(self.host.pad), pad));
            ids.extend(row.iter().map(|&t| i64::from(t)));
            mask.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(1, row.len()));
            positions.extend(std::iter::repeat_n(0, pad));
            positions.extend(0..row.len() as i64);
        }
        self.running = Some(Running {
            phase,
            fsm,
            sampler,
            rows,
            prompt_lens,
            width,
            ids,
            mask,
            positions,
            generated: Vec::new(),
            budget,
            prefilled: false,
        });
        Ok(())
    }

    /// New tokens a phase may write: the official cap, within the LM's positions.
    fn budget(&self, phase: LmPhase, prompt_len: usize) -> Result<usize> {
        let max = self.host.max_positions;
        if prompt_len + MIN_NEW_TOKENS > max {
            let fields = match phase {
                LmPhase::Simple => "request.description",
                _ => "request.caption / request.lyrics",
            };
            return Err(Error::invalid_argument(format!(
                "{fields}: the {} prompt is {prompt_len} tokens, which leaves fewer than {MIN_NEW_TOKENS} of the \
                 LM's {max} positions (config.lm.max_position_embeddings) to generate in; shorten it",
                phase.name()
            )));
        }
        let room = max - prompt_len;
        let cap = match (phase, self.request.duration) {
            (LmPhase::Codes, Some(d)) => {
                let target = (d * 5.0) as usize;
                if target + 1 > room {
                    return Err(Error::invalid_argument(format!(
                        "request.duration: {d} s needs {target} audio codes, but the LM prompt of {prompt_len} \
                         tokens leaves only {room} of its {max} positions; shorten the caption or lyrics"
                    )));
                }
                // nano-vllm: int(clamp(d, 10, 600) · 5) + 500.
                (d.clamp(10.0, 600.0) * 5.0) as usize + 500
            }
            // 600 s is the DiT's limit; one more token lets EOS end it.
            (LmPhase::Codes, None) => MAX_AUDIO_CODES + 1,
            _ => (max - CONTEXT_RESERVE).min(self.request.lm.max_text_tokens.map_or(usize::MAX, |n| n as usize)),
        };
        Ok(cap.min(room))
    }

    /// The next LM call.
    pub fn describe(&self) -> Option<Call> {
        let run = self.running.as_ref()?;
        let b = run.rows as i64;
        let core = |name, shape: Vec<i64>, buffer| Input { name, dtype: DType::I64, shape, source: Source::Core(buffer) };
        let layers = self.host.num_layers;
        let mut outputs = vec![Output { name: "logits", keep_as: None }];
        for i in 0..layers {
            let n = layer(i);
            outputs.push(Output { name: &n.present_key, keep_as: Some(&n.key_k) });
            outputs.push(Output { name: &n.present_value, keep_as: Some(&n.key_v) });
        }
        let (component, inputs) = if !run.prefilled {
            let l = run.width as i64;
            let inputs = vec![
                core("input_ids", vec![b, l], Buffer::LmIds),
                core("attention_mask", vec![b, l], Buffer::LmMask),
                core("position_ids", vec![b, l], Buffer::LmPositions),
            ];
            ("lm_prefill", inputs)
        } else {
            let total = run.width as i64;
            let mut inputs = vec![
                core("input_ids", vec![b, 1], Buffer::LmIds),
                core("attention_mask", vec![b, total], Buffer::LmMask),
                core("position_ids", vec![b, 1], Buffer::LmPositions),
            ];
            let kv_shape = vec![b, self.host.num_kv_heads as i64, total - 1, self.host.head_dim as i64];
            for i in 0..layers {
                let n = layer(i);
                inputs.push(Input { name: &n.past_key, dtype: DType::F32, shape: kv_shape.clone(), source: Source::Host(&n.key_k) });
                inputs.push(Input { name: &n.past_value, dtype: DType::F32, shape: kv_shape.clone(), source: Source::Host(&n.key_v) });
            }
            ("lm_decode", inputs)
        };
        Some(Call {
            component,
            inputs,
            outputs,
            release: Vec::new(),
            stage: run.phase.stage(),
            stage_done: run.generated.len(),
            stage_total: run.budget,
        })
    }

    /// The host keys of the KV cache, to release once the LM is done.
    pub fn cache_keys(&self) -> Vec<&'static str> {
        (0..self.host.num_layers).flat_map(|i| [layer(i).key_k.as_str(), layer(i).key_v.as_str()]).collect()
    }

    pub fn buffer(&self, buffer: Buffer) -> &[u8] {
        let Some(run) = self.running.as_ref() else { return &[] };
        match buffer {
            Buffer::LmIds => bytemuck::cast_slice(&run.ids),
            Buffer::LmMask => bytemuck::cast_slice(&run.mask),
            Buffer::LmPositions => bytemuck::cast_slice(&run.positions),
            _ => &[],
        }
    }

    /// The logits of the pending call: CFG, FSM mask, draw, and the next call's inputs. Returns
    /// true when the LM has finished (every phase done).
    pub fn take_logits(&mut self, out: Submitted) -> Result<bool> {
        let vocab = self.host.vocab_size;
        let eos = self.host.eos;
        let pad = self.host.pad;
        let run = self.running.as_mut().ok_or_else(|| Error::invalid_state("the LM has finished"))?;
        let component = if run.prefilled { "lm_decode" } else { "lm_prefill" };
        super::expect_shape(&out, &[Some(run.rows as i64), Some(vocab as i64)], component)?;
        let logits = super::cast_f32(&out)?;
        let (cond, uncond) = logits.split_at(vocab);
        let uncond = (run.rows == 2).then_some(uncond);
        let fsm = &mut run.fsm;
        // The FSM is only advanced once the draw succeeded, so a rejected submission (NaN logits,
        // say) changes nothing but the look-ahead rules' caches.
        let token = run.sampler.sample_with(cond, uncond, self.draws, |l| fsm.mask_logits(l))?;
        fsm.accept(token)?;
        self.draws += 1;
        run.generated.push(token);
        run.prefilled = true;

        let stopped_by = if token == eos || token == pad {
            Some("eos")
        } else if run.generated.len() >= run.budget {
            Some("token budget")
        } else {
            None
        };
        if let Some(stopped_by) = stopped_by {
            self.finish_phase(stopped_by)?;
            return Ok(self.running.is_none());
        }
        // Next decode step: the token for every row, one more mask column, positions + 1.
        let rows = run.rows;
        run.width += 1;
        run.ids.clear();
        run.ids.resize(rows, i64::from(token));
        let mut mask = Vec::with_capacity(rows * run.width);
        for r in 0..rows {
            mask.extend_from_slice(&run.mask[r * (run.width - 1)..(r + 1) * (run.width - 1)]);
            mask.push(1);
        }
        run.mask = mask;
        run.positions.clear();
        let n = run.generated.len() as i64;
        run.positions.extend(run.prompt_lens.iter().map(|&l| l as i64 - 1 + n));
        Ok(false)
    }

    fn finish_phase(&mut self, stopped_by: &'static str) -> Result<()> {
        let run = self.running.take().expect("a phase is running");
        let text = self.tok.decode(&run.generated, false)?;
        let record = PhaseRecord {
            phase: run.phase,
            prompt_tokens: run.prompt_lens.clone(),
            tokens: run.generated.len(),
            budget: run.budget,
            stopped_by,
            text: text.clone(),
        };
        if stopped_by != "eos" {
            self.notes.push(format!(
                "{}: the LM used its whole budget of {} tokens without writing <|im_end|>",
                run.phase.name(),
                run.budget
            ));
        }
        self.records.push(record);
        match run.phase {
            LmPhase::Simple => {
                self.take_sample(&text);
                self.plan_after_sample();
            }
            LmPhase::Metadata => {
                self.metadata = crate::metadata::parse_lm_output(&text).metadata;
                self.metadata.remove("genres");
                sanitize_metadata(&mut self.metadata, &mut self.notes);
            }
            LmPhase::Codes => {
                let (base, n) = (self.host.code_base, self.host.num_codes.min(crate::request::MAX_CODE as u32 + 1));
                self.codes = run
                    .generated
                    .iter()
                    .filter(|&&t| t >= base && t < base + n)
                    .map(|&t| i64::from(t - base))
                    .take(MAX_AUDIO_CODES)
                    .collect();
                if self.codes.is_empty() {
                    return Err(Error::invalid_state(
                        "lm_codes: the LM wrote no audio codes (EOS came first); try another seed or give a duration",
                    ));
                }
            }
        }
        self.start_next()
    }

    /// Simple mode: the sample's caption, lyrics and metadata become the request's values (the
    /// official simple mode passes them to `generate_music` as the user's).
    fn take_sample(&mut self, text: &str) {
        let mut meta = crate::metadata::parse_lm_output(text).metadata;
        sanitize_metadata(&mut meta, &mut self.notes);
        let lyrics = extract_lyrics(text);
        let r = &mut self.request;
        if let Some(Value::String(c)) = meta.get("caption") {
            r.caption = c.clone();
        }
        r.lyrics = if !lyrics.is_empty() {
            lyrics.clone()
        } else if r.instrumental {
            crate::prompt::INSTRUMENTAL_LYRICS.to_string()
        } else {
            String::new()
        };
        if r.bpm.is_none() {
            r.bpm = meta.get("bpm").and_then(Value::as_i64);
        }
        if r.duration.is_none() {
            r.duration = meta.get("duration").and_then(Value::as_i64).map(|d| d as f64);
        }
        if r.keyscale.is_none() {
            r.keyscale = meta.get("keyscale").and_then(Value::as_str).map(str::to_string);
        }
        if r.timesignature.is_none() {
            r.timesignature = meta.get("timesignature").and_then(Value::as_str).map(str::to_string);
        }
        if let Some(Value::String(l)) = meta.get("language") {
            r.vocal_language = l.clone();
        }
        meta.insert("lyrics".into(), lyrics.into());
        self.sample = Some(meta);
    }

    /// The DiT request: the request with the LM's caption, metadata and codes filled in (spec §5.6).
    pub fn dit_request(&self) -> Request {
        let mut r = self.request.clone();
        r.thinking = Some(false);
        r.description = None;
        let m = &self.metadata;
        if r.lm.use_cot_caption {
            if let Some(Value::String(c)) = m.get("caption") {
                r.caption = c.clone();
            }
        }
        if r.lm.use_cot_language {
            if let Some(Value::String(l)) = m.get("language") {
                r.vocal_language = l.clone();
            }
        }
        if r.bpm.is_none() {
            r.bpm = m.get("bpm").and_then(Value::as_i64);
        }
        if r.keyscale.is_none() {
            r.keyscale = m.get("keyscale").and_then(Value::as_str).map(str::to_string);
        }
        if r.timesignature.is_none() {
            r.timesignature = m.get("timesignature").and_then(Value::as_str).map(str::to_string);
        }
        if r.duration.is_none() {
            r.duration = m.get("duration").and_then(Value::as_i64).map(|d| d as f64);
        }
        if !self.codes.is_empty() {
            r.audio_codes = Some(self.codes.clone());
        }
        r
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// What the LM did and wrote (info and sidecars).
    pub fn summary_json(&self) -> Value {
        let phases: Vec<Value> = self
            .records
            .iter()
            .map(|p| {
                json!({
                    "phase": p.phase.name(),
                    "prompt_tokens": p.prompt_tokens,
                    "tokens": p.tokens,
                    "budget": p.budget,
                    "stopped_by": p.stopped_by,
                    // The codes phase's text is the codes; its count is below.
                    "text": if p.phase == LmPhase::Codes { Value::Null } else { p.text.clone().into() },
                })
            })
            .collect();
        let r = &self.request;
        let mut settings = r.lm.to_json();
        settings["thinking"] = json!(self.thinking);
        settings["description"] = json!(r.description);
        settings["seed"] = json!(self.seed);
        json!({
            "settings": settings,
            "phases": phases,
            "running": self.running.as_ref().map(|r| json!({"phase": r.phase.name(), "tokens": r.generated.len(), "budget": r.budget})),
            "sample": self.sample,
            "metadata": self.metadata,
            "caption": self.dit_request().caption,
            "lyrics": self.dit_request().lyrics,
            "code_count": self.codes.len(),
            "audio_codes": self.codes,
        })
    }
}

/// Drops parsed values the prompt rules refuse (a phase cut short by its budget can leave a
/// half-written one), with a note.
fn sanitize_metadata(meta: &mut Map<String, Value>, notes: &mut Vec<String>) {
    let checks: [(&str, fn(&Value) -> bool); 5] = [
        ("bpm", |v| v.as_i64().is_some_and(|b| (crate::prompt::BPM_RANGE.0..=crate::prompt::BPM_RANGE.1).contains(&b))),
        ("duration", |v| v.as_i64().is_some_and(|d| (10..=600).contains(&d))),
        ("keyscale", |v| v.as_str().is_some_and(crate::prompt::is_valid_keyscale)),
        ("timesignature", |v| v.as_str().is_some_and(crate::prompt::is_valid_timesignature)),
        ("language", |v| v.as_str().is_some_and(|l| crate::prompt::LANGUAGES.contains(&l))),
    ];
    for (key, ok) in checks {
        if let Some(v) = meta.get(key) {
            if !ok(v) {
                notes.push(format!("the LM's {key} value {v} is not valid and was dropped"));
                meta.remove(key);
            }
        }
    }
    // Values the CoT YAML cannot carry (e.g. a caption that is not a string) are dropped too.
    meta.retain(|k, v| matches!(k.as_str(), "bpm" | "duration") || v.is_string());
}

/// The lyrics of a simple-mode (understand) output: the text after `</think>`, without a leading
/// `# Lyric` header line (the official regex, quirks kept) and a trailing `<|im_end|>` (official `_extract_lyrics_from_output`).
pub fn extract_lyrics(text: &str) -> String {
    let Some(pos) = text.find("</think>") else { return String::new() };
    let mut after = crate::metadata::py_strip(&text[pos + "</think>".len()..]);
    if let Some(rest) = after.strip_prefix('#') {
        // `^#\s*Lyri[c|cs]?\s*\n`, case-insensitive.
        let rest = rest.trim_start_matches(crate::metadata::py_space);
        if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case("lyri") {
            let mut tail = &rest[4..];
            if let Some(c) = tail.chars().next().filter(|c| matches!(c, 'c' | 'C' | '|' | 's' | 'S')) {
                tail = &tail[c.len_utf8()..];
            }
            let ws_end = tail.find(|c: char| !crate::metadata::py_space(c)).unwrap_or(tail.len());
            if let Some(nl) = tail[..ws_end].rfind('\n') {
                after = &tail[nl + 1..];
            }
        }
    }
    let trimmed = after.trim_end_matches(crate::metadata::py_space);
    let trimmed = trimmed.strip_suffix("<|im_end|>").unwrap_or(trimmed);
    crate::metadata::py_strip(trimmed).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lyrics_follow_the_official_extraction() {
        assert_eq!(extract_lyrics("<think>\nbpm: 90\n</think>\n# Lyric\n[Verse]\nla la\n<|im_end|>"), "[Verse]\nla la");
        // The official regex `^#\s*Lyri[c|cs]?\s*\n` does not match "# lyrics" (one class char, then
        // blanks): kept as written (checked against Python's `re`).
        assert_eq!(extract_lyrics("<think>\n</think>\n\n# lyrics  \nhey<|im_end|>\n"), "# lyrics  \nhey");
        assert_eq!(extract_lyrics("<think>\n</think>#Lyri \n x"), "x");
        assert_eq!(extract_lyrics("<think>\n</think># Lyris\nx"), "x");
        assert_eq!(extract_lyrics("<think>\n</think>[Chorus] yes"), "[Chorus] yes");
        assert_eq!(extract_lyrics("no think block"), "");
    }

    #[test]
    fn layer_names_are_the_contract_names() {
        assert_eq!(layer(0).past_key, "past_key_0");
        assert_eq!(layer(27).present_value, "present_value_27");
    }
}
