"""Timestep schedules from the core (spec §4.1–4.3; v1 σ grid).

ACE-Step 1.5 schedules (``turbo_schedule``, ``custom_schedule``, ``base_schedule``) return the N
timesteps at which the DiT runs, as float32; the terminal 0 is implicit (the last step is
x0 = x_t − v·t_last). ``v1_sigmas`` returns N + 1 values ending with the appended 0.
"""

from __future__ import annotations

import math
import operator
from typing import Sequence

import numpy as np

from ._native import check, ffi, lib

TURBO_SHIFTS = (1.0, 2.0, 3.0)
MAX_CUSTOM_TIMESTEPS = 20


def _shift(shift, name: str = "shift") -> float:
    if isinstance(shift, bool) or not isinstance(shift, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(shift).__name__}")
    shift = float(shift)
    if not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {shift}")
    return shift


def _steps(steps) -> int:
    try:
        steps = operator.index(steps)
    except TypeError:
        raise TypeError(f"steps must be an int, got {type(steps).__name__}") from None
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return steps


def _call_schedule(fn, capacity: int, *args) -> np.ndarray:
    out = np.empty(capacity, dtype=np.float32)
    n = ffi.new("size_t *")
    check(fn(*args, ffi.cast("float *", out.ctypes.data), capacity, n))
    return out[: n[0]].copy()


def turbo_shift(shift: float) -> float:
    """The turbo shift ``shift`` resolves to: nearest of 1, 2, 3 (ties to the earlier)."""
    out = ffi.new("double *")
    check(lib.ace_schedule_turbo_shift(_shift(shift), out))
    return float(out[0])


def turbo_schedule(shift: float = 3.0) -> np.ndarray:
    """The 8-entry turbo schedule of the nearest turbo shift, float32."""
    return _call_schedule(lib.ace_schedule_turbo, 8, _shift(shift))


def custom_schedule(timesteps: Sequence[float], fallback_shift: float = 3.0) -> np.ndarray:
    """A turbo schedule from custom timesteps (official rules: drop trailing zeros, fall back to
    the shift schedule when empty, keep the first 20, snap each to the nearest valid turbo
    timestep with ties to the earlier one; no sort, no dedup). Values must lie in [0, 1]."""
    try:
        ts = np.ascontiguousarray(np.asarray(timesteps, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise TypeError(f"timesteps must be a sequence of numbers, got {timesteps!r}") from None
    ptr = ffi.cast("const double *", ts.ctypes.data) if ts.size else ffi.NULL
    return _call_schedule(lib.ace_schedule_custom, 32, ptr, ts.size, _shift(fallback_shift, "fallback_shift"))


def base_schedule(steps: int, shift: float = 1.0) -> np.ndarray:
    """The base/SFT schedule: linspace(1, 0, steps + 1) shifted when shift != 1, without the
    final 0 (``steps`` values)."""
    steps = _steps(steps)
    return _call_schedule(lib.ace_schedule_base, steps, steps, _shift(shift))


def v1_default_sigma_min(shift: float = 3.0) -> float:
    """σ_min the v1 schedulers start from by default: shift(1/1000) in float32."""
    out = ffi.new("double *")
    check(lib.ace_schedule_v1_default_sigma_min(_shift(shift), out))
    return float(out[0])


def v1_sigmas(steps: int, shift: float = 3.0, sigma_max: float = 1.0, sigma_min: float | None = None) -> np.ndarray:
    """The v1 σ grid (``steps`` + 1 values ending with 0). The model timestep of step i is
    1000·σ_i. ``sigma_min`` defaults to ``v1_default_sigma_min(shift)``."""
    steps = _steps(steps)
    shift = _shift(shift)
    if sigma_min is None:
        sigma_min = v1_default_sigma_min(shift)
    return _call_schedule(
        lib.ace_schedule_v1_sigmas, steps + 1, steps, shift, float(sigma_max), float(sigma_min)
    )


def bf16_round(values) -> np.ndarray:
    """Rounds float32 values to the nearest bfloat16 (ties to even), returned as float32."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    out = np.empty_like(arr)
    if arr.size == 0:
        return out
    check(lib.ace_bf16_round(ffi.cast("const float *", arr.ctypes.data), ffi.cast("float *", out.ctypes.data), arr.size))
    return out


def bf16_timesteps(schedule) -> np.ndarray:
    """A schedule as a bf16 reference run holds it (spec §4.2)."""
    return bf16_round(schedule)


def bf16_timesteps_x1000(schedule) -> np.ndarray:
    """bf16(1000·bf16(t)): what a bf16 run's timestep embedding sees (spec §4.2)."""
    return bf16_round(np.float32(1000.0) * bf16_round(schedule))
