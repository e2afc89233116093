"""Frame math, VAE tile plan, output peak guard and track ids (wrappers over the core)."""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from ._native import call_string, check, cstr, ffi, lib

__all__ = [
    "SAMPLES_PER_FRAME",
    "TileWindow",
    "canonical_json",
    "dit_frames",
    "frames_from_duration",
    "peak_guard",
    "samples_from_frames",
    "track_id",
    "vae_tile_plan",
]

SAMPLES_PER_FRAME = 1920


def frames_from_duration(duration_s: float) -> int:
    """25 Hz latent frames: ``int(round(d, 1)·48000) // 1920`` for 10 s <= d <= 600 s."""
    out = ffi.new("uint32_t *")
    check(lib.ace_frames_from_duration(float(duration_s), out))
    return int(out[0])


def dit_frames(frames: int) -> int:
    """``max(128, frames)``: the length the DiT runs at (padding is silence latents)."""
    out = ffi.new("uint32_t *")
    check(lib.ace_frames_dit_length(_u32(frames, "frames"), out))
    return int(out[0])


def samples_from_frames(frames: int) -> int:
    """Audio samples per channel: ``1920·frames``."""
    out = ffi.new("uint64_t *")
    check(lib.ace_frames_to_samples(_u32(frames, "frames"), out))
    return int(out[0])


def _u32(value, name: str) -> int:
    v = int(value)
    if not 0 <= v < 2**32:
        raise ValueError(f"{name} must fit in uint32, got {value}")
    return v


class TileWindow(NamedTuple):
    """Decode latent frames ``[start, end)``; drop ``crop_left``/``crop_right`` samples at the ends;
    the kept audio covers latent frames ``[core_start, core_end)``."""

    start: int
    end: int
    core_start: int
    core_end: int
    crop_left: int
    crop_right: int


def vae_tile_plan(frames: int, chunk: int = 512, overlap: int = 64) -> list[TileWindow]:
    frames, chunk, overlap = _u32(frames, "frames"), _u32(chunk, "chunk"), _u32(overlap, "overlap")
    count = ffi.new("size_t *")
    check(lib.ace_vae_tile_count(frames, chunk, overlap, count))
    windows = ffi.new("AceTileWindow[]", count[0])
    check(lib.ace_vae_tile_plan(frames, chunk, overlap, windows, count[0], count))
    return [
        TileWindow(w.start, w.end, w.core_start, w.core_end, w.crop_left, w.crop_right)
        for w in (windows[i] for i in range(count[0]))
    ]


def peak_guard(audio: np.ndarray) -> np.ndarray:
    """In place on float32 C-contiguous ``[B, C, N]`` audio: if any item's peak exceeds 1, every
    item is divided by ``max(its peak, 1)``. Returns the peaks measured before the guard."""
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"audio must be a numpy.ndarray, got {type(audio).__name__}")
    if audio.dtype != np.float32:
        raise TypeError(f"audio must be float32, got {audio.dtype}")
    if audio.ndim != 3:
        raise ValueError(f"audio must be [batch, channels, samples], got shape {audio.shape}")
    if not audio.flags.c_contiguous or not audio.flags.writeable:
        raise ValueError("audio must be C-contiguous and writeable (the guard works in place)")
    b, c, n = audio.shape
    peaks = np.empty(b, dtype=np.float32)
    check(
        lib.ace_peak_guard(
            ffi.cast("float *", audio.ctypes.data), audio.size, b, c, n,
            ffi.cast("float *", peaks.ctypes.data), b,
        )
    )
    return peaks


def _params_text(params) -> bytes:
    if isinstance(params, str):
        return cstr(params, "params")
    if isinstance(params, dict):
        # allow_nan=False: the core rejects NaN/Infinity anyway; fail here with Python's message.
        return cstr(json.dumps(params, ensure_ascii=False, allow_nan=False), "params")
    raise TypeError(f"params must be a dict or a JSON string, got {type(params).__name__}")


def track_id(params) -> str:
    """SHA-256 hex of the canonical JSON of the generation parameters (see docs/dll_api.md)."""
    return call_string(lib.ace_track_id, _params_text(params))


def canonical_json(params) -> str:
    """The canonical JSON text that :func:`track_id` hashes."""
    return call_string(lib.ace_track_canonical_json, _params_text(params))
