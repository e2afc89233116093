"""Sample-rate conversion from the core (``ace_resample``): ACE-Step v1's vocoder runs at
44.1 kHz and outputs are 48 kHz. Quality figures: ``docs/resampling.md``."""

from __future__ import annotations

import numpy as np

from ._native import check, ffi, lib


def resampled_frames(frames: int, in_rate: int, out_rate: int) -> int:
    """``ceil(frames·out_rate/in_rate)``, exact."""
    out = ffi.new("uint64_t *")
    check(lib.ace_resample_frames(int(frames), int(in_rate), int(out_rate), out))
    return int(out[0])


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Converts float32 ``[channels, frames]`` (or ``[frames]``) audio; returns the same layout."""
    if not isinstance(audio, np.ndarray) or audio.dtype != np.float32:
        raise TypeError("audio must be a float32 numpy array")
    if audio.ndim not in (1, 2):
        raise ValueError(f"audio must be [frames] or [channels, frames], got shape {audio.shape}")
    x = np.ascontiguousarray(audio.reshape(1, -1) if audio.ndim == 1 else audio)
    channels, frames = x.shape
    n = resampled_frames(frames, in_rate, out_rate)
    out = np.empty((channels, n), dtype=np.float32)
    check(lib.ace_resample(ffi.cast("float *", x.ctypes.data), x.size, channels, int(in_rate), int(out_rate),
                           ffi.cast("float *", out.ctypes.data), out.size))
    return out.reshape(-1) if audio.ndim == 1 else out
