//! The generation request of the ACE-Step v1 family (spec `ace_step_v1.md` §8): the same JSON
//! conventions as [`crate::request`] (every error names its field, unknown keys are errors, defaults
//! filled, numbers in one form), with v1's own keys and the defaults of the official
//! `ACEStepPipeline.__call__`. The official parameter names are accepted as aliases (`prompt`,
//! `audio_duration`, `infer_step`, `manual_seeds`).
//!
//! Kept apart from `request.rs` (the 1.5 schema) so the two families evolve without touching each
//! other; the driver picks the schema by the package's family.

use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::frames;
use crate::json::parse_object;
use crate::request::{field_error, resolve_aliases, Fields};

/// Official defaults (`__call__`, spec §8). The UI differs only in `use_erg_lyric` (false) and
/// a random duration.
const DEFAULT_STEPS: u64 = 60;
const DEFAULT_GUIDANCE_SCALE: f64 = 15.0;
const DEFAULT_OMEGA_SCALE: f64 = 10.0;
const DEFAULT_GUIDANCE_INTERVAL: f64 = 0.5;
const DEFAULT_MIN_GUIDANCE_SCALE: f64 = 3.0;
const DEFAULT_DURATION_S: f64 = 60.0;
/// Largest batch of one request.
const MAX_BATCH: u64 = 16;

const SCHEDULERS: [&str; 3] = ["euler", "heun", "pingpong"];
const CFG_TYPES: [&str; 3] = ["apg", "cfg", "cfg_star"];

const ALIASES: [(&str, &str); 7] = [
    ("prompt", "caption"),
    ("language", "vocal_language"),
    ("guidance_type", "cfg_type"),
    ("audio_duration", "duration"),
    ("infer_step", "inference_steps"),
    ("manual_seeds", "seeds"),
    ("seed", "seeds"),
];

pub const KEYS: [&str; 24] = [
    "caption",
    "lyrics",
    "vocal_language",
    "duration",
    "inference_steps",
    "guidance_scale",
    "scheduler_type",
    "cfg_type",
    "omega_scale",
    "guidance_interval",
    "guidance_interval_decay",
    "min_guidance_scale",
    "use_erg_tag",
    "use_erg_lyric",
    "use_erg_diffusion",
    "guidance_scale_text",
    "guidance_scale_lyric",
    "zero_steps",
    "use_zero_init",
    "seeds",
    "batch_size",
    "audio_format",
    "noise_mode",
    "overlapped_decode",
];

/// Official keys of tasks this runtime does not run (yet): an error that says so, not "unknown".
const NOT_SUPPORTED: [(&str, &str); 6] = [
    ("oss_steps", "custom OSS step lists"),
    ("task", "retake/repaint/extend/edit/audio2audio"),
    ("ref_audio_input", "audio2audio"),
    ("src_audio_path", "repaint/extend/edit"),
    ("lora_name_or_path", "LoRA adapters"),
    ("retake_seeds", "retake"),
];

/// A normalised v1 request: every field present.
#[derive(Debug, Clone, PartialEq)]
pub struct V1Request {
    pub caption: String,
    pub lyrics: String,
    /// The lyrics' language (the lyric tokenizer's `[lang]` tag and text cleaners); default "en".
    pub vocal_language: String,
    pub duration: f64,
    /// Latent frames for `duration` ([`frames::v1_frames_from_duration`]).
    pub frames: u32,
    pub inference_steps: u32,
    pub guidance_scale: f64,
    pub scheduler_type: String,
    pub cfg_type: String,
    pub omega_scale: f64,
    pub guidance_interval: f64,
    pub guidance_interval_decay: f64,
    pub min_guidance_scale: f64,
    pub use_erg_tag: bool,
    pub use_erg_lyric: bool,
    pub use_erg_diffusion: bool,
    pub guidance_scale_text: f64,
    pub guidance_scale_lyric: f64,
    pub zero_steps: u32,
    pub use_zero_init: bool,
    pub seeds: Vec<i64>,
    pub batch_size: u32,
    pub audio_format: Option<String>,
    /// The initial and PingPong noise's generator ("torch_cpu", default, or "torch_cuda").
    pub noise_mode: String,
    /// Decode in the official overlapping windows (`decode_overlap`) when the song is longer than
    /// 48 s; default false, as in the official pipeline. Changes the song; bounds the decode memory.
    pub overlapped_decode: bool,
}

/// Parses and normalises a v1 request (JSON object text).
pub fn normalize(text: &str) -> Result<V1Request> {
    normalize_map(parse_object(text, "request")?)
}

pub fn normalize_map(mut map: Map<String, Value>) -> Result<V1Request> {
    resolve_aliases(&mut map, &ALIASES)?;
    for key in map.keys() {
        if let Some((_, what)) = NOT_SUPPORTED.iter().find(|(k, _)| k == key) {
            return Err(field_error(key, format!("not supported yet for ACE-Step v1: {what}")));
        }
        if !KEYS.contains(&key.as_str()) {
            if crate::request::KEYS.contains(&key.as_str()) {
                return Err(field_error(
                    key,
                    format!(
                        "an ACE-Step 1.5 setting; this model package is ACE-Step v1, which takes: {}",
                        KEYS.join(", ")
                    ),
                ));
            }
            return Err(field_error(key, format!("unknown key (known: {})", KEYS.join(", "))));
        }
    }
    let f = Fields(&map);
    let duration = f.number_in("duration", DEFAULT_DURATION_S, f64::MIN, f64::MAX)?;
    let frames = frames::v1_frames_from_duration(duration).map_err(|e| field_error("duration", e.message))?;
    let batch_size = f.uint_in("batch_size", 1, MAX_BATCH)?.unwrap_or(1) as u32;
    let seeds = f.seeds()?;
    if seeds.len() > batch_size as usize {
        return Err(field_error("seeds", format!("{} seeds given for batch_size {batch_size}", seeds.len())));
    }
    let audio_format = match f.opt_str("audio_format")? {
        None => None,
        Some(_) => Some(f.choice("audio_format", "", &crate::request::AUDIO_FORMATS)?),
    };
    let big = 1.0e4; // guidance scales far above any use are typos
    Ok(V1Request {
        caption: f.string_or("caption", "")?,
        lyrics: f.string_or("lyrics", "")?,
        vocal_language: vocal_language(&f)?,
        duration,
        frames,
        inference_steps: f.uint_in("inference_steps", 1, crate::limits::MAX_STEPS as u64)?.unwrap_or(DEFAULT_STEPS) as u32,
        guidance_scale: f.number_in("guidance_scale", DEFAULT_GUIDANCE_SCALE, 0.0, big)?,
        scheduler_type: f.choice("scheduler_type", "euler", &SCHEDULERS)?,
        cfg_type: f.choice("cfg_type", "apg", &CFG_TYPES)?,
        omega_scale: f.number_in("omega_scale", DEFAULT_OMEGA_SCALE, -big, big)?,
        guidance_interval: f.number_in("guidance_interval", DEFAULT_GUIDANCE_INTERVAL, 0.0, 1.0)?,
        guidance_interval_decay: f.number_in("guidance_interval_decay", 0.0, 0.0, 1.0)?,
        min_guidance_scale: f.number_in("min_guidance_scale", DEFAULT_MIN_GUIDANCE_SCALE, 0.0, big)?,
        use_erg_tag: f.bool_or("use_erg_tag", true)?,
        use_erg_lyric: f.bool_or("use_erg_lyric", true)?,
        use_erg_diffusion: f.bool_or("use_erg_diffusion", true)?,
        guidance_scale_text: f.number_in("guidance_scale_text", 0.0, 0.0, big)?,
        guidance_scale_lyric: f.number_in("guidance_scale_lyric", 0.0, 0.0, big)?,
        zero_steps: f.uint_in("zero_steps", 0, crate::limits::MAX_STEPS as u64)?.unwrap_or(1) as u32,
        use_zero_init: f.bool_or("use_zero_init", true)?,
        seeds,
        batch_size,
        audio_format,
        noise_mode: f.choice("noise_mode", "torch_cpu", &["torch_cpu", "torch_cuda"])?,
        overlapped_decode: f.bool_or("overlapped_decode", false)?,
    })
}

/// The lyric language: one the v1 tokenizer tags and this runtime cleans (checked here, so a
/// request with lyrics in another language fails before any graph runs). "unknown", as 1.5
/// requests say, is English here (the official per-line detection falls back to English).
fn vocal_language(f: &Fields) -> Result<String> {
    let lang = f.string_or("vocal_language", "en")?.to_ascii_lowercase();
    if lang == "unknown" {
        return Ok("en".into());
    }
    let base = lang.split('-').next().unwrap_or("").to_string();
    if !crate::lyrics_v1::CLEANED_LANGUAGES.contains(&base.as_str()) {
        let known = crate::lyrics_v1::LANGUAGES.contains(&base.as_str());
        let why = if known { "its lyric text cleaners are not ported yet" } else { "not a language of the v1 lyric tokenizer" };
        return Err(field_error(
            "vocal_language",
            format!("{lang:?}: {why}; supported: {}", crate::lyrics_v1::CLEANED_LANGUAGES.join(", ")),
        ));
    }
    Ok(base)
}

impl V1Request {
    /// The normalised request as JSON, every key present (sidecar, track id).
    pub fn to_json(&self) -> Value {
        json!({
            "caption": self.caption,
            "lyrics": self.lyrics,
            "vocal_language": self.vocal_language,
            "duration": self.duration,
            "inference_steps": self.inference_steps,
            "guidance_scale": self.guidance_scale,
            "scheduler_type": self.scheduler_type,
            "cfg_type": self.cfg_type,
            "omega_scale": self.omega_scale,
            "guidance_interval": self.guidance_interval,
            "guidance_interval_decay": self.guidance_interval_decay,
            "min_guidance_scale": self.min_guidance_scale,
            "use_erg_tag": self.use_erg_tag,
            "use_erg_lyric": self.use_erg_lyric,
            "use_erg_diffusion": self.use_erg_diffusion,
            "guidance_scale_text": self.guidance_scale_text,
            "guidance_scale_lyric": self.guidance_scale_lyric,
            "zero_steps": self.zero_steps,
            "use_zero_init": self.use_zero_init,
            "seeds": self.seeds,
            "batch_size": self.batch_size,
            "audio_format": self.audio_format,
            "noise_mode": self.noise_mode,
            "overlapped_decode": self.overlapped_decode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_call_defaults() {
        let r = normalize(r#"{"caption": "pop"}"#).unwrap();
        // spec §8, `__call__` column
        assert_eq!(r.inference_steps, 60);
        assert_eq!(r.guidance_scale, 15.0);
        assert_eq!((r.scheduler_type.as_str(), r.cfg_type.as_str()), ("euler", "apg"));
        assert_eq!(r.omega_scale, 10.0);
        assert_eq!((r.guidance_interval, r.guidance_interval_decay, r.min_guidance_scale), (0.5, 0.0, 3.0));
        assert!(r.use_erg_tag && r.use_erg_lyric && r.use_erg_diffusion);
        assert_eq!((r.guidance_scale_text, r.guidance_scale_lyric), (0.0, 0.0));
        assert_eq!((r.duration, r.frames), (60.0, 645));
        assert_eq!((r.zero_steps, r.use_zero_init, r.batch_size), (1, true, 1));
    }

    #[test]
    fn official_names_are_aliases() {
        let r = normalize(r#"{"prompt": "x", "audio_duration": 240, "infer_step": 27, "manual_seeds": [1]}"#).unwrap();
        assert_eq!((r.caption.as_str(), r.frames, r.inference_steps, r.seeds.clone()), ("x", 2583, 27, vec![1]));
        assert_eq!(normalize(r#"{"seed": 5}"#).unwrap().seeds, vec![5]);
        assert!(normalize(r#"{"prompt": "x", "caption": "y"}"#).unwrap_err().message.contains("request.prompt"));
    }

    #[test]
    fn every_error_names_its_field() {
        for (text, field) in [
            (r#"{"duration": 300}"#, "request.duration"),
            (r#"{"duration": 0}"#, "request.duration"),
            (r#"{"scheduler_type": "dpm"}"#, "request.scheduler_type"),
            (r#"{"cfg_type": 3}"#, "request.cfg_type"),
            (r#"{"guidance_interval": 1.5}"#, "request.guidance_interval"),
            (r#"{"inference_steps": 0}"#, "request.inference_steps"),
            (r#"{"use_erg_tag": "yes"}"#, "request.use_erg_tag"),
            (r#"{"seeds": [1, 2], "batch_size": 1}"#, "request.seeds"),
            (r#"{"oss_steps": [1]}"#, "request.oss_steps"),
            (r#"{"bogus": 1}"#, "request.bogus"),
            (r#"{"audio_format": "ogg"}"#, "request.audio_format"),
            (r#"{"thinking": true}"#, "request.thinking: an ACE-Step 1.5 setting"),
            (r#"{"vocal_language": "ko"}"#, "request.vocal_language"),
            (r#"{"language": "xx"}"#, "request.vocal_language"),
        ] {
            let e = normalize(text).unwrap_err();
            assert!(e.message.starts_with(field), "{text}: {}", e.message);
        }
        assert!(normalize("[1]").is_err());
    }

    #[test]
    fn json_form_round_trips() {
        let r = normalize(r#"{"caption": "a", "duration": 30.0, "scheduler_type": "heun"}"#).unwrap();
        let again = normalize_map(r.to_json().as_object().unwrap().clone()).unwrap();
        assert_eq!(r, again);
        // 30 and 30.0 normalise alike
        assert_eq!(normalize(r#"{"caption": "a", "duration": 30}"#).unwrap().duration, 30.0);
    }
}
