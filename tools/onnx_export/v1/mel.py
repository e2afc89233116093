"""Log-mel front end of the encode path (spec §9, `music_log_mel.py`): reflect-pad 768, STFT n_fft 2048 /
hop 512 / periodic Hann / no centring, magnitude sqrt(re² + im² + 1e-6), slaney mel 40–16000 Hz
(slaney norm), log(clamp(x, 1e-5)). The STFT is a strided Conv1d with a windowed DFT basis (exportable)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def hann_periodic(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)


def _hz_to_mel_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_fb(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """[n_fft/2+1, n_mels] triangular filters on the slaney mel scale with slaney (area) normalisation."""
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    pts = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2))
    diff = np.diff(pts)
    slopes = pts[None, :] - freqs[:, None]                      # [F, n_mels+2]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb *= (2.0 / (pts[2:n_mels + 2] - pts[:n_mels]))[None, :]
    return fb


class LogMel(nn.Module):
    def __init__(self, sample_rate=44100, n_fft=2048, hop=512, n_mels=128, f_min=40.0, f_max=16000.0):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.pad = (n_fft - hop) // 2  # 768
        n_freq = n_fft // 2 + 1
        win = hann_periodic(n_fft)
        k = np.arange(n_freq)[:, None] * np.arange(n_fft)[None, :] * (2 * np.pi / n_fft)
        basis = np.concatenate([np.cos(k) * win, -np.sin(k) * win], axis=0)   # [2F, n_fft]
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.float32)[:, None, :], persistent=False)
        self.register_buffer("fb", torch.tensor(slaney_mel_fb(sample_rate, n_fft, n_mels, f_min, f_max),
                                                dtype=torch.float32), persistent=False)
        self.n_freq = n_freq
        # a buffer, not a literal: the exporter's optimizer drops tiny additive constants (see layers.py)
        self.register_buffer("mag_eps", torch.tensor([1e-6]), persistent=False)

    def forward(self, audio):  # [N, S] -> [N, n_mels, S/hop]
        p = self.pad
        # reflect padding written out (F.pad reflect adds an n != 1 guard in the exporter)
        x = torch.cat([audio[:, 1:p + 1].flip(-1), audio, audio[:, -p - 1:-1].flip(-1)], dim=-1)[:, None]
        spec = F.conv1d(x, self.basis, stride=self.hop)                        # [N, 2F, frames]
        re, im = spec[:, :self.n_freq], spec[:, self.n_freq:]
        mag = torch.sqrt(re * re + im * im + self.mag_eps)
        mel = F.conv1d(mag, self.fb.t()[:, :, None])                           # [N, n_mels, frames]
        return torch.log(torch.clamp(mel, min=1e-5))
