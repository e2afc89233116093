//! The generation request: one typed schema for every host (`ace_request_normalize`).
//!
//! A request is a JSON object. Normalising it applies the official example files' aliases
//! (`language`, `seed`, `think`), checks every key's type and range (each error names the field),
//! rejects unknown keys and names the official keys this runtime does not support yet, fills the
//! defaults of the package's model kind, and writes numbers in one form (`12` and `12.0` are the
//! same duration), so the same song gets the same track id whatever JSON writer a host uses.
//!
//! Values the model kind ignores (guidance and step count on turbo, say) are not errors: they are
//! dropped from the normalised request and reported as `notes`, so they can neither change the
//! audio nor the track id.

use serde_json::{json, Map, Value};

use crate::context::{Method, ModelKind};
use crate::error::{Error, Result};
use crate::json::{kind as json_kind, parse_object as parse_object_value};
use crate::frames;

/// Largest batch a request may ask for (each item is a full latent sequence).
pub const MAX_REQUEST_BATCH: usize = 64;
/// Base/SFT default steps (`generate_audio` of the base model).
pub const DEFAULT_BASE_STEPS: usize = 30;
/// Default duration without LM codes (seconds).
pub const DEFAULT_DURATION_S: f64 = 30.0;
/// LM codes are 5 Hz: a 600 s track has 3000.
pub const MAX_AUDIO_CODES: usize = (frames::MAX_FRAMES / 5) as usize;
/// Largest FSQ code index (spec §5.3): larger values are clamped.
pub const MAX_CODE: i64 = 63_999;
/// Output formats a host may be asked for (`audio_format`).
pub const AUDIO_FORMATS: [&str; 5] = ["flac", "wav16", "wav24", "wav32f", "mp3"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuidanceType {
    Apg,
    Cfg,
}

impl GuidanceType {
    pub fn name(self) -> &'static str {
        match self {
            GuidanceType::Apg => "apg",
            GuidanceType::Cfg => "cfg",
        }
    }
}

/// A normalised request: every field present, every default filled, values in their one form.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub caption: String,
    pub lyrics: String,
    pub instrumental: bool,
    pub vocal_language: String,
    pub bpm: Option<i64>,
    pub keyscale: Option<String>,
    pub timesignature: Option<String>,
    /// Seconds; `None` with LM codes (their count decides the length) or when not given.
    pub duration: Option<f64>,
    /// One entry per item after normalisation is not required: missing seeds are filled at
    /// generation time (see `generation`), negative ones mean "random".
    pub seeds: Vec<i64>,
    pub batch_size: usize,
    pub shift: Option<f64>,
    pub timesteps: Option<Vec<f64>>,
    pub infer_method: Method,
    /// Base/SFT only; `None` on turbo.
    pub inference_steps: Option<usize>,
    /// Base/SFT only (guidance runs when > 1); `None` on turbo.
    pub guidance: Option<Guidance>,
    /// LM audio codes, clamped to 0..=63999.
    pub audio_codes: Option<Vec<i64>>,
    pub noise_mode: String,
    pub audio_format: Option<String>,
    /// Run the 5 Hz LM (metadata, then audio codes). `None`: whatever the package allows (the
    /// official default is on; a package without an LM runs the DiT alone).
    pub thinking: Option<bool>,
    /// Simple mode: a one-line idea the LM turns into caption, lyrics and metadata first.
    pub description: Option<String>,
    /// Latent frames per VAE decode window (the official `ACESTEP_VAE_DECODE_CHUNK_SIZE`; `None`: the
    /// official 512): a smaller window needs less memory and decodes the same audio up to float
    /// rounding (`tiling::MIN_REQUEST_CHUNK`); not part of the track id.
    pub vae_decode_chunk: Option<u32>,
    /// LM sampling and CoT settings (official `GenerationParams` names, `lm_` prefix).
    pub lm: LmParams,
}

/// The LM's settings; the defaults are the official `GenerationParams` ones (spec §5.5).
#[derive(Debug, Clone, PartialEq)]
pub struct LmParams {
    pub temperature: f64,
    /// CFG of the cond and uncond sequences; 1 runs the cond sequence alone.
    pub cfg_scale: f64,
    /// 1 disables top-p (the official code also treats 0 and None as "off").
    pub top_p: f64,
    /// 0 disables top-k.
    pub top_k: u32,
    pub negative_prompt: String,
    pub use_cot_metas: bool,
    pub use_cot_caption: bool,
    pub use_cot_language: bool,
    /// Not an official key: at most this many tokens for each text phase (simple mode's sample,
    /// the CoT metadata); `None` = the official budget (the LM's context − 64).
    pub max_text_tokens: Option<u32>,
}

impl Default for LmParams {
    fn default() -> Self {
        Self {
            temperature: 0.85,
            cfg_scale: 2.0,
            top_p: 0.9,
            top_k: 0,
            negative_prompt: crate::prompt::DEFAULT_NEGATIVE_PROMPT.to_string(),
            use_cot_metas: true,
            use_cot_caption: true,
            use_cot_language: true,
            max_text_tokens: None,
        }
    }
}

impl LmParams {
    pub fn to_json(&self) -> Value {
        json!({
            "lm_temperature": self.temperature,
            "lm_cfg_scale": self.cfg_scale,
            "lm_top_p": self.top_p,
            "lm_top_k": self.top_k,
            "lm_negative_prompt": self.negative_prompt,
            "use_cot_metas": self.use_cot_metas,
            "use_cot_caption": self.use_cot_caption,
            "use_cot_language": self.use_cot_language,
            "lm_max_text_tokens": self.max_text_tokens,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    pub scale: f64,
    pub kind: GuidanceType,
    pub interval_start: f64,
    pub interval_end: f64,
}

/// The result of [`normalize`]: the request and what was ignored or adjusted on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub request: Request,
    pub notes: Vec<String>,
    /// The LM settings the request gives (keys of [`LM_SETTING_KEYS`]): a run without the LM
    /// notes them as ignored.
    pub lm_keys_given: Vec<&'static str>,
}

/// The keys that only steer the 5 Hz LM.
pub const LM_SETTING_KEYS: [&str; 9] = [
    "lm_temperature", "lm_cfg_scale", "lm_top_p", "lm_top_k", "lm_negative_prompt", "use_cot_metas",
    "use_cot_caption", "use_cot_language", "lm_max_text_tokens",
];

/// Keys of the official request files and `GenerationParams` that need parts of ACE-Step this
/// runtime does not run yet (audio inputs, other tasks).
const NOT_SUPPORTED_YET: [(&str, &str); 8] = [
    ("reference_audio", "audio inputs are not supported yet"),
    ("src_audio", "audio inputs are not supported yet"),
    ("repainting_start", "repainting is not supported yet"),
    ("repainting_end", "repainting is not supported yet"),
    ("audio_cover_strength", "cover tasks with source audio are not supported yet"),
    ("instruction", "custom DiT instructions are not supported yet"),
    ("use_adg", "ADG guidance is not supported yet"),
    ("use_random_seed", "give \"seeds\" (negative = random) instead"),
];

/// Alias → canonical key (the official example files use the aliases).
const ALIASES: [(&str, &str); 3] = [("language", "vocal_language"), ("seed", "seeds"), ("think", "thinking")];

pub const KEYS: [&str; 34] = [
    "caption", "lyrics", "instrumental", "vocal_language", "bpm", "keyscale", "timesignature", "duration",
    "seeds", "batch_size", "shift", "timesteps", "infer_method", "inference_steps", "guidance_scale",
    "guidance_type", "cfg_interval_start", "cfg_interval_end", "audio_codes", "noise_mode", "audio_format",
    "thinking", "task_type", "description", "lm_temperature", "lm_cfg_scale", "lm_top_p", "lm_top_k",
    "lm_negative_prompt", "use_cot_metas", "use_cot_caption", "use_cot_language", "lm_max_text_tokens",
    "vae_decode_chunk",
];

/// Normalises a request for a package of the given kind (see the module documentation).
pub fn normalize(text: &str, kind: ModelKind) -> Result<Normalized> {
    let map = parse_object_value(text, "request")?;
    normalize_map(map, kind)
}

pub fn normalize_map(mut map: Map<String, Value>, kind: ModelKind) -> Result<Normalized> {
    let mut notes = Vec::new();
    resolve_aliases(&mut map, &ALIASES)?;
    for key in map.keys() {
        if let Some((_, why)) = NOT_SUPPORTED_YET.iter().find(|(k, _)| k == key) {
            return Err(field_error(key, format!("not supported yet: {key} ({why})")));
        }
        if !KEYS.contains(&key.as_str()) {
            if crate::request_v1::KEYS.contains(&key.as_str()) {
                return Err(field_error(
                    key,
                    format!("an ACE-Step v1 setting; this model package is ACE-Step 1.5, which takes: {}", KEYS.join(", ")),
                ));
            }
            return Err(field_error(key, format!("unknown key (known: {})", KEYS.join(", "))));
        }
    }
    let f = Fields(&map);

    let thinking = match f.get("thinking") {
        None | Some(Value::Null) => None,
        Some(_) => Some(f.bool_or("thinking", true)?),
    };
    let lm = f.lm_params()?;
    let lm_keys_given = LM_SETTING_KEYS.into_iter().filter(|k| f.get(k).is_some_and(|v| !v.is_null())).collect();
    let description = f.opt_str("description")?.map(str::to_string);
    let audio_codes = f.audio_codes(&mut notes)?;
    if audio_codes.is_some() && (thinking == Some(true) || description.is_some()) {
        let key = if description.is_some() { "description" } else { "thinking" };
        return Err(field_error(key, "cannot be combined with audio_codes (the LM writes the codes)"));
    }
    match f.opt_str("task_type")? {
        None | Some("text2music") => {}
        Some("cover") if audio_codes.is_some() => {}
        Some("cover") => return Err(field_error("task_type", "\"cover\" needs audio_codes (source audio is not supported yet)")),
        Some(other) => return Err(field_error("task_type", format!("not supported yet: task_type {other:?} (supported: text2music, cover with audio_codes)"))),
    }

    let batch_size = f.uint_in("batch_size", 1, MAX_REQUEST_BATCH as u64)?.unwrap_or(1) as usize;
    let seeds = f.seeds()?;
    if seeds.len() > batch_size {
        return Err(field_error(
            "seeds",
            format!("{} seeds given for batch_size {batch_size}", seeds.len()),
        ));
    }
    let duration = f.finite("duration")?;
    if let Some(d) = duration {
        frames::frames_from_duration(d).map_err(|e| field_error("duration", e.message))?;
    }
    let duration = match (&audio_codes, duration) {
        (Some(codes), Some(d)) => {
            notes.push(format!(
                "duration {d} s is ignored for the length: {} audio codes give {} s (the LM codes decide it)",
                codes.len(),
                codes.len() as f64 / 5.0
            ));
            Some(d)
        }
        (_, d) => d,
    };

    let bpm = match f.get("bpm") {
        None | Some(Value::Null) => None,
        Some(v) => Some(integral(v).ok_or_else(|| field_error("bpm", format!("must be an integer, got {v}")))?),
    };
    if let Some(b) = bpm {
        let (lo, hi) = crate::prompt::BPM_RANGE;
        if !(lo..=hi).contains(&b) {
            return Err(field_error("bpm", format!("must be in {lo}..={hi}, got {b}")));
        }
    }
    let timesignature = match f.get("timesignature") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => match integral(v) {
            Some(n) => Some(n.to_string()),
            None => return Err(field_error("timesignature", format!("must be a string such as \"4\" or \"3/4\", got {v}"))),
        },
    };
    let shift = f.finite("shift")?;
    if let Some(s) = shift {
        if s <= 0.0 {
            return Err(field_error("shift", format!("must be > 0, got {s}")));
        }
    }
    let timesteps = match f.get("timesteps") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64()
                        .filter(|t| t.is_finite())
                        .ok_or_else(|| field_error(&format!("timesteps[{i}]"), format!("must be a number, got {v}")))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(v) => return Err(field_error("timesteps", format!("must be a list of numbers, got {}", json_kind(v)))),
    };
    let infer_method = match f.opt_str("infer_method")?.unwrap_or("ode") {
        "ode" => Method::Ode,
        "sde" => Method::Sde,
        other => return Err(field_error("infer_method", format!("must be \"ode\" or \"sde\", got {other:?}"))),
    };
    let noise_mode = match f.opt_str("noise_mode")?.unwrap_or("torch_cpu") {
        m @ ("torch_cpu" | "torch_cuda") => m.to_string(),
        other => return Err(field_error("noise_mode", format!("must be \"torch_cpu\" or \"torch_cuda\", got {other:?}"))),
    };
    let audio_format = match f.opt_str("audio_format")? {
        None => None,
        Some(fmt) => {
            let fmt = if fmt == "wav" { "wav16" } else { fmt };
            if !AUDIO_FORMATS.contains(&fmt) {
                return Err(field_error("audio_format", format!("must be one of {}, got {fmt:?}", AUDIO_FORMATS.join(", "))));
            }
            Some(fmt.to_string())
        }
    };

    // Steps and guidance: base/SFT use them, turbo ignores them (as the official turbo model does).
    let steps = f.uint_in("inference_steps", 1, crate::limits::MAX_STEPS as u64)?.map(|n| n as usize);
    let scale = f.finite("guidance_scale")?;
    if let Some(g) = scale {
        if g < 0.0 {
            return Err(field_error("guidance_scale", format!("must be >= 0, got {g}")));
        }
    }
    let guidance_type = match f.opt_str("guidance_type")? {
        None => None,
        Some("apg") => Some(GuidanceType::Apg),
        Some("cfg") => Some(GuidanceType::Cfg),
        Some(other) => return Err(field_error("guidance_type", format!("must be \"apg\" or \"cfg\", got {other:?}"))),
    };
    let start = f.finite("cfg_interval_start")?;
    let end = f.finite("cfg_interval_end")?;
    for (name, v) in [("cfg_interval_start", start), ("cfg_interval_end", end)] {
        if let Some(v) = v {
            if !(0.0..=1.0).contains(&v) {
                return Err(field_error(name, format!("must be in [0, 1], got {v}")));
            }
        }
    }
    let (inference_steps, guidance) = if kind == ModelKind::Turbo {
        let mut ignored = Vec::new();
        if let Some(n) = steps {
            ignored.push(format!("inference_steps={n}"));
        }
        if let Some(g) = scale.filter(|&g| g != 1.0) {
            ignored.push(format!("guidance_scale={g}"));
        }
        if let Some(t) = guidance_type {
            ignored.push(format!("guidance_type={}", t.name()));
        }
        for (name, v) in [("cfg_interval_start", start), ("cfg_interval_end", end)] {
            if let Some(v) = v {
                ignored.push(format!("{name}={v}"));
            }
        }
        if !ignored.is_empty() {
            notes.push(format!(
                "{} ignored: the turbo model runs a fixed 8-step schedule without guidance",
                ignored.join(", ")
            ));
        }
        (None, None)
    } else {
        let (start, end) = (start.unwrap_or(0.0), end.unwrap_or(1.0));
        if start > end {
            return Err(field_error("cfg_interval_start", format!("{start} is after cfg_interval_end {end}")));
        }
        let guidance = Guidance {
            scale: scale.unwrap_or(7.0),
            kind: guidance_type.unwrap_or(GuidanceType::Apg),
            interval_start: start,
            interval_end: end,
        };
        (Some(steps.unwrap_or(DEFAULT_BASE_STEPS)), Some(guidance))
    };

    let request = Request {
        caption: f.string_or("caption", "")?,
        lyrics: f.string_or("lyrics", "")?,
        instrumental: f.bool_or("instrumental", false)?,
        vocal_language: f.string_or("vocal_language", "unknown")?,
        bpm,
        keyscale: f.opt_str("keyscale")?.map(str::to_string),
        timesignature,
        duration,
        seeds,
        batch_size,
        shift,
        timesteps,
        infer_method,
        inference_steps,
        guidance,
        audio_codes,
        noise_mode,
        audio_format,
        thinking,
        description,
        vae_decode_chunk: f
            .uint_in("vae_decode_chunk", crate::tiling::MIN_REQUEST_CHUNK as u64, crate::frames::MAX_FRAMES as u64)?
            .map(|n| n as u32),
        lm,
    };
    // The prompt rules (language list, key scale and time signature forms) live in `prompt`.
    crate::prompt::PromptRequest::from_json(&request.prompt_json(false).to_string())?;
    Ok(Normalized { request, notes, lm_keys_given })
}

pub(crate) fn field_error(field: &str, message: impl std::fmt::Display) -> Error {
    Error::invalid_argument(format!("request.{field}: {message}"))
}

/// An integer, also when written as an integral float (`120.0`).
pub(crate) fn integral(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
}

/// Renames each alias to its key (the alias and the key together are an error).
pub(crate) fn resolve_aliases(map: &mut Map<String, Value>, aliases: &[(&str, &str)]) -> Result<()> {
    for &(alias, key) in aliases {
        if let Some(v) = map.remove(alias) {
            if map.contains_key(key) {
                return Err(field_error(alias, format!("give either \"{alias}\" or \"{key}\", not both")));
            }
            map.insert(key.to_string(), v);
        }
    }
    Ok(())
}

/// Typed access to a request's keys, each error naming the field (shared by both model families).
pub(crate) struct Fields<'a>(pub(crate) &'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub(crate) fn string_or(&self, key: &str, default: &str) -> Result<String> {
        Ok(self.opt_str(key)?.unwrap_or(default).to_string())
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(field_error(key, format!("must be a string, got {}", json_kind(v)))),
        }
    }

    /// A string from `allowed` (`default` when absent).
    pub(crate) fn choice(&self, key: &str, default: &str, allowed: &[&str]) -> Result<String> {
        let s = self.string_or(key, default)?;
        if !allowed.contains(&s.as_str()) {
            return Err(field_error(key, format!("must be one of {}, got {s:?}", allowed.join(", "))));
        }
        Ok(s)
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(field_error(key, format!("must be true or false, got {v}"))),
        }
    }

    fn finite(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Number(_)) => {
                v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| field_error(key, format!("must be a finite number, got {v}")))
            }
            Some(v) => Err(field_error(key, format!("must be a number, got {}", json_kind(v)))),
        }
    }

    /// A finite number in `[lo, hi]` (`default` when absent).
    pub(crate) fn number_in(&self, key: &str, default: f64, lo: f64, hi: f64) -> Result<f64> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
                _ => Err(field_error(key, format!("must be a number in [{lo}, {hi}], got {v}"))),
            },
        }
    }

    pub(crate) fn uint_in(&self, key: &str, lo: u64, hi: u64) -> Result<Option<u64>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match integral(v) {
                Some(n) if n >= lo as i64 && n <= hi as i64 => Ok(Some(n as u64)),
                _ => Err(field_error(key, format!("must be an integer in {lo}..={hi}, got {v}"))),
            },
        }
    }

    /// The LM settings, each checked against the range the sampler accepts.
    fn lm_params(&self) -> Result<LmParams> {
        let d = LmParams::default();
        let temperature = self.finite("lm_temperature")?.unwrap_or(d.temperature);
        if !(0.0..=100.0).contains(&temperature) {
            return Err(field_error("lm_temperature", format!("must be in [0, 100] (0 = greedy), got {temperature}")));
        }
        let cfg_scale = self.finite("lm_cfg_scale")?.unwrap_or(d.cfg_scale);
        if !(1.0..=100.0).contains(&cfg_scale) {
            return Err(field_error("lm_cfg_scale", format!("must be in [1, 100] (1 = no CFG), got {cfg_scale}")));
        }
        let top_p = self.finite("lm_top_p")?.unwrap_or(d.top_p);
        if !(0.0..=1.0).contains(&top_p) {
            return Err(field_error("lm_top_p", format!("must be in [0, 1] (0 or 1 = off), got {top_p}")));
        }
        // The official code treats 0 (and None) as "no top-p".
        let top_p = if top_p == 0.0 { 1.0 } else { top_p };
        let top_k = self.uint_in("lm_top_k", 0, u64::from(u32::MAX))?.map_or(d.top_k, |k| k as u32);
        Ok(LmParams {
            temperature,
            cfg_scale,
            top_p,
            top_k,
            negative_prompt: self.string_or("lm_negative_prompt", &d.negative_prompt)?,
            use_cot_metas: self.bool_or("use_cot_metas", d.use_cot_metas)?,
            use_cot_caption: self.bool_or("use_cot_caption", d.use_cot_caption)?,
            use_cot_language: self.bool_or("use_cot_language", d.use_cot_language)?,
            max_text_tokens: self.uint_in("lm_max_text_tokens", 1, 1 << 20)?.map(|n| n as u32),
        })
    }

    pub(crate) fn seeds(&self) -> Result<Vec<i64>> {
        let one = |v: &Value, at: &str| -> Result<i64> {
            integral(v).ok_or_else(|| field_error(at, format!("must be an integer (negative = random), got {v}")))
        };
        match self.get("seeds") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| one(v, &format!("seeds[{i}]"))).collect()
            }
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<i64>().map_err(|_| field_error("seeds", format!("{s:?} is not an integer"))))
                .collect(),
            Some(v) => Ok(vec![one(v, "seeds")?]),
        }
    }

    /// LM codes: a list of integers, a string of `<|audio_code_N|>` tokens, or comma-separated
    /// integers. Values outside 0..=63999 are clamped (as the official handler does), with a note.
    fn audio_codes(&self, notes: &mut Vec<String>) -> Result<Option<Vec<i64>>> {
        let codes: Vec<i64> = match self.get("audio_codes") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| integral(v).ok_or_else(|| field_error(&format!("audio_codes[{i}]"), format!("must be an integer, got {v}"))))
                .collect::<Result<_>>()?,
            Some(Value::String(s)) => parse_code_string(s)?,
            Some(v) => {
                return Err(field_error("audio_codes", format!("must be a list of integers or a string of <|audio_code_N|> tokens, got {}", json_kind(v))))
            }
        };
        if codes.is_empty() {
            return Err(field_error("audio_codes", "is empty"));
        }
        if codes.len() > MAX_AUDIO_CODES {
            return Err(field_error("audio_codes", format!("has {} codes; at most {MAX_AUDIO_CODES} (600 s)", codes.len())));
        }
        let clamped: Vec<i64> = codes.iter().map(|&c| c.clamp(0, MAX_CODE)).collect();
        let changed = codes.iter().zip(&clamped).filter(|(a, b)| a != b).count();
        if changed > 0 {
            notes.push(format!("audio_codes: {changed} value(s) outside 0..={MAX_CODE} were clamped"));
        }
        Ok(Some(clamped))
    }
}

fn parse_code_string(s: &str) -> Result<Vec<i64>> {
    const OPEN: &str = "<|audio_code_";
    if s.contains(OPEN) {
        let mut out = Vec::new();
        for piece in s.split(OPEN).skip(1) {
            let digits = piece.split("|>").next().unwrap_or("");
            out.push(digits.parse::<i64>().map_err(|_| {
                field_error("audio_codes", format!("{OPEN}{digits}|> is not a valid audio code token"))
            })?);
        }
        return Ok(out);
    }
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<i64>().map_err(|_| {
                field_error("audio_codes", format!("expected <|audio_code_N|> tokens or comma-separated integers, got {p:?}"))
            })
        })
        .collect()
}

impl Request {
    /// The request a prompt is built from (`ace_build_prompts`' JSON).
    pub fn prompt_json(&self, has_codes: bool) -> Value {
        let mut m = Map::new();
        m.insert("caption".into(), self.caption.clone().into());
        m.insert("lyrics".into(), self.lyrics.clone().into());
        m.insert("instrumental".into(), self.instrumental.into());
        m.insert("language".into(), self.vocal_language.clone().into());
        m.insert("has_codes".into(), has_codes.into());
        if let Some(b) = self.bpm {
            m.insert("bpm".into(), b.into());
        }
        if let Some(k) = &self.keyscale {
            m.insert("keyscale".into(), k.clone().into());
        }
        if let Some(t) = &self.timesignature {
            m.insert("timesignature".into(), t.clone().into());
        }
        if let Some(d) = self.duration {
            m.insert("duration".into(), d.into());
        }
        Value::Object(m)
    }

    /// The normalised request as JSON: every key, numbers as floats or integers by field (never
    /// both), defaults filled; ignored fields are `null`.
    pub fn to_json(&self) -> Value {
        let g = self.guidance;
        json!({
            "caption": self.caption,
            "lyrics": self.lyrics,
            "instrumental": self.instrumental,
            "vocal_language": self.vocal_language,
            "bpm": self.bpm,
            "keyscale": self.keyscale,
            "timesignature": self.timesignature,
            "duration": self.duration,
            "seeds": self.seeds,
            "batch_size": self.batch_size,
            "shift": self.shift,
            "timesteps": self.timesteps,
            "infer_method": self.infer_method.name(),
            "inference_steps": self.inference_steps,
            "guidance_scale": g.map(|g| g.scale),
            "guidance_type": g.map(|g| g.kind.name()),
            "cfg_interval_start": g.map(|g| g.interval_start),
            "cfg_interval_end": g.map(|g| g.interval_end),
            "audio_codes": self.audio_codes,
            "noise_mode": self.noise_mode,
            "audio_format": self.audio_format,
            "thinking": self.thinking,
            "description": self.description,
            "lm_temperature": self.lm.temperature,
            "lm_cfg_scale": self.lm.cfg_scale,
            "lm_top_p": self.lm.top_p,
            "lm_top_k": self.lm.top_k,
            "lm_negative_prompt": self.lm.negative_prompt,
            "use_cot_metas": self.lm.use_cot_metas,
            "use_cot_caption": self.lm.use_cot_caption,
            "use_cot_language": self.lm.use_cot_language,
            "lm_max_text_tokens": self.lm.max_text_tokens,
            "vae_decode_chunk": self.vae_decode_chunk,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> Result<Normalized> {
        normalize(text, ModelKind::Turbo)
    }

    #[test]
    fn int_and_float_forms_normalise_alike() {
        let a = norm(r#"{"duration": 12, "bpm": 120, "seed": 3}"#).unwrap();
        let b = norm(r#"{"duration": 12.0, "bpm": 120.0, "seeds": [3.0]}"#).unwrap();
        assert_eq!(a.request.to_json().to_string(), b.request.to_json().to_string());
        assert_eq!(a.request.to_json()["duration"], json!(12.0));
    }

    #[test]
    fn vae_decode_chunk_defaults_to_the_official_512_and_has_a_floor() {
        assert_eq!(norm(r#"{"caption": "x"}"#).unwrap().request.vae_decode_chunk, None); // the driver's 512
        assert_eq!(norm(r#"{"vae_decode_chunk": 128.0}"#).unwrap().request.vae_decode_chunk, Some(128));
        assert_eq!(norm(r#"{"vae_decode_chunk": 128}"#).unwrap().request.to_json()["vae_decode_chunk"], json!(128));
        for bad in ["127", "0", "-1", "15001", "200.5", "\"256\""] {
            let e = norm(&format!(r#"{{"vae_decode_chunk": {bad}}}"#)).unwrap_err();
            assert!(e.message.starts_with("request.vae_decode_chunk: must be an integer in 128..=15000"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn every_error_names_its_field() {
        for (text, field) in [
            (r#"{"bpm": "fast"}"#, "request.bpm"),
            (r#"{"bpm": 12.5}"#, "request.bpm"),
            (r#"{"duration": 5}"#, "request.duration"),
            (r#"{"seeds": [1, "x"]}"#, "request.seeds[1]"),
            (r#"{"batch_size": 0}"#, "request.batch_size"),
            (r#"{"batch_size": 1000000000000}"#, "request.batch_size"),
            (r#"{"inference_steps": 1000000000000}"#, "request.inference_steps"),
            (r#"{"audio_codes": "hello"}"#, "request.audio_codes"),
            (r#"{"timesteps": [0.5, null]}"#, "request.timesteps[1]"),
            (r#"{"description": 3}"#, "request.description"),
            (r#"{"lm_temperature": -1}"#, "request.lm_temperature"),
            (r#"{"lm_cfg_scale": 0.5}"#, "request.lm_cfg_scale"),
            (r#"{"lm_top_p": 1.5}"#, "request.lm_top_p"),
            (r#"{"lm_top_k": -3}"#, "request.lm_top_k"),
            (r#"{"thinking": "yes"}"#, "request.thinking"),
            (r#"{"thinking": true, "audio_codes": [1]}"#, "request.thinking"),
            (r#"{"src_audio": "a.wav"}"#, "not supported yet: src_audio"),
            (r#"{"colour": 1}"#, "request.colour: unknown key"),
            (r#"{"seed": 1, "seeds": [1]}"#, "request.seed"),
            (r#"{"caption": 1}"#, "request.caption"),
            (r#"{"task_type": "repaint"}"#, "not supported yet: task_type"),
        ] {
            let err = norm(text).unwrap_err();
            assert!(err.message.contains(field), "{text}: {}", err.message);
        }
    }

    #[test]
    fn arrays_and_duplicate_keys_are_not_requests() {
        assert!(norm(r#"["cap", "lyr"]"#).unwrap_err().message.contains("expected a JSON object"));
        assert!(norm(r#"{"bpm": 90, "bpm": 100}"#).unwrap_err().message.contains("duplicate key"));
    }

    #[test]
    fn turbo_ignores_steps_and_guidance_with_a_note() {
        let n = norm(r#"{"inference_steps": 20, "guidance_scale": 3, "guidance_type": "cfg"}"#).unwrap();
        assert_eq!(n.request, norm("{}").unwrap().request);
        assert_eq!(n.notes.len(), 1, "{:?}", n.notes);
        assert!(n.notes[0].contains("inference_steps=20") && n.notes[0].contains("guidance_scale=3"));
        let base = normalize(r#"{"inference_steps": 20}"#, ModelKind::Base).unwrap();
        assert_eq!(base.request.inference_steps, Some(20));
        assert_eq!(base.request.guidance.unwrap().scale, 7.0);
    }

    #[test]
    fn codes_parse_from_every_form_and_clamp() {
        let a = norm(r#"{"audio_codes": "<|audio_code_5|><|audio_code_70000|>"}"#).unwrap();
        let b = norm(r#"{"audio_codes": "5, 70000"}"#).unwrap();
        let c = norm(r#"{"audio_codes": [5, 63999]}"#).unwrap();
        assert_eq!(a.request.audio_codes, Some(vec![5, MAX_CODE]));
        assert_eq!(a.request, b.request);
        assert_eq!(a.request, c.request);
        assert!(a.notes[0].contains("clamped"));
    }

    #[test]
    fn official_example_keys_are_accepted() {
        let n = norm(r#"{"think": true, "caption": "c", "lyrics": "l", "bpm": 90, "duration": 60,
                         "keyscale": "C major", "language": "en", "timesignature": "4"}"#)
        .unwrap();
        assert_eq!(n.request.vocal_language, "en");
        assert_eq!(n.request.thinking, Some(true));
        assert!(n.notes.is_empty(), "{:?}", n.notes);
    }
}
