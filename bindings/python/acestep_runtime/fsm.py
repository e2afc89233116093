"""The LM's constrained-decoding state machine (spec §5.4), one object per sequence."""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np

from ._native import NativeHandle, call_string, check, cstr, ffi, lib
from .tokenizer import Tokenizer, _ids_array, _u32


class LmFsm(NativeHandle):
    """Per-sequence FSM. Per token: ``mask_logits(logits)`` → sample → ``accept(token)``.

    ``config`` keys (all optional): phase ("cot" | "codes"), stop_at_reasoning, skip_caption,
    skip_language, skip_genres (default True), batched, user_metadata {bpm, caption, duration,
    genres, keyscale, language, timesignature}, target_duration (s), max_duration (600), genres
    (list), eos_token, pad_token, valid_audio_codes (64000). See docs/lm_fsm.md.
    """

    _free_name = "ace_fsm_free"

    def __init__(self, tokenizer: Tokenizer, config: dict[str, Any] | str | None = None):
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be an acestep_runtime.tokenizer.Tokenizer, got {type(tokenizer).__name__}")
        if config is None:
            text = "{}"
        elif isinstance(config, str):
            text = config
        elif isinstance(config, dict):
            text = json.dumps(config)
        else:
            raise TypeError(f"config must be a dict, a JSON string or None, got {type(config).__name__}")
        out = ffi.new("AceFsm **")
        check(lib.ace_fsm_create(tokenizer.ptr, cstr(text, "config"), out))
        self._own(out[0])
        self.vocab_size = tokenizer.vocab_size

    def reset(self, prompt_ids: Iterable[int] | np.ndarray = ()) -> None:
        """Starts a new sequence; in phase "codes" a prompt containing ``</think>`` starts in CODES_GENERATION."""
        arr = _ids_array(prompt_ids, "prompt_ids")
        check(lib.ace_fsm_reset_with_prompt(self.ptr, ffi.cast("const uint32_t *", arr.ctypes.data), arr.size))

    def _check_logits(self, logits: np.ndarray, name: str) -> None:
        if not isinstance(logits, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(logits).__name__}")
        if logits.dtype != np.float32:
            raise TypeError(f"{name} must be float32, got {logits.dtype}")
        if logits.ndim != 1 or logits.shape[0] != self.vocab_size:
            raise ValueError(f"{name} must have shape ({self.vocab_size},), got {logits.shape}")
        if not logits.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")

    def mask_logits(self, logits: np.ndarray) -> np.ndarray:
        """Masks ``logits`` (float32, shape (vocab,), contiguous, writeable) in place; returns it."""
        self._check_logits(logits, "logits")
        if not logits.flags.writeable:
            raise ValueError("logits must be writeable")
        check(lib.ace_fsm_mask_logits(self.ptr, ffi.cast("float *", logits.ctypes.data), logits.size))
        return logits

    def masked(self, logits: np.ndarray) -> np.ndarray:
        """Returns a masked copy (``ace_apply_lm_constraints``)."""
        self._check_logits(logits, "logits")
        out = np.empty_like(logits)
        check(lib.ace_apply_lm_constraints(
            self.ptr, ffi.cast("const float *", logits.ctypes.data), logits.size, ffi.cast("float *", out.ctypes.data)))
        return out

    def accept(self, token: int) -> None:
        check(lib.ace_fsm_accept(self.ptr, _u32(token, "token")))

    def state(self) -> dict[str, Any]:
        """State name and counters (state, position, codes_count, caption_token_count, ...)."""
        return json.loads(call_string(lib.ace_fsm_state_json, self.ptr))

    @property
    def state_name(self) -> str:
        return self.state()["state"]

    @property
    def completed(self) -> bool:
        return bool(self.state()["completed"])


__all__ = ["LmFsm"]
