"""LM token sampling in the core: CFG → (mask) → temperature → top-k → top-p → seeded draw.

A :class:`Sampler` holds reusable scratch buffers for one vocabulary; call :meth:`Sampler.sample`
once per generated token with the conditional and unconditional logits of that step. The draw is
a pure function of ``(seed, step)`` (see ``docs/lm_prompts.md``), so a run is reproducible.
"""

from __future__ import annotations

import json

import numpy as np

from ._native import NativeHandle, check, cstr, ffi, lib

__all__ = ["Sampler"]


def _logits_arg(name: str, arr, vocab: int):
    """Validates a float32 C-contiguous 1-D row of ``vocab`` values; returns (array, cffi pointer)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != vocab:
        raise ValueError(f"{name} must have shape ({vocab},), got {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return arr, ffi.cast("const float *", ffi.from_buffer(arr))


class Sampler(NativeHandle):
    """Per-sequence LM sampler.

    Parameters mirror the official ``GenerationParams``: ``temperature`` (0 = greedy), ``top_k``
    (0 = off), ``top_p`` (1 = off), ``cfg_scale`` (1 = no CFG), and ``seed``/``vocab_size``.
    """

    _free_name = "ace_sampler_free"

    def __init__(self, seed: int, *, temperature: float = 0.85, top_k: int = 0, top_p: float = 0.9,
                 cfg_scale: float = 2.0, vocab_size: int = 217204):
        config = {"seed": int(seed), "temperature": float(temperature), "top_k": int(top_k),
                  "top_p": float(top_p), "cfg_scale": float(cfg_scale), "vocab_size": int(vocab_size)}
        self._init_from_json(json.dumps(config))

    @classmethod
    def from_json(cls, config_json: str) -> "Sampler":
        """Creates a sampler from the raw JSON config of ``ace_sampler_create``."""
        self = cls.__new__(cls)
        self._init_from_json(config_json)
        return self

    def _init_from_json(self, config_json: str) -> None:
        out = ffi.new("AceSampler **")
        check(lib.ace_sampler_create(cstr(config_json, "config_json"), out))
        self._own(out[0])
        self.config = json.loads(config_json)
        self.vocab_size = int(self.config.get("vocab_size", 217204))
        self._token = ffi.new("uint32_t *")

    def sample(self, cond: np.ndarray, uncond: np.ndarray | None, step: int) -> int:
        """One token from the CFG-combined logits of this step (``uncond`` may be None only when
        ``cfg_scale`` is 1)."""
        handle = self.ptr
        _, c = _logits_arg("cond", cond, self.vocab_size)
        u = ffi.NULL if uncond is None else _logits_arg("uncond", uncond, self.vocab_size)[1]
        check(lib.ace_sampler_sample(handle, c, u, self.vocab_size, int(step), self._token))
        return int(self._token[0])

    def sample_logits(self, logits: np.ndarray, step: int) -> int:
        """One token from logits already combined and masked (-inf = forbidden)."""
        handle = self.ptr
        _, p = _logits_arg("logits", logits, self.vocab_size)
        check(lib.ace_sampler_sample_logits(handle, p, self.vocab_size, int(step), self._token))
        return int(self._token[0])

    def step_with_fsm(self, fsm, cond: np.ndarray, uncond: np.ndarray | None, step: int) -> int:
        """One constrained step (``ace_lm_step``): CFG → ``fsm``'s mask → draw → ``fsm.accept``.
        ``fsm`` is an :class:`acestep_runtime.fsm.LmFsm` over the same vocabulary."""
        handle = self.ptr
        _, c = _logits_arg("cond", cond, self.vocab_size)
        u = ffi.NULL if uncond is None else _logits_arg("uncond", uncond, self.vocab_size)[1]
        check(lib.ace_lm_step(handle, fsm.ptr, c, u, self.vocab_size, int(step), self._token))
        return int(self._token[0])

    def cfg(self, cond: np.ndarray, uncond: np.ndarray | None) -> np.ndarray:
        """The CFG-combined logits ``u + g*(c - u)`` (fp32), or a copy of ``cond`` at g = 1."""
        handle = self.ptr
        _, c = _logits_arg("cond", cond, self.vocab_size)
        u = ffi.NULL if uncond is None else _logits_arg("uncond", uncond, self.vocab_size)[1]
        out = np.empty(self.vocab_size, dtype=np.float32)
        check(lib.ace_sampler_cfg(handle, c, u, self.vocab_size, ffi.cast("float *", ffi.from_buffer(out))))
        return out

