//! C ABI of the LM sampler (`crate::sampling`).

use std::ffi::c_char;

use super::guard::guard;
use super::ptr;
use super::status::AceStatus;
use crate::error::Result;
use crate::sampling::{Sampler, SamplerConfig};

/// Opaque LM sampler: CFG, top-k/top-p and a seeded draw, with scratch buffers for one vocabulary.
pub struct AceSampler(pub(crate) Sampler);

/// Checks the logits row(s) handed in against the sampler's vocabulary.
fn ensure_vocab(sampler: &Sampler, vocab: usize) -> Result<()> {
    ptr::ensure_len(vocab, sampler.config().vocab_size, "vocab (logits length)")
}

/// Creates a sampler from a JSON config:
/// `{"seed": u64 (required), "temperature": 0.85, "top_k": 0, "top_p": 0.9, "cfg_scale": 2.0,
///   "vocab_size": 217204}` (defaults shown; unknown keys are errors). `temperature` must be finite
/// and >= 0 (0 = greedy argmax), `top_p` in (0, 1] (1 = off), `top_k` >= 0 (0 = off), `cfg_scale`
/// finite and >= 1 (1 = no CFG, the uncond row is then ignored). On success `*out` owns the sampler;
/// free it with `ace_sampler_free`.
///
/// Threading: a sampler is used by one thread at a time.
///
/// # Safety
/// `config_json` must be a NUL-terminated string; `out` a valid `AceSampler *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_sampler_create(config_json: *const c_char, out: *mut *mut AceSampler) -> AceStatus {
    guard(|| {
        ptr::ensure_out(out, "out")?;
        let config = SamplerConfig::from_json(ptr::str_in(config_json, "config_json")?)?;
        ptr::handle_out(out, AceSampler(Sampler::new(config)?), "out")
    })
}

/// Frees a sampler. Null is a no-op.
///
/// # Safety
/// `sampler` must be null or a live pointer from `ace_sampler_create`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn ace_sampler_free(sampler: *mut AceSampler) {
    ptr::handle_free(sampler);
}

/// Samples one token: CFG `l = u + g*(c - u)` in fp32 (when `cfg_scale != 1`; `uncond` may be null
/// only when `cfg_scale == 1`), then temperature, top-k, top-p (vLLM style) and the draw seeded by
/// (seed, `step`); temperature 0 is argmax. Writes the token id to `*out_token`.
///
/// Errors: null pointers; `vocab` != the configured `vocab_size` (LENGTH_MISMATCH); NaN or inf in
/// either row (INVALID_ARGUMENT, naming the row and index).
///
/// # Safety
/// `cond` (and `uncond` when non-null) must point to `vocab` floats; `out_token` to a `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_sampler_sample(
    sampler: *mut AceSampler,
    cond: *const f32,
    uncond: *const f32,
    vocab: usize,
    step: u64,
    out_token: *mut u32,
) -> AceStatus {
    guard(|| {
        let sampler = &mut ptr::handle_mut(sampler, "sampler")?.0;
        ptr::ensure_out(out_token, "out_token")?;
        ensure_vocab(sampler, vocab)?;
        let cond = ptr::slice_in(cond, vocab, "cond")?;
        let uncond = ptr::opt_slice_in(uncond, vocab, "uncond")?;
        let token = sampler.sample(cond, uncond, step)?;
        ptr::write_out(out_token, token, "out_token")
    })
}

/// Samples one token from logits that are already CFG-combined and masked (a host-side FSM, for
/// example): -inf marks a forbidden token; NaN and +inf are rejected. Same sampling as
/// `ace_sampler_sample` without the CFG step. Errors as there; all tokens -inf → INVALID_STATE.
///
/// # Safety
/// `logits` must point to `vocab` floats; `out_token` to a `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_sampler_sample_logits(
    sampler: *mut AceSampler,
    logits: *const f32,
    vocab: usize,
    step: u64,
    out_token: *mut u32,
) -> AceStatus {
    guard(|| {
        let sampler = &mut ptr::handle_mut(sampler, "sampler")?.0;
        ptr::ensure_out(out_token, "out_token")?;
        ensure_vocab(sampler, vocab)?;
        let logits = ptr::slice_in(logits, vocab, "logits")?;
        let token = sampler.sample_logits(logits, step)?;
        ptr::write_out(out_token, token, "out_token")
    })
}

/// Writes the CFG-combined logits (`l = u + g*(c - u)` in fp32, or a copy of `cond` when
/// `cfg_scale == 1`) to `out_logits` (`vocab` floats, caller-allocated, must not overlap the inputs).
/// For hosts that mask on their side and then call `ace_sampler_sample_logits`.
///
/// # Safety
/// `cond`, `uncond` (when non-null) and `out_logits` must point to `vocab` floats.
#[no_mangle]
pub unsafe extern "C" fn ace_sampler_cfg(
    sampler: *mut AceSampler,
    cond: *const f32,
    uncond: *const f32,
    vocab: usize,
    out_logits: *mut f32,
) -> AceStatus {
    guard(|| {
        let sampler = &mut ptr::handle_mut(sampler, "sampler")?.0;
        ensure_vocab(sampler, vocab)?;
        let cond = ptr::slice_in(cond, vocab, "cond")?;
        let uncond = ptr::opt_slice_in(uncond, vocab, "uncond")?;
        let out = ptr::slice_out(out_logits, vocab, "out_logits")?;
        ptr::ensure_disjoint(cond, "cond", out, "out_logits")?;
        if let Some(u) = uncond {
            ptr::ensure_disjoint(u, "uncond", out, "out_logits")?;
        }
        out.copy_from_slice(sampler.combine(cond, uncond)?);
        Ok(())
    })
}

/// One constrained LM decoding step: CFG of `cond`/`uncond` (as `ace_sampler_sample`), the FSM's
/// mask on the combined logits (`ace_fsm_mask_logits`), the sampler's draw for (seed, `step`), then
/// `ace_fsm_accept` of the drawn token, which is written to `*out_token`. `vocab` must equal both
/// the sampler's `vocab_size` and the FSM tokenizer's vocabulary. On error nothing is accepted.
///
/// Errors: as `ace_sampler_sample`; the FSM's errors (e.g. INVALID_STATE after completion); every
/// token masked → INVALID_STATE.
///
/// # Safety
/// `sampler` and `fsm` live handles (distinct objects, used by this thread only); `cond` (and
/// `uncond` when non-null) point to `vocab` floats; `out_token` to a `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn ace_lm_step(
    sampler: *mut AceSampler,
    fsm: *mut super::fsm::AceFsm,
    cond: *const f32,
    uncond: *const f32,
    vocab: usize,
    step: u64,
    out_token: *mut u32,
) -> AceStatus {
    guard(|| {
        let sampler = &mut ptr::handle_mut(sampler, "sampler")?.0;
        let fsm = &mut ptr::handle_mut(fsm, "fsm")?.inner;
        ptr::ensure_out(out_token, "out_token")?;
        ensure_vocab(sampler, vocab)?;
        let cond = ptr::slice_in(cond, vocab, "cond")?;
        let uncond = ptr::opt_slice_in(uncond, vocab, "uncond")?;
        let token = sampler.sample_with(cond, uncond, step, |logits| fsm.mask_logits(logits))?;
        fsm.accept(token)?;
        ptr::write_out(out_token, token, "out_token")
    })
}
