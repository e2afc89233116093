//! Caps on the sizes a caller controls, checked before anything is allocated.
//!
//! An allocation failure aborts the whole host process (Rust's allocation error handler cannot be
//! caught by the panic guard), so a size that comes from the caller (a step count, a vocabulary
//! size, a string) is checked against these caps, and size arithmetic is checked, before memory is
//! reserved for it. Each cap sits far above any real ACE-Step use; `docs/reliability.md` lists them.
//! The header exports them as `ACE_MAX_*` (see cbindgen.toml), so a host can check before calling.
//! Buffers the caller hands in (latents, logits, audio) are not capped: their memory already
//! exists, and the core allocates at most a copy of them.

use crate::error::{Error, Result};

/// Most diffusion steps of a schedule (base/SFT `steps`, v1 σ grids): the models are trained on a
/// 1000-step grid, so more steps than that cannot be distinct timesteps.
pub const MAX_STEPS: usize = 1000;

/// Most batch items (seeds) of one context.
pub const MAX_BATCH: usize = 256;

/// Largest LM vocabulary a sampler is sized for (the ACE-Step 5 Hz LMs have 217 204 ids).
pub const MAX_VOCAB: usize = 4_194_304; // 2^22

/// Longest string argument, in bytes, the NUL excluded (a Qwen3 `tokenizer.json` with the audio
/// codes is about 12 MB).
pub const MAX_STRING_BYTES: usize = 67_108_864; // 64 MiB

/// Largest file the core reads (a `tokenizer.json`).
pub const MAX_FILE_BYTES: u64 = 268_435_456; // 256 MiB

/// Fails with INVALID_ARGUMENT unless `value <= max`; `what` names the argument.
pub fn ensure_at_most(value: usize, max: usize, what: &str) -> Result<()> {
    if value > max {
        return Err(Error::invalid_argument(format!(
            "{what} is {value}, above the limit of {max}"
        )));
    }
    Ok(())
}
