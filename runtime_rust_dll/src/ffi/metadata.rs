//! C ABI of LM-output parsing and CoT formatting (`crate::metadata`).

use std::ffi::c_char;

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
use crate::metadata::{format_cot, metadata_from_json, parse_lm_output};

/// Parses LM output text (phase 1 or phase 2, special tokens rendered as text) into
/// `{"metadata": {bpm, caption, duration, genres, keyscale, language, timesignature — only those
/// present; bpm/duration are ints when they parse}, "codes": [int, ...]}` (codes clamped to
/// [0, 63999]), written to `*out_json`; free it with `ace_string_free`.
///
/// # Safety
/// `text` must be a NUL-terminated UTF-8 string; `out_json` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_parse_lm_output(text: *const c_char, out_json: *mut *mut c_char) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_json, "out_json")?;
        let parsed = parse_lm_output(ptr::str_in(text, "text")?);
        ptr::string_out(out_json, parsed.to_json().to_string(), "out_json")
    })
}

/// Formats metadata as the phase-2 CoT block `<think>\n{yaml}\n</think>`, the YAML byte-identical
/// to PyYAML `yaml.dump(..., allow_unicode=True, sort_keys=True).strip()` as the official code
/// builds it (timesignature "N/4" → N, digit strings → ints, nulls skipped, genres not emitted).
/// `metadata_json` is an object with keys among bpm, caption, duration, genres, keyscale,
/// language, timesignature (others are errors), values int, string or null. The result goes to
/// `*out`; free it with `ace_string_free`.
///
/// # Safety
/// `metadata_json` must be a NUL-terminated string; `out` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_format_cot(metadata_json: *const c_char, out: *mut *mut c_char) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let metadata = metadata_from_json(ptr::str_in(metadata_json, "metadata_json")?)?;
        ptr::string_out(out, format_cot(&metadata)?, "out")
    })
}

/// Decodes generated LM token ids with the LM tokenizer (special tokens kept as text) and parses
/// them like `ace_parse_lm_output`, writing the same JSON to `*out_json` (free with
/// `ace_string_free`). `token_ids` may be null when `len` is 0. Ids outside the vocabulary are
/// errors (INVALID_ARGUMENT).
///
/// # Safety
/// `tok` a live tokenizer; `token_ids` points to `len` ids; `out_json` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_finalize_metadata(
    tok: *const super::tokenizer::AceTokenizer,
    token_ids: *const u32,
    len: usize,
    out_json: *mut *mut c_char,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_json, "out_json")?;
        let tok = ptr::handle_ref(tok, "tok")?;
        let ids: &[u32] = if len == 0 { &[] } else { ptr::slice_in(token_ids, len, "token_ids")? };
        let text = tok.inner.decode(ids, false)?;
        ptr::string_out(out_json, parse_lm_output(&text).to_json().to_string(), "out_json")
    })
}
