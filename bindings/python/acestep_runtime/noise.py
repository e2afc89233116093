"""Seeded, torch-compatible Gaussian noise from the core (``ace_noise_fill``).

``randn((1, 250, 64), 42)`` returns exactly what
``torch.randn((1, 250, 64), generator=torch.Generator().manual_seed(42))`` returns on an x86-64
CPU with AVX2 (float32, bit for bit), without importing torch. ``mode="torch_cuda"`` reproduces
torch's CUDA Philox mapping instead. See ``docs/noise.md``.
"""

from __future__ import annotations

import json
import operator
from typing import Sequence

import numpy as np

from ._native import NativeHandle, check, cstr, ffi, lib

MODES = ("torch_cpu", "torch_cuda")
_OPTIONS = {
    "torch_cpu": {"cpu_kernel"},
    "torch_cuda": {"sm_count", "max_threads_per_sm", "bf16", "offset"},
}


def _shape_tuple(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    for i, d in enumerate(dims):
        if d <= 0:
            raise ValueError(f"shape {dims}: dimension {i} is {d}; every dimension must be >= 1")
    return dims


def _checked_generator_args(seed, mode: str, options: dict) -> tuple[str, int]:
    """The options JSON and the int64 seed of a generator, or a clear error for a bad mode, option or
    seed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    unknown = set(options) - _OPTIONS[mode]
    if unknown:
        raise TypeError(f"unknown option(s) for mode {mode!r}: {sorted(unknown)}; allowed: {sorted(_OPTIONS[mode])}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed {seed} does not fit in int64")
    return json.dumps({"mode": mode, **{k: v for k, v in options.items() if v is not None}}), seed


def randn(shape: int | Sequence[int], seed: int, mode: str = "torch_cpu", **options) -> tuple[np.ndarray, int]:
    """Standard normal float32 noise of ``shape`` from a freshly seeded generator.

    ``seed`` >= 0 is used as is (``torch_cpu`` uses its low 32 bits, like torch); a negative seed
    draws a random one. Returns ``(array, seed_used)``; passing ``seed_used`` back reproduces the
    array.

    Options for ``mode="torch_cpu"``: ``cpu_kernel="avx2"`` (default; torch on x86-64 with AVX2)
    or ``"baseline"`` (torch's portable kernel, ``ATEN_CPU_CAPABILITY=default``).
    Options for ``mode="torch_cuda"``: ``sm_count`` (None: no grid cap), ``max_threads_per_sm``
    (2048), ``bf16`` (False; True rounds every value to bfloat16, returned as float32),
    ``offset`` (0).
    """
    options_json, seed = _checked_generator_args(seed, mode, options)
    dims = _shape_tuple(shape)
    numel = int(np.prod(dims, dtype=np.int64)) if dims else 1
    out = np.empty(dims, dtype=np.float32)
    shape_c = ffi.new("size_t[]", list(dims) or [0])
    seed_used = ffi.new("int64_t *")
    check(
        lib.ace_noise_fill(
            cstr(options_json, "options"),
            seed,
            shape_c,
            len(dims),
            ffi.cast("float *", out.ctypes.data),
            numel,
            seed_used,
        )
    )
    return out, int(seed_used[0])


class NoiseStream(NativeHandle):
    """One seeded generator used for several draws (``ace_noise_stream_*``).

    ``NoiseStream(seed).randn(shape)`` called repeatedly gives what successive
    ``torch.randn(shape, generator=g)`` / ``torch.empty(shape).normal_(generator=g)`` calls give for
    ``g = torch.Generator().manual_seed(seed)``; the first draw equals :func:`randn`. ACE-Step v1's
    PingPong sampler continues the initial noise's generator this way. ``seed_used`` is the seed
    actually used (a negative seed draws a random one). Modes and options as for :func:`randn`.
    """

    _free_name = "ace_noise_stream_free"

    def __init__(self, seed: int, mode: str = "torch_cpu", **options):
        options_json, seed = _checked_generator_args(seed, mode, options)
        seed_used = ffi.new("int64_t *")
        out = ffi.new("AceNoiseStream **")
        check(lib.ace_noise_stream_create(cstr(options_json, "options"), seed, seed_used, out))
        self._own(out[0])
        self.seed_used = int(seed_used[0])

    def randn(self, shape: int | Sequence[int]) -> np.ndarray:
        """The next draw, float32 of ``shape``."""
        handle = self.ptr
        dims = _shape_tuple(shape)
        out = np.empty(dims, dtype=np.float32)
        check(lib.ace_noise_stream_fill(handle, ffi.cast("float *", out.ctypes.data), out.size))
        return out
