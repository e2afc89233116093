"""Guidance for the DiT velocity (numpy wrappers over the core's ``ace_guidance_*`` / ``ace_apg_*``).

All buffers are float32 numpy arrays in C order; predictions are ``[B, T, C]`` (channels last).
Nothing is converted silently: a wrong dtype, layout or shape raises before the core is called.
"""

from __future__ import annotations

import json

import numpy as np

from ._native import NativeHandle, check, cstr, ffi, lib

__all__ = [
    "Apg",
    "cfg",
    "cfg_interval_active",
    "cfg_zero_star",
    "double_condition",
    "v1_call_guidance",
    "v1_guidance_interval",
    "v1_step_active",
]


def _f32(arr, name: str, ndim: int | None = None) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(arr).__name__}")
    if arr.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return arr


def _triple(cond, uncond, out, ndim: int | None = None):
    cond = _f32(cond, "cond", ndim)
    uncond = _f32(uncond, "uncond", ndim)
    if uncond.shape != cond.shape:
        raise ValueError(f"uncond has shape {uncond.shape} but cond has shape {cond.shape}")
    if out is None:
        out = np.empty_like(cond)
    else:
        out = _f32(out, "out", ndim)
        if out.shape != cond.shape:
            raise ValueError(f"out has shape {out.shape} but cond has shape {cond.shape}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        if np.shares_memory(out, cond) or np.shares_memory(out, uncond):
            raise ValueError("out must not share memory with cond or uncond")
    return cond, uncond, out


def _fptr(arr: np.ndarray):
    return ffi.cast("float *", arr.ctypes.data)


def cfg(cond: np.ndarray, uncond: np.ndarray, guidance_scale: float, out: np.ndarray | None = None) -> np.ndarray:
    """``uncond + g·(cond − uncond)`` in float32 (official ``cfg_forward``)."""
    cond, uncond, out = _triple(cond, uncond, out)
    check(lib.ace_guidance_cfg(_fptr(cond), _fptr(uncond), _fptr(out), cond.size, float(guidance_scale)))
    return out


def cfg_zero_star(
    cond: np.ndarray,
    uncond: np.ndarray,
    guidance_scale: float,
    step: int,
    zero_steps: int = 1,
    use_zero_init: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """CFG-Zero* (ACE-Step v1): α per batch item (axis 0) over all other axes; zeros when
    ``use_zero_init and step <= zero_steps``."""
    cond, uncond, out = _triple(cond, uncond, out)
    if cond.ndim < 2:
        raise ValueError(f"cond must have a batch axis and at least one more, got shape {cond.shape}")
    check(
        lib.ace_guidance_cfg_zero_star(
            _fptr(cond), _fptr(uncond), _fptr(out), cond.size, cond.shape[0],
            float(guidance_scale), int(step), int(zero_steps), bool(use_zero_init),
        )
    )
    return out


def cfg_interval_active(t: float, start: float = 0.0, end: float = 1.0) -> bool:
    """Base/SFT rule: guidance applies when ``start <= t <= end`` (inclusive, float32 compare)."""
    out = ffi.new("bool *")
    check(lib.ace_guidance_cfg_interval_active(float(t), float(start), float(end), out))
    return bool(out[0])


def v1_guidance_interval(num_steps: int, guidance_interval: float = 0.5) -> tuple[int, int]:
    """ACE-Step v1: guidance on steps ``start <= i < end``; default ``[int(.25N), int(.75N))``."""
    start = ffi.new("uint32_t *")
    end = ffi.new("uint32_t *")
    check(lib.ace_guidance_v1_interval(int(num_steps), float(guidance_interval), start, end))
    return int(start[0]), int(end[0])


def v1_step_active(step: int, num_steps: int, guidance_interval: float = 0.5) -> bool:
    out = ffi.new("bool *")
    check(lib.ace_guidance_v1_step_active(int(step), int(num_steps), float(guidance_interval), out))
    return bool(out[0])


class Apg(NativeHandle):
    """Adaptive projected guidance with its momentum buffer (one object per generate call).

    ``Apg()`` uses the official settings (momentum −0.75, norm threshold 2.5, eta 0). Use as a
    context manager or call :meth:`close`; the object is also freed when garbage-collected.
    """

    _free_name = "ace_apg_free"

    def __init__(self, momentum: float = -0.75, norm_threshold: float = 2.5, eta: float = 0.0, *,
                 config_json: str | None = None):
        if config_json is None:
            config_json = json.dumps(
                {"momentum": float(momentum), "norm_threshold": float(norm_threshold), "eta": float(eta)}
            )
        out = ffi.new("AceApg **")
        check(lib.ace_apg_create(cstr(config_json, "config_json"), out))
        self._own(out[0])

    def apply(self, cond: np.ndarray, uncond: np.ndarray, guidance_scale: float,
              out: np.ndarray | None = None) -> np.ndarray:
        """Guided velocity for one step; ``cond``/``uncond`` float32 ``[B, T, C]``."""
        handle = self.ptr
        cond, uncond, out = _triple(cond, uncond, out, ndim=3)
        b, t, c = cond.shape
        check(lib.ace_apg_apply(handle, _fptr(cond), _fptr(uncond), _fptr(out), cond.size, b, t, c,
                                float(guidance_scale)))
        return out

    def apply_v1(self, cond: np.ndarray, uncond: np.ndarray, guidance_scale: float,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Guided velocity for a v1 latent ``[B, C, H, T]``: statistics per (batch, channel) over
        (H, T), i.e. ``[B·C, H·T, 1]`` for the core."""
        handle = self.ptr
        cond, uncond, out = _triple(cond, uncond, out, ndim=4)
        b, c, h, t = cond.shape
        check(lib.ace_apg_apply(handle, _fptr(cond), _fptr(uncond), _fptr(out), cond.size, b * c, h * t, 1,
                                float(guidance_scale)))
        return out

    def reset(self) -> None:
        check(lib.ace_apg_reset(self.ptr))

    @property
    def calls(self) -> int:
        out = ffi.new("uint64_t *")
        check(lib.ace_apg_calls(self.ptr, out))
        return int(out[0])



def double_condition(cond: np.ndarray, text_only: np.ndarray, uncond: np.ndarray, guidance_scale_text: float,
                     guidance_scale_lyric: float, out: np.ndarray | None = None) -> np.ndarray:
    """ACE-Step v1 double-condition guidance:
    ``(1 − g_text)·uncond + (g_text − g_lyric)·text_only + g_lyric·cond`` (any shape, float32)."""
    cond, uncond, out = _triple(cond, uncond, out)
    text_only = _f32(text_only, "text_only")
    if text_only.shape != cond.shape:
        raise ValueError(f"text_only has shape {text_only.shape} but cond has shape {cond.shape}")
    if np.shares_memory(out, text_only):
        raise ValueError("out must not share memory with text_only")
    check(lib.ace_guidance_double_condition(_fptr(cond), _fptr(text_only), _fptr(uncond), _fptr(out), cond.size,
                                            float(guidance_scale_text), float(guidance_scale_lyric)))
    return out


def v1_call_guidance(call: int, num_steps: int, guidance_interval: float = 0.5, guidance_scale: float = 15.0,
                     min_guidance_scale: float = 3.0, guidance_interval_decay: float = 0.0) -> tuple[bool, float]:
    """(guided, scale) of ACE-Step v1 model call ``call`` (0-based; Heun makes 2N − 1 calls, the
    interval still comes from N)."""
    active = ffi.new("bool *")
    scale = ffi.new("double *")
    check(lib.ace_guidance_v1_call(int(call), int(num_steps), float(guidance_interval), float(guidance_scale),
                                   float(min_guidance_scale), float(guidance_interval_decay), active, scale))
    return bool(active[0]), float(scale[0])
