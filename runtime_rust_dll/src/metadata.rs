//! LM output ↔ metadata (spec §5.3): parsing the phase-1/phase-2 text into fields and audio codes
//! (the official `parse_lm_output` rules), and formatting metadata as the phase-2 CoT block (the
//! official `_format_metadata_as_cot`, with [`crate::cot_yaml`] standing in for PyYAML).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::cot_yaml::{dump_mapping, YamlValue};
use crate::error::{Error, Result};

/// First id of `<|audio_code_0|>` in the LM vocabulary.
pub const AUDIO_CODE_BASE: u32 = 151_669;
/// Codes ≥ this are invalid; parsed codes are clamped to `[0, AUDIO_CODE_LIMIT - 1]`.
pub const AUDIO_CODE_LIMIT: u32 = 64_000;

/// The fields the official parser keeps, in CoT order.
pub const FIELDS: [&str; 7] = ["bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature"];
/// The fields the CoT block carries (genres is never emitted).
pub const COT_FIELDS: [&str; 6] = ["bpm", "caption", "duration", "keyscale", "language", "timesignature"];

/// Python's `str.isspace()` set (Rust's `char::is_whitespace` lacks U+001C..U+001F).
pub fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// The "0" of every Unicode decimal-digit run (general category Nd, Unicode 14 as in Python 3.11):
/// Python's `int()` and `str.isdigit()` accept all of them, not only ASCII.
const DECIMAL_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6, 0xE50, 0xED0,
    0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620,
    0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0,
    0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60,
    0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of a Unicode decimal digit.
pub fn decimal_value(c: char) -> Option<u32> {
    let cp = c as u32;
    DECIMAL_ZEROS.iter().find(|&&z| cp >= z && cp <= z + 9).map(|&z| cp - z)
}

/// `s.isdigit()` and `int(s)` for strings of decimal digits; `None` if `s` is not all decimal
/// digits or the value overflows i64.
pub fn decimal_int(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for c in s.chars() {
        v = v.checked_mul(10)?.checked_add(i64::from(decimal_value(c)?))?;
    }
    Some(v)
}

/// Python's `int(s.strip())`: optional sign, decimal digits with single underscores between
/// them. `None` when Python would raise (or the value overflows i64).
fn py_int(s: &str) -> Option<i64> {
    let s = py_strip(s);
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let is_digit = |c: char| decimal_value(c).is_some();
    let ok = body.starts_with(is_digit) && body.ends_with(is_digit) && !body.contains("__");
    if !ok {
        return None;
    }
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    let v = decimal_int(&digits)?;
    Some(if s.starts_with('-') { -v } else { v })
}

/// Parsed LM output: the metadata fields that were present, and the audio codes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LmOutput {
    /// bpm/duration are ints when they parse, else strings; other fields are strings.
    pub metadata: Map<String, Value>,
    pub codes: Vec<u32>,
}

impl LmOutput {
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "metadata": Value::Object(self.metadata.clone()), "codes": self.codes })
    }
}

/// All `<|audio_code_N|>` (N = ASCII digits) in order, clamped to [0, 63999].
pub fn parse_codes(text: &str) -> Vec<u32> {
    const OPEN: &str = "<|audio_code_";
    let mut codes = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find(OPEN) {
        rest = &rest[pos + OPEN.len()..];
        let n_digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if n_digits > 0 && rest[n_digits..].starts_with("|>") {
            let value = rest[..n_digits].parse::<u64>().unwrap_or(u64::MAX);
            codes.push(value.min(u64::from(AUDIO_CODE_LIMIT - 1)) as u32);
            rest = &rest[n_digits + 2..];
        }
    }
    codes
}

/// The text the metadata is read from: the first `<think>…</think>` body, stripped; if there is
/// none (or it is blank), everything before the first `<|audio_code_`, stripped.
fn reasoning_text(text: &str) -> &str {
    if let Some(open) = text.find("<think>") {
        let body = &text[open + "<think>".len()..];
        if let Some(close) = body.find("</think>") {
            let inner = py_strip(&body[..close]);
            if !inner.is_empty() {
                return inner;
            }
        }
    }
    let before = match text.find("<|audio_code_") {
        Some(p) => &text[..p],
        None => text,
    };
    py_strip(before)
}

fn store_field(metadata: &mut Map<String, Value>, key: &str, lines: &[&str]) {
    if key.is_empty() || lines.is_empty() {
        return;
    }
    let value = lines.join("\n");
    let stored = match key {
        "bpm" | "duration" => match py_int(&value) {
            Some(v) => Value::from(v),
            None => Value::from(py_strip(&value)),
        },
        "caption" => {
            let parts: Vec<&str> = value.split('\n').map(py_strip).filter(|l| !l.is_empty()).collect();
            Value::from(parts.join(" "))
        }
        "genres" | "keyscale" | "language" | "timesignature" => Value::from(py_strip(&value)),
        _ => return,
    };
    metadata.insert(key.to_string(), stored);
}

/// Parses LM output text (spec §5.3, official `parse_lm_output`).
pub fn parse_lm_output(text: &str) -> LmOutput {
    let codes = parse_codes(text);
    let mut metadata = Map::new();
    let reasoning = reasoning_text(text);
    let mut key = String::new();
    let mut lines: Vec<&str> = Vec::new();
    let mut have_key = false;
    for line in reasoning.split('\n') {
        if py_strip(line).starts_with('<') {
            continue;
        }
        let starts_field = line.chars().next().is_some_and(|c| !py_space(c)) && line.contains(':');
        if starts_field {
            if have_key {
                store_field(&mut metadata, &key, &lines);
            }
            let (name, first) = line.split_once(':').expect("line contains ':'");
            key = py_strip(name).to_lowercase();
            have_key = true;
            lines.clear();
            if !py_strip(first).is_empty() {
                lines.push(first);
            }
        } else if (line.starts_with(' ') || line.starts_with('\t')) && have_key && !key.is_empty() {
            lines.push(line);
        }
    }
    if have_key {
        store_field(&mut metadata, &key, &lines);
    }
    LmOutput { metadata, codes }
}

/// The CoT value of one field, as `_format_metadata_as_cot` builds it: timesignature "N/4" → "N",
/// decimal-digit strings → ints (Python `isdigit`/`int`). Floats and other JSON types are refused (PyYAML would print them
/// in forms the LM never saw).
fn cot_value(key: &str, value: &Value) -> Result<Option<YamlValue>> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(|v| Some(YamlValue::Int(v)))
            .ok_or_else(|| Error::invalid_argument(format!("metadata.{key} must be an integer or a string, got {n}"))),
        Value::String(s) => {
            let mut s = s.as_str();
            if key == "timesignature" && s.ends_with("/4") {
                s = s.split('/').next().unwrap_or(s);
            }
            if !s.is_empty() && s.chars().all(|c| decimal_value(c).is_some()) {
                let v = decimal_int(s).ok_or_else(|| {
                    Error::invalid_argument(format!("metadata.{key} is a digit string too large for an integer: {s}"))
                })?;
                Ok(Some(YamlValue::Int(v)))
            } else {
                Ok(Some(YamlValue::Str(s.to_string())))
            }
        }
        other => Err(Error::invalid_json(format!(
            "metadata.{key} must be an integer, a string or null, got {other}"
        ))),
    }
}

/// The YAML body of the CoT (no `<think>` tags) for a metadata object. Keys outside
/// [`FIELDS`] are errors; `genres` is accepted and, as in the official code, not emitted.
pub fn cot_yaml(metadata: &Map<String, Value>) -> Result<String> {
    let mut items = BTreeMap::new();
    for (key, value) in metadata {
        if !FIELDS.contains(&key.as_str()) {
            return Err(Error::invalid_json(format!(
                "metadata has an unknown key {key:?} (expected one of {})",
                FIELDS.join(", ")
            )));
        }
        if !COT_FIELDS.contains(&key.as_str()) {
            continue;
        }
        if let Some(v) = cot_value(key, value)? {
            items.insert(key.clone(), v);
        }
    }
    Ok(dump_mapping(&items))
}

/// `<think>\n{yaml}\n</think>` for a metadata object.
pub fn format_cot(metadata: &Map<String, Value>) -> Result<String> {
    Ok(format!("<think>\n{}\n</think>", cot_yaml(metadata)?))
}

/// Parses a JSON object of metadata (for the C ABI).
pub fn metadata_from_json(text: &str) -> Result<Map<String, Value>> {
    crate::json::parse_object(text, "metadata_json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase1_output_without_closing_tag() {
        let text = "<think>\nbpm: 83\ncaption: An upbeat track\n  with guitars\nduration: 88\nkeyscale: G major\nlanguage: fr\ntimesignature: 4\n";
        let out = parse_lm_output(text);
        assert_eq!(out.metadata["bpm"], 83);
        assert_eq!(out.metadata["caption"], "An upbeat track with guitars");
        assert_eq!(out.metadata["timesignature"], "4");
        assert!(out.codes.is_empty());
    }

    #[test]
    fn codes_are_clamped() {
        let out = parse_lm_output("<think>\n</think>\n\n<|audio_code_5|><|audio_code_64000|><|audio_code_x|>");
        assert_eq!(out.codes, vec![5, 63999]);
    }

    #[test]
    fn cot_converts_timesignature_and_digits() {
        let m = metadata_from_json(r#"{"bpm": "120", "timesignature": "3/4", "keyscale": "C major"}"#).unwrap();
        assert_eq!(format_cot(&m).unwrap(), "<think>\nbpm: 120\nkeyscale: C major\ntimesignature: 3\n</think>");
    }
}
