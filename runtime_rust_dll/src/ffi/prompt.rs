//! C ABI of the prompt templates (`crate::prompt`).

use std::ffi::c_char;

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
use crate::error::Error;
use crate::prompt::PromptRequest;

/// Builds every prompt string of a request. `request_json` is an object with the optional keys
/// `caption`, `lyrics` (strings), `instrumental` (bool), `bpm` (int 30..300), `duration` (seconds,
/// 10..600), `keyscale` (e.g. "F# minor"), `timesignature` ("2", "3", "4", "6", optionally "/4"),
/// `language` (one of the 51 codes), `negative_prompt` (default "NO USER INPUT"), `think` (bool,
/// ignored), `has_codes` (bool: DiT gets LM codes → cover instruction), `use_cot_caption`,
/// `use_cot_language` (bools, default true), `lm_metadata` (the `metadata` object from
/// `ace_parse_lm_output`), `phase2_end` ("im_end" default, or "open"). Unknown keys, wrong types
/// and out-of-range values are errors that name the field.
///
/// Writes `{"dit_caption", "dit_lyrics", "phase1_needed", "lm_phase1", "lm_phase1_uncond", "cot",
/// "lm_phase2", "lm_phase2_uncond"}` as JSON to `*out_json`; free it with `ace_string_free`.
///
/// # Safety
/// `request_json` must be a NUL-terminated string; `out_json` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_build_prompts(request_json: *const c_char, out_json: *mut *mut c_char) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out_json, "out_json")?;
        let request = PromptRequest::from_json(ptr::str_in(request_json, "request_json")?)?;
        let prompts = request.build()?;
        let json = serde_json::to_string(&prompts).map_err(|e| Error::invalid_argument(format!("prompts: {e}")))?;
        ptr::string_out(out_json, json, "out_json")
    })
}
