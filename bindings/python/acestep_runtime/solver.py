"""Solver steps and the scheduling context from the core (spec §4.1, §4.3, §4.5; v1 samplers).

Arrays are float32 and C-contiguous; inputs of another float dtype are converted, other dtypes are
rejected. Every function returns a new array.

``Context`` drives one generation::

    with Context({"model": "turbo", "shift": 3.0}) as ctx:
        x = noise
        for i in range(ctx.num_steps):
            v = dit(x, ctx.timestep_input(i))
            x = ctx.step(i, x, v)      # the last step returns x0
"""

from __future__ import annotations

import json
import math

import numpy as np

from ._native import NativeHandle, call_string, check, cstr, ffi, lib


def _f32(name: str, a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _same_shape(ref: np.ndarray, name: str, arr: np.ndarray) -> None:
    if arr.shape != ref.shape:
        raise ValueError(f"{name} has shape {arr.shape} but xt has shape {ref.shape}")


def _scalar(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _fp(arr: np.ndarray, const: bool = True):
    return ffi.cast("const float *" if const else "float *", arr.ctypes.data)


def _xv(xt, vt, eps=None):
    x = _f32("xt", xt)
    v = _f32("vt", vt)
    _same_shape(x, "vt", v)
    if eps is None:
        return x, v
    e = _f32("eps", eps)
    _same_shape(x, "eps", e)
    return x, v, e


def ode_step(xt, vt, t: float, t_next: float) -> np.ndarray:
    """x − v·(t − t_next) (dt cast to float32 first, as the reference does)."""
    x, v = _xv(xt, vt)
    out = np.empty_like(x)
    check(lib.ace_solver_ode_step(_fp(x), _fp(v), x.size, _scalar("t", t), _scalar("t_next", t_next), _fp(out, False)))
    return out


def x0_step(xt, vt, t: float) -> np.ndarray:
    """x0 = x − v·t (the final step)."""
    x, v = _xv(xt, vt)
    out = np.empty_like(x)
    check(lib.ace_solver_x0(_fp(x), _fp(v), x.size, _scalar("t", t), _fp(out, False)))
    return out


def sde_step(xt, vt, eps, t: float, t_next: float) -> np.ndarray:
    """t_next·ε + (1 − t_next)·(x − v·t)."""
    x, v, e = _xv(xt, vt, eps)
    out = np.empty_like(x)
    check(
        lib.ace_solver_sde_step(
            _fp(x), _fp(v), _fp(e), x.size, _scalar("t", t), _scalar("t_next", t_next), _fp(out, False)
        )
    )
    return out


def _seeds(seeds, batch_hint: int):
    seeds = [int(s) for s in np.asarray(seeds, dtype=object).reshape(-1)]
    if not seeds:
        raise ValueError("seeds is empty: give one seed per batch item")
    for s in seeds:
        if not 0 <= s < 2**64:
            raise ValueError(f"seed {s} is outside 0..2**64-1")
    if batch_hint % len(seeds):
        raise ValueError(f"{len(seeds)} seeds cannot split a batch of {batch_hint} items")
    return ffi.new("uint64_t[]", seeds), len(seeds)


def _noise_json(noise):
    if noise is None:
        return ffi.NULL
    if isinstance(noise, dict):
        noise = json.dumps(noise)
    return cstr(noise, "noise")


def sde_step_seeded(xt, vt, seeds, t: float, t_next: float, noise=None) -> np.ndarray:
    """``sde_step`` with ε drawn by the core: item b of the leading axis gets
    ``randn`` seeded with ``seeds[b]`` (``noise``: ``ace_noise_fill`` options, default torch CPU)."""
    x, v = _xv(xt, vt)
    seeds_c, n = _seeds(seeds, x.shape[0])
    out = np.empty_like(x)
    check(
        lib.ace_solver_sde_step_seeded(
            _fp(x), _fp(v), x.size, seeds_c, n, _noise_json(noise), _scalar("t", t), _scalar("t_next", t_next),
            _fp(out, False),
        )
    )
    return out


def pingpong_step_seeded(xt, vt, seeds, sigma: float, sigma_next: float, noise=None) -> np.ndarray:
    """``pingpong_step`` with ε drawn by the core, as in ``sde_step_seeded``."""
    x, v = _xv(xt, vt)
    seeds_c, n = _seeds(seeds, x.shape[0])
    out = np.empty_like(x)
    check(
        lib.ace_solver_pingpong_step_seeded(
            _fp(x), _fp(v), x.size, seeds_c, n, _noise_json(noise), _scalar("sigma", sigma),
            _scalar("sigma_next", sigma_next), _fp(out, False),
        )
    )
    return out


def omega(omega_scale: float = 10.0) -> float:
    """v1's ω = 0.9 + 0.2 / (1 + exp(−0.1·omega_scale))."""
    out = ffi.new("double *")
    check(lib.ace_solver_omega(_scalar("omega_scale", omega_scale), out))
    return float(out[0])


def euler_omega_step(xt, vt, sigma: float, sigma_next: float, omega_scale: float = 10.0) -> np.ndarray:
    """v1 Euler with the ω mean shift (mean over the whole array)."""
    x, v = _xv(xt, vt)
    out = np.empty_like(x)
    check(
        lib.ace_solver_euler_omega_step(
            _fp(x), _fp(v), x.size, _scalar("sigma", sigma), _scalar("sigma_next", sigma_next),
            _scalar("omega_scale", omega_scale), _fp(out, False),
        )
    )
    return out


def pingpong_step(xt, vt, eps, sigma: float, sigma_next: float) -> np.ndarray:
    """v1 PingPong: (1 − σ_next)·(x − σ·v) + σ_next·ε."""
    x, v, e = _xv(xt, vt, eps)
    out = np.empty_like(x)
    check(
        lib.ace_solver_pingpong_step(
            _fp(x), _fp(v), _fp(e), x.size, _scalar("sigma", sigma), _scalar("sigma_next", sigma_next),
            _fp(out, False),
        )
    )
    return out


class Heun(NativeHandle):
    """v1 two-stage Heun solver. Per interval σ → σ_next: ``step(x, v(x, σ), σ, σ_next)`` returns
    the prediction (stage 1); ``step(pred, v(pred, σ_next), σ, σ_next)`` returns the corrected x
    (stage 2). The final interval to σ = 0 is stage 1 only (then ``reset()``)."""

    _free_name = "ace_heun_free"

    def __init__(self, omega_scale: float = 10.0):
        out = ffi.new("AceHeun **")
        check(lib.ace_heun_create(_scalar("omega_scale", omega_scale), out))
        self._own(out[0])

    @property
    def next_stage(self) -> int:
        out = ffi.new("int *")
        check(lib.ace_heun_next_stage(self.ptr, out))
        return int(out[0])

    def step(self, xt, vt, sigma: float, sigma_next: float) -> np.ndarray:
        x, v = _xv(xt, vt)
        out = np.empty_like(x)
        stage = ffi.new("int *")
        check(
            lib.ace_heun_step(
                self.ptr, _fp(x), _fp(v), x.size, _scalar("sigma", sigma),
                _scalar("sigma_next", sigma_next), _fp(out, False), stage,
            )
        )
        return out

    def reset(self) -> None:
        check(lib.ace_heun_reset(self.ptr))


class Context(NativeHandle):
    """A scheduling context (``ace_create_context``). ``config`` is a dict or a JSON string:
    ``{"model": "turbo"|"base"|"sft", "shift", "steps", "timesteps", "method": "ode"|"sde",
    "bf16_timesteps", "seeds", "noise", "cover_noise_strength", "audio_cover_strength"}``.
    Latents are float32 [B, T, C]."""

    _free_name = "ace_free_context"

    def __init__(self, config):
        if isinstance(config, dict):
            config = json.dumps(config)
        if not isinstance(config, str):
            raise TypeError(f"config must be a dict or a JSON string, got {type(config).__name__}")
        out = ffi.new("AceContext **")
        check(lib.ace_create_context(cstr(config, "config"), out))
        self._own(out[0])

    @property
    def num_steps(self) -> int:
        out = ffi.new("size_t *")
        check(lib.ace_context_num_steps(self.ptr, out))
        return int(out[0])

    @property
    def timesteps(self) -> np.ndarray:
        n = self.num_steps
        out = np.empty(n, dtype=np.float32)
        check(lib.ace_context_timesteps(self.ptr, _fp(out, False), n))
        return out

    @property
    def info(self) -> dict:
        return json.loads(call_string(lib.ace_context_info, self.ptr))

    def _index(self, step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return int(step)

    def step_inputs(self, step: int) -> dict:
        return json.loads(call_string(lib.ace_prepare_step_inputs, self.ptr, self._index(step)))

    def timestep_input(self, step: int) -> float:
        out = ffi.new("float *")
        check(lib.ace_context_timestep_input(self.ptr, self._index(step), out))
        return float(out[0])

    def _latents(self, xt, vt, eps=None):
        arrays = _xv(xt, vt, eps)
        if arrays[0].ndim != 3:
            raise ValueError(f"xt must have shape [B, T, C], got shape {arrays[0].shape}")
        return arrays

    def initial_latents(self, noise, src=None) -> np.ndarray:
        """The starting latents: ``noise``, or t*·noise + (1 − t*)·src with cover noise."""
        n = _f32("noise", noise)
        if n.ndim != 3:
            raise ValueError(f"noise must have shape [B, T, C], got shape {n.shape}")
        s = None
        if src is not None:
            s = _f32("src", src)
            if s.shape != n.shape:
                raise ValueError(f"src has shape {s.shape} but noise has shape {n.shape}")
        out = np.empty_like(n)
        shape = ffi.new("size_t[]", list(n.shape))
        check(
            lib.ace_context_initial_latents(
                self.ptr, _fp(n), ffi.NULL if s is None else _fp(s), shape, 3, _fp(out, False), n.size
            )
        )
        return out

    def step(self, step: int, xt, vt, eps=None) -> np.ndarray:
        """Applies step ``step`` (ODE, SDE or the final x0). ``eps`` replaces the seeded SDE noise."""
        i = self._index(step)
        arrays = self._latents(xt, vt, eps)
        x, v = arrays[0], arrays[1]
        out = np.empty_like(x)
        shape = ffi.new("size_t[]", list(x.shape))
        if eps is None:
            check(lib.ace_scheduler_step(self.ptr, i, _fp(x), _fp(v), shape, 3, _fp(out, False), x.size))
        else:
            check(
                lib.ace_scheduler_step_with_noise(
                    self.ptr, i, _fp(x), _fp(v), _fp(arrays[2]), shape, 3, _fp(out, False), x.size
                )
            )
        return out

    def step_inplace(self, step: int, xt: np.ndarray, vt) -> None:
        """Like ``step`` but updates ``xt`` (float32, C-contiguous, [B, T, C]) in place."""
        if not isinstance(xt, np.ndarray) or xt.dtype != np.float32 or not xt.flags.c_contiguous or not xt.flags.writeable:
            raise TypeError("xt must be a writable, C-contiguous float32 numpy array for step_inplace")
        i = self._index(step)
        x, v = self._latents(xt, vt)
        shape = ffi.new("size_t[]", list(x.shape))
        check(lib.ace_scheduler_step_inplace(self.ptr, i, _fp(xt, False), _fp(v), shape, 3, x.size))
