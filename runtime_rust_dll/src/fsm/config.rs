//! FSM configuration (`ace_fsm_create`'s JSON). Unknown keys are errors.

use serde::Deserialize;

use crate::error::{parse_json, Error, Result};

/// Which part of the LM plan this sequence generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Phase 1: the CoT metadata block (`<think>` … timesignature line).
    #[default]
    Cot,
    /// Phase 2: audio codes; starts in CODES_GENERATION when the prompt contains `</think>`.
    Codes,
    /// The official "understand" phase (simple mode's sample creation): the CoT block, then
    /// `</think>` leads to COMPLETED, where free text (the lyrics) follows with every audio code
    /// banned, until EOS.
    Understand,
}

/// A user-provided metadata value: a string, or an integer (written in decimal).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum MetaValue {
    Text(String),
    Int(i64),
}

impl MetaValue {
    pub fn as_text(&self) -> String {
        match self {
            MetaValue::Text(s) => s.clone(),
            MetaValue::Int(i) => i.to_string(),
        }
    }
}

/// User metadata injected verbatim in phase 1 (spec §5.4 "User-provided fields").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserMetadata {
    pub bpm: Option<MetaValue>,
    pub caption: Option<MetaValue>,
    pub duration: Option<MetaValue>,
    pub genres: Option<MetaValue>,
    pub keyscale: Option<MetaValue>,
    pub language: Option<MetaValue>,
    pub timesignature: Option<MetaValue>,
}

fn yes() -> bool {
    true
}
fn default_max_duration() -> u32 {
    600
}
fn default_eos() -> String {
    "<|im_end|>".into()
}
fn default_pad() -> String {
    "<|endoftext|>".into()
}
fn default_valid_codes() -> u32 {
    64000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsmConfig {
    #[serde(default)]
    pub phase: Phase,
    /// Phase 1: force EOS in place of `</think>` (generation stops after the timesignature line).
    #[serde(default)]
    pub stop_at_reasoning: bool,
    #[serde(default)]
    pub skip_caption: bool,
    #[serde(default)]
    pub skip_language: bool,
    #[serde(default = "yes")]
    pub skip_genres: bool,
    /// Set up for a batched LM call: user metadata is ignored, stop_at_reasoning is off and
    /// caption, language and genres are skipped (the official batched setup).
    #[serde(default)]
    pub batched: bool,
    #[serde(default)]
    pub user_metadata: UserMetadata,
    /// Seconds; the codes phase then needs exactly int(target_duration·5) codes before EOS, and a
    /// generated duration field is forced to int(target_duration).
    #[serde(default)]
    pub target_duration: Option<f64>,
    /// Largest duration value the duration field may take (minimum is 10).
    #[serde(default = "default_max_duration")]
    pub max_duration: u32,
    /// Vocabulary of the genres field (also used when the caption look-ahead jumps to "genres:").
    #[serde(default)]
    pub genres: Vec<String>,
    /// A genres file (one per line, '#' comments), e.g. the official `genres_vocab.txt`; read on
    /// first use and added to `genres`.
    #[serde(default)]
    pub genres_file: Option<String>,
    #[serde(default = "default_eos")]
    pub eos_token: String,
    #[serde(default = "default_pad")]
    pub pad_token: String,
    /// Audio codes 0..valid_audio_codes are valid in the codes phase.
    #[serde(default = "default_valid_codes")]
    pub valid_audio_codes: u32,
}

impl Default for FsmConfig {
    fn default() -> Self {
        parse_json("{}", "FSM config").expect("empty config parses")
    }
}

impl FsmConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: FsmConfig = parse_json(text, "FSM config")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(d) = self.target_duration {
            if !d.is_finite() || d <= 0.0 || d > 1.0e6 {
                return Err(Error::invalid_argument(format!(
                    "FSM config: target_duration must be a positive number of seconds, got {d}"
                )));
            }
        }
        if self.max_duration < 10 {
            return Err(Error::invalid_argument(format!(
                "FSM config: max_duration must be at least 10 (the minimum duration), got {}",
                self.max_duration
            )));
        }
        if self.max_duration > 100_000 {
            return Err(Error::invalid_argument(format!(
                "FSM config: max_duration {} is unreasonably large (limit 100000)",
                self.max_duration
            )));
        }
        if let Some(p) = &self.genres_file {
            if !std::path::Path::new(p).is_file() {
                return Err(Error::new(
                    crate::error::ErrorKind::Io,
                    format!("FSM config: genres_file '{p}' does not exist or is not a file"),
                ));
            }
        }
        if self.valid_audio_codes == 0 {
            return Err(Error::invalid_argument("FSM config: valid_audio_codes must be positive"));
        }
        Ok(())
    }
}
