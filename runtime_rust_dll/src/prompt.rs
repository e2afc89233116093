//! Prompt templates (spec §1.3, §1.4, §5.2, §5.6): the DiT caption and lyric prompts for the
//! Qwen3-Embedding text encoder, and the four LM prompts (phase 1 and 2, conditional and
//! unconditional) rendered as the Qwen3 chat template renders them.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{parse_json, Error, Result};
use crate::metadata::{format_cot, py_strip};

pub const LM_INSTRUCTION: &str = "Generate audio semantic tokens based on the given conditions:";
/// DiT instruction for text2music without LM codes.
pub const TEXT2MUSIC_INSTRUCTION: &str = "Fill the audio semantic mask based on the given conditions:";
/// DiT instruction when LM codes are present (the official code switches the task to "cover").
pub const COVER_INSTRUCTION: &str = "Generate audio semantic tokens based on the given conditions:";
pub const DEFAULT_NEGATIVE_PROMPT: &str = "NO USER INPUT";
pub const INSTRUMENTAL_LYRICS: &str = "[Instrumental]";

/// `constants.VALID_LANGUAGES`.
pub const LANGUAGES: [&str; 51] = [
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hr", "ht", "hu",
    "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no", "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr",
    "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh", "unknown",
];
pub const BPM_RANGE: (i64, i64) = (30, 300);
pub const DURATION_RANGE: (f64, f64) = (10.0, 600.0);
pub const TIME_SIGNATURES: [&str; 4] = ["2", "3", "4", "6"];

/// `{A..G}{"", #, b, ♯, ♭} {major|minor}` (70 strings).
pub fn is_valid_keyscale(s: &str) -> bool {
    let Some((note, mode)) = s.split_once(' ') else { return false };
    let mut chars = note.chars();
    let letter_ok = chars.next().is_some_and(|c| ('A'..='G').contains(&c));
    let acc: String = chars.collect();
    letter_ok && matches!(acc.as_str(), "" | "#" | "b" | "♯" | "♭") && matches!(mode, "major" | "minor")
}

/// "2", "3", "4", "6", or the same with "/4".
pub fn is_valid_timesignature(s: &str) -> bool {
    TIME_SIGNATURES.contains(&s.strip_suffix("/4").unwrap_or(s))
}

/// How the phase-2 conditional prompt ends after the injected CoT (spec §9.1, docs/lm_prompts.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase2End {
    /// `...</think>\n\n<|im_end|>\n`: what the official code gets from the Qwen3 chat template
    /// for an assistant message with `add_generation_prompt=False` (default).
    #[default]
    ImEnd,
    /// `...</think>\n\n`: the turn left open, as the C++ and Go ports do.
    Open,
}

/// A generation request, as far as prompts are concerned. Unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptRequest {
    #[serde(default)]
    pub caption: String,
    #[serde(default)]
    pub lyrics: String,
    /// Forces "[Instrumental]" lyrics.
    #[serde(default)]
    pub instrumental: bool,
    #[serde(default)]
    pub bpm: Option<i64>,
    /// Seconds.
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub keyscale: Option<String>,
    #[serde(default)]
    pub timesignature: Option<String>,
    /// Vocal language code (one of the 51), default "unknown".
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default = "default_negative")]
    pub negative_prompt: String,
    /// Accepted for compatibility with the official example requests; prompts do not depend on it.
    #[serde(default)]
    pub think: Option<bool>,
    /// Whether the DiT gets LM audio codes (selects the cover instruction).
    #[serde(default)]
    pub has_codes: bool,
    #[serde(default = "yes")]
    pub use_cot_caption: bool,
    #[serde(default = "yes")]
    pub use_cot_language: bool,
    /// Metadata from LM phase 1 (the `metadata` object of `ace_parse_lm_output`).
    #[serde(default)]
    pub lm_metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub phase2_end: Phase2End,
}

fn default_negative() -> String {
    DEFAULT_NEGATIVE_PROMPT.to_string()
}
fn yes() -> bool {
    true
}

/// All prompt strings for one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prompts {
    pub dit_caption: String,
    pub dit_lyrics: String,
    /// False when the user gave bpm, keyscale, timesignature and duration (phase 1 is skipped).
    pub phase1_needed: bool,
    pub lm_phase1: String,
    pub lm_phase1_uncond: String,
    /// The CoT injected in phase 2 (`<think>\n{yaml}\n</think>`).
    pub cot: String,
    pub lm_phase2: String,
    pub lm_phase2_uncond: String,
}

impl PromptRequest {
    pub fn from_json(text: &str) -> Result<Self> {
        let req: PromptRequest = parse_json(text, "request").map_err(|e| name_bad_field(text).unwrap_or(e))?;
        req.validate()?;
        Ok(req)
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(bpm) = self.bpm {
            if !(BPM_RANGE.0..=BPM_RANGE.1).contains(&bpm) {
                return Err(Error::invalid_argument(format!("bpm must be in 30..=300, got {bpm}")));
            }
        }
        if let Some(d) = self.duration {
            if !(d.is_finite() && (DURATION_RANGE.0..=DURATION_RANGE.1).contains(&d)) {
                return Err(Error::invalid_argument(format!("duration must be in 10..=600 seconds, got {d}")));
            }
        }
        if let Some(k) = &self.keyscale {
            if !is_valid_keyscale(k) {
                return Err(Error::invalid_argument(format!(
                    "keyscale must be like \"C major\", \"F# minor\" or \"E♭ minor\" (note A-G, accidental #, b, ♯, ♭, major/minor), got {k:?}"
                )));
            }
        }
        if let Some(t) = &self.timesignature {
            if !is_valid_timesignature(t) {
                return Err(Error::invalid_argument(format!(
                    "timesignature must be one of 2, 3, 4, 6 (optionally with /4), got {t:?}"
                )));
            }
        }
        if let Some(l) = &self.language {
            if !LANGUAGES.contains(&l.as_str()) {
                return Err(Error::invalid_argument(format!(
                    "language must be one of the 51 codes ({}), got {l:?}",
                    LANGUAGES.join(" ")
                )));
            }
        }
        if let Some(m) = &self.lm_metadata {
            // Fails on unknown keys or unusable types, naming the field.
            crate::metadata::cot_yaml(m)?;
        }
        Ok(())
    }

    /// DiT lyrics: "[Instrumental]" when instrumental or blank.
    fn dit_lyrics_text(&self) -> &str {
        if self.instrumental || py_strip(&self.lyrics).is_empty() {
            INSTRUMENTAL_LYRICS
        } else {
            &self.lyrics
        }
    }

    /// LM lyrics: the raw lyrics (the official code passes `params.lyrics or ""`), or
    /// "[Instrumental]" when the request says instrumental.
    fn lm_lyrics_text(&self) -> &str {
        if self.instrumental {
            INSTRUMENTAL_LYRICS
        } else {
            &self.lyrics
        }
    }

    fn has_all_metas(&self) -> bool {
        self.bpm.is_some() && self.keyscale.is_some() && self.timesignature.is_some() && self.duration.is_some()
    }

    fn lm_field(&self, key: &str) -> Option<&Value> {
        self.lm_metadata.as_ref()?.get(key).filter(|v| !v.is_null())
    }

    fn lm_string(&self, key: &str) -> Option<String> {
        match self.lm_field(key)? {
            Value::String(s) if !s.is_empty() && s != "N/A" => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The metadata phase 2 conditions on: the LM's (phase 1) when given, else the user's four
    /// values (bpm, duration as int, keyscale, timesignature), as the official code does.
    fn cot_metadata(&self) -> Map<String, Value> {
        if let Some(m) = &self.lm_metadata {
            return m.clone();
        }
        let mut m = Map::new();
        if let Some(b) = self.bpm {
            m.insert("bpm".into(), Value::from(b));
        }
        if let Some(d) = self.duration {
            m.insert("duration".into(), Value::from(d.trunc() as i64));
        }
        if let Some(k) = &self.keyscale {
            m.insert("keyscale".into(), Value::from(k.clone()));
        }
        if let Some(t) = &self.timesignature {
            m.insert("timesignature".into(), Value::from(t.clone()));
        }
        m
    }

    /// DiT metas: user values first, LM values where the user left a field empty.
    fn metas(&self) -> String {
        let bpm = self.bpm.map(|b| b.to_string()).or_else(|| self.lm_string("bpm")).unwrap_or_else(|| "N/A".into());
        let ts = self.timesignature.clone().or_else(|| self.lm_string("timesignature")).unwrap_or_else(|| "N/A".into());
        let ks = self.keyscale.clone().or_else(|| self.lm_string("keyscale")).unwrap_or_else(|| "N/A".into());
        let duration = self.duration.or_else(|| match self.lm_field("duration") {
            Some(Value::Number(n)) => n.as_f64().filter(|d| *d > 0.0),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok().filter(|d| d.is_finite() && *d > 0.0),
            _ => None,
        });
        let duration = match duration {
            Some(d) => format!("{} seconds", d.trunc() as i64),
            None => "30 seconds".to_string(),
        };
        format!("- bpm: {bpm}\n- timesignature: {ts}\n- keyscale: {ks}\n- duration: {duration}\n")
    }

    fn dit_caption_text(&self) -> String {
        if self.use_cot_caption {
            if let Some(Value::String(c)) = self.lm_field("caption") {
                return c.clone();
            }
        }
        self.caption.clone()
    }

    /// The CoT language when enabled and valid (the intended official behaviour, see
    /// docs/lm_prompts.md), else the user's, else "unknown".
    fn dit_language(&self) -> String {
        if self.use_cot_language {
            if let Some(Value::String(l)) = self.lm_field("language") {
                if LANGUAGES.contains(&l.as_str()) {
                    return l.clone();
                }
            }
        }
        self.language.clone().unwrap_or_else(|| "unknown".into())
    }

    pub fn build(&self) -> Result<Prompts> {
        let instruction = if self.has_codes { COVER_INSTRUCTION } else { TEXT2MUSIC_INSTRUCTION };
        let dit_caption = format!(
            "# Instruction\n{}\n\n# Caption\n{}\n\n# Metas\n{}<|endoftext|>\n",
            ensure_colon(instruction),
            self.dit_caption_text(),
            self.metas()
        );
        let dit_lyrics = format!("# Languages\n{}\n\n# Lyric\n{}<|endoftext|>", self.dit_language(), self.dit_lyrics_text());
        let lyrics = self.lm_lyrics_text();

        let negative = meaningful_negative(&self.negative_prompt);
        let user_cond = format!("# Caption\n{}\n\n# Lyric\n{}\n", self.caption, lyrics);
        let user_uncond_p1 = match negative {
            Some(neg) => format!("# Caption\n{neg}\n\n# Lyric\n{lyrics}\n"),
            None => format!("# Lyric\n{lyrics}\n"),
        };
        let user_uncond_p2 =
            format!("# Caption\n{}\n\n# Lyric\n{}\n", negative.unwrap_or(&self.caption), lyrics);

        let cot = format_cot(&self.cot_metadata())?;
        Ok(Prompts {
            dit_caption,
            dit_lyrics,
            phase1_needed: !self.has_all_metas(),
            lm_phase1: chat(&user_cond, None, self.phase2_end),
            lm_phase1_uncond: chat(&user_uncond_p1, None, self.phase2_end),
            lm_phase2: chat(&user_cond, Some(&cot), self.phase2_end),
            lm_phase2_uncond: chat(&user_uncond_p2, Some("<think>\n</think>"), self.phase2_end),
            cot,
        })
    }
}

/// serde's type errors carry a position, not the key; every field of the request is optional, so
/// deserialising each key alone finds the one that is wrong.
fn name_bad_field(text: &str) -> Option<Error> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else { return None };
    map.into_iter().find_map(|(key, value)| {
        let single = Value::Object(Map::from_iter([(key.clone(), value)]));
        serde_json::from_value::<PromptRequest>(single)
            .err()
            .map(|e| Error::invalid_json(format!("request.{key}: {e}")))
    })
}

fn ensure_colon(instruction: &str) -> String {
    if instruction.ends_with(':') {
        instruction.to_string()
    } else {
        format!("{instruction}:")
    }
}

/// The negative prompt when it is meaningful: non-blank and not the default "NO USER INPUT".
pub fn meaningful_negative(neg: &str) -> Option<&str> {
    let s = py_strip(neg);
    (!s.is_empty() && s != DEFAULT_NEGATIVE_PROMPT).then_some(neg)
}

/// Python's `str.strip("\n")` family, for the chat template's reasoning split.
fn strip_newlines(s: &str) -> &str {
    s.trim_matches('\n')
}

/// A system + user (+ assistant) conversation rendered like the Qwen3 chat template. Without an
/// assistant message the generation prompt `<|im_start|>assistant\n` is added. With one, the
/// template splits the content at `</think>` into reasoning and answer and renders
/// `<|im_start|>assistant\n<think>\n{reasoning}\n</think>\n\n{answer}`, closed with `<|im_end|>\n`
/// unless `end` is [`Phase2End::Open`]; the official code then appends "\n" if the text does not
/// end with one.
pub fn chat(user: &str, assistant: Option<&str>, end: Phase2End) -> String {
    let mut s = format!(
        "<|im_start|>system\n# Instruction\n{LM_INSTRUCTION}\n\n<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
    );
    match assistant {
        None => s.push_str("<|im_start|>assistant\n"),
        Some(content) => {
            let (reasoning, answer) = match content.find("</think>") {
                Some(_) => {
                    let before = content.split("</think>").next().unwrap_or("");
                    let before = before.trim_end_matches('\n');
                    let reasoning = before.rsplit("<think>").next().unwrap_or("").trim_start_matches('\n');
                    let answer = content.rsplit("</think>").next().unwrap_or("").trim_start_matches('\n');
                    (reasoning, answer)
                }
                None => ("", content),
            };
            s.push_str("<|im_start|>assistant\n<think>\n");
            s.push_str(strip_newlines(reasoning));
            s.push_str("\n</think>\n\n");
            s.push_str(answer.trim_start_matches('\n'));
            if end == Phase2End::ImEnd {
                s.push_str("<|im_end|>\n");
            }
            if !s.ends_with('\n') {
                s.push('\n');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyscales_are_the_70() {
        let mut n = 0;
        for note in ["A", "B", "C", "D", "E", "F", "G"] {
            for acc in ["", "#", "b", "♯", "♭"] {
                for mode in ["major", "minor"] {
                    assert!(is_valid_keyscale(&format!("{note}{acc} {mode}")));
                    n += 1;
                }
            }
        }
        assert_eq!(n, 70);
        assert!(!is_valid_keyscale("H major") && !is_valid_keyscale("C## major") && !is_valid_keyscale("C Major"));
    }

    #[test]
    fn phase2_prompt_ends_per_option() {
        let p = chat("u", Some("<think>\nbpm: 1\n</think>"), Phase2End::ImEnd);
        assert!(p.ends_with("<|im_start|>assistant\n<think>\nbpm: 1\n</think>\n\n<|im_end|>\n"));
        let p = chat("u", Some("<think>\n</think>"), Phase2End::Open);
        assert!(p.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;

    #[test]
    fn mistyped_fields_are_named() {
        let err = PromptRequest::from_json(r#"{"caption": "x", "bpm": "fast"}"#).unwrap_err();
        assert!(err.message.starts_with("request.bpm:"), "{}", err.message);
        let err = PromptRequest::from_json(r#"{"tempo": 1}"#).unwrap_err();
        assert!(err.message.contains("tempo"), "{}", err.message);
        let err = PromptRequest::from_json(r#"{"language": "xx"}"#).unwrap_err();
        assert!(err.message.contains("language"), "{}", err.message);
    }

    #[test]
    fn has_all_metas_skips_phase1_and_feeds_the_cot() {
        let req = PromptRequest::from_json(
            r#"{"bpm": 90, "duration": 61.7, "keyscale": "D minor", "timesignature": "3/4"}"#,
        )
        .unwrap();
        let p = req.build().unwrap();
        assert!(!p.phase1_needed);
        assert_eq!(p.cot, "<think>\nbpm: 90\nduration: 61\nkeyscale: D minor\ntimesignature: 3\n</think>");
        assert!(p.dit_caption.contains("- timesignature: 3/4\n- keyscale: D minor\n- duration: 61 seconds\n"));
    }
}
