//! C ABI of the constrained-decoding state machine (`ace_fsm_*`, `ace_apply_lm_constraints`).

use std::ffi::c_char;

use super::guard::guard;
use super::ptr;
use super::tokenizer::AceTokenizer;
use super::AceStatus;
use crate::fsm::Fsm;

/// An opaque per-sequence LM state machine. One thread at a time per object.
pub struct AceFsm {
    pub(crate) inner: Fsm,
}

/// Creates a state machine for one sequence from a tokenizer and a JSON config (see
/// `docs/lm_fsm.md`; `"{}"` gives the defaults: phase "cot", genres skipped, max_duration 600).
/// Value tries and masks are built here from the tokenizer (a few ms to ~100 ms). The FSM keeps
/// its own reference to the tokenizer, which may be freed afterwards. Free with `ace_fsm_free`.
///
/// Errors: `ACE_STATUS_INVALID_JSON` (malformed JSON, unknown or mistyped keys),
/// `ACE_STATUS_INVALID_ARGUMENT` (bad values, e.g. target_duration ≤ 0, EOS token missing).
///
/// # Safety
/// `tok` a live tokenizer; `config_json` NUL-terminated; `out` a valid `AceFsm *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_fsm_create(
    tok: *const AceTokenizer,
    config_json: *const c_char,
    out: *mut *mut AceFsm,
) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let tok = ptr::handle_ref(tok, "tok")?;
        let cfg = ptr::str_in(config_json, "config_json")?;
        let fsm = Fsm::from_json(tok.inner.clone(), cfg)?;
        ptr::handle_out(out, AceFsm { inner: fsm }, "out")
    })
}

/// Frees a state machine. Null is a no-op.
///
/// # Safety
/// `fsm` must be null or an FSM from `ace_fsm_create` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ace_fsm_free(fsm: *mut AceFsm) {
    ptr::handle_free(fsm)
}

/// Starts a new sequence with the prompt `prompt_ids[0..n]` (NULL allowed when n == 0). In the
/// "codes" phase a prompt containing `</think>` starts directly in CODES_GENERATION.
/// Errors: an id out of range.
///
/// # Safety
/// `fsm` live; `prompt_ids` valid for `n` elements.
#[no_mangle]
pub unsafe extern "C" fn ace_fsm_reset_with_prompt(fsm: *mut AceFsm, prompt_ids: *const u32, n: usize) -> AceStatus {
    guard(|| {
        let fsm = ptr::handle_mut(fsm, "fsm")?;
        let ids: &[u32] = if n == 0 { &[] } else { ptr::slice_in(prompt_ids, n, "prompt_ids")? };
        fsm.inner.reset_with_prompt(ids)
    })
}

/// Masks `logits[0..vocab]` in place for the current state: disallowed tokens become −inf,
/// allowed ones keep their values. Pass the logits the sampler will use (after CFG, before
/// temperature), once per step: some states decide from them (caption look-ahead, greedy
/// language). Errors: `vocab` differs from the tokenizer's vocabulary size
/// (`ACE_STATUS_LENGTH_MISMATCH`), a NaN logit (`ACE_STATUS_INVALID_ARGUMENT`).
///
/// # Safety
/// `fsm` live; `logits` valid for `vocab` floats.
#[no_mangle]
pub unsafe extern "C" fn ace_fsm_mask_logits(fsm: *mut AceFsm, logits: *mut f32, vocab: usize) -> AceStatus {
    guard(|| {
        let fsm = ptr::handle_mut(fsm, "fsm")?;
        ptr::ensure_len(vocab, fsm.inner.vocab_size(), "logits (vocab)")?;
        let logits = ptr::slice_out(logits, vocab, "logits")?;
        fsm.inner.mask_logits(logits)
    })
}

/// Copy-and-mask: writes `logits[0..vocab]` masked for the current state to
/// `out_masked_logits[0..vocab]` (the two buffers must not overlap). Same rules and errors as
/// `ace_fsm_mask_logits`.
///
/// # Safety
/// `fsm` live; both buffers valid for `vocab` floats.
#[no_mangle]
pub unsafe extern "C" fn ace_apply_lm_constraints(
    fsm: *mut AceFsm,
    logits: *const f32,
    vocab: usize,
    out_masked_logits: *mut f32,
) -> AceStatus {
    guard(|| {
        let fsm = ptr::handle_mut(fsm, "fsm")?;
        ptr::ensure_len(vocab, fsm.inner.vocab_size(), "logits (vocab)")?;
        let src = ptr::slice_in(logits, vocab, "logits")?;
        let dst = ptr::slice_out(out_masked_logits, vocab, "out_masked_logits")?;
        ptr::ensure_disjoint(src, "logits", dst, "out_masked_logits")?;
        fsm.inner.apply(src, dst)
    })
}

/// Advances the state machine with the sampled `token`. Accepting EOS (or pad) completes the
/// sequence. Errors: token out of range (`ACE_STATUS_INVALID_ARGUMENT`), the sequence already
/// completed (`ACE_STATUS_INVALID_STATE`; reset it to start again).
///
/// # Safety
/// `fsm` live.
#[no_mangle]
pub unsafe extern "C" fn ace_fsm_accept(fsm: *mut AceFsm, token: u32) -> AceStatus {
    guard(|| ptr::handle_mut(fsm, "fsm")?.inner.accept(token))
}

/// Writes the state and counters as JSON to `*out` (free with `ace_string_free`):
/// `{"state": "CAPTION_VALUE", "position": <tokens accepted>, "position_in_state", "codes_count",
/// "target_codes", "caption_token_count", "caption_ending", "injecting", "pending_injection_tokens",
/// "accumulated_value", "completed"}`.
///
/// # Safety
/// `fsm` live; `out` a valid `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_fsm_state_json(fsm: *const AceFsm, out: *mut *mut c_char) -> AceStatus {
    guard(|| {
        let fsm = ptr::handle_ref(fsm, "fsm")?;
        ptr::string_out(out, fsm.inner.state_json(), "out")
    })
}
