"""Quality of the core's 44.1 → 48 kHz resampler (``ace_resample``) against references.

Measures, with tones fitted by least squares (numpy only):
- passband gain: output amplitude of a unit tone at f, in dB (ripple = max |gain| up to 20 kHz);
- image rejection: for upsampling, a tone at f also leaks to 44.1 kHz − f (the spectral image the
  anti-imaging filter must remove); its level relative to the tone, in dB;
- residual: everything in the output that is neither the tone nor its image, in dB (noise floor);
- distance to the official resampler: torchaudio's ``Resample(44100, 48000)`` (sinc_interp_hann,
  lowpass_filter_width 6, rolloff 0.99; spec §9), written here in numpy from its algorithm, and to
  libsoxr (the ``soxr`` package, HQ) on band-limited noise. The numpy torchaudio matches
  torchaudio 2.9.1's ``functional.resample`` to 4.5e-5 on unit-variance noise (checked once by hand;
  torchaudio is not a project dependency).

``python -m tools.parity.resample_quality`` prints the table that ``docs/resampling.md`` quotes.
"""

from __future__ import annotations

import math

import numpy as np

IN_RATE, OUT_RATE = 44_100, 48_000


def torchaudio_resample(x: np.ndarray, orig: int = IN_RATE, new: int = OUT_RATE,
                        width_zc: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """torchaudio.functional.resample (sinc_interp_hann) in numpy: polyphase windowed sinc, kernel
    computed in float64 and used in float32, output length ceil(new·n/orig)."""
    g = math.gcd(orig, new)
    o, n_ = orig // g, new // g
    base = min(o, n_) * rolloff
    width = math.ceil(width_zc * o / base)
    idx = np.arange(-width, width + o, dtype=np.float64)[None, :] / o
    t = np.arange(0, -n_, -1, dtype=np.float64)[:, None] / n_ + idx
    t *= base
    t = np.clip(t, -width_zc, width_zc)
    window = np.cos(t * math.pi / width_zc / 2) ** 2
    t *= math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / t)
    k = (k * window * (base / o)).astype(np.float32)  # [n_, 2·width + o]
    x = np.atleast_2d(x).astype(np.float32)
    length = x.shape[-1]
    padded = np.pad(x, ((0, 0), (width, width + o)))
    frames = (padded.shape[-1] - k.shape[1]) // o + 1
    # conv1d with stride o: frame j covers padded[j·o : j·o + K]
    idx = np.arange(frames)[:, None] * o + np.arange(k.shape[1])[None, :]
    out = np.einsum("cjk,pk->cjp", padded[:, idx], k).reshape(x.shape[0], -1)
    target = math.ceil(n_ * length / o)
    return out[:, :target]


def _fit(y: np.ndarray, f: float, rate: int) -> tuple[float, np.ndarray]:
    """Least-squares amplitude of a tone at f in y, and y minus that tone."""
    n = np.arange(len(y))
    basis = np.stack([np.sin(2 * np.pi * f * n / rate), np.cos(2 * np.pi * f * n / rate)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    return float(np.hypot(*coef)), y - basis @ coef


def tone_metrics(resample, f: float, seconds: float = 0.5) -> tuple[float, float, float]:
    """(gain dB, image dB, residual dB) for a unit tone at f through ``resample([C, N]) -> [C, M]``."""
    n = int(IN_RATE * seconds)
    x = np.sin(2 * np.pi * f * np.arange(n) / IN_RATE).astype(np.float32)[None, :]
    y = resample(x)[0].astype(np.float64)
    edge = 4096  # skip the filters' start and end transients
    y = y[edge:-edge]
    a, rest = _fit(y, f, OUT_RATE)
    image = IN_RATE - f  # the image the anti-imaging filter must remove, folded at 24 kHz
    if image > OUT_RATE / 2:
        image = OUT_RATE - image
    b, rest = _fit(rest, image, OUT_RATE)
    db = lambda v: 20 * math.log10(max(v, 1e-20))
    return db(a), db(b), db(math.sqrt(2 * np.mean(rest**2)))


def bandlimited_noise(seconds: float = 1.0, cutoff: float = 20_000.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(IN_RATE * seconds)
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[np.fft.rfftfreq(n, 1 / IN_RATE) > cutoff] = 0
    x = np.fft.irfft(spec, n)
    return (0.25 * x / np.abs(x).max()).astype(np.float32)[None, :]


def rel_db(a: np.ndarray, ref: np.ndarray, edge: int = 4096) -> float:
    """Level of a − ref relative to ref (dB), edges excluded."""
    a, ref = a[..., edge:-edge].astype(np.float64), ref[..., edge:-edge].astype(np.float64)
    return 20 * math.log10(np.sqrt(np.mean((a - ref) ** 2)) / np.sqrt(np.mean(ref**2)))


FREQS = [20, 100, 1000, 5000, 10000, 15000, 18000, 19000, 20000, 21000, 21500]


def report() -> dict:
    from acestep_runtime.audio_resample import resample as core

    ours = lambda x: core(x, IN_RATE, OUT_RATE)
    refs = {"core (rubato)": ours, "torchaudio (official)": torchaudio_resample}
    try:
        import soxr

        refs["soxr HQ"] = lambda x: soxr.resample(x.T, IN_RATE, OUT_RATE, quality="HQ").T
    except ImportError:
        pass
    table = {name: {f: tone_metrics(fn, f) for f in FREQS} for name, fn in refs.items()}
    dist = {}
    for cutoff in (10_000.0, 20_000.0):
        noise = bandlimited_noise(cutoff=cutoff)
        mine = ours(noise)
        for name, fn in refs.items():
            if fn is not ours:
                dist[f"{name}, noise to {cutoff / 1000:.0f} kHz"] = rel_db(mine, fn(noise))
    return {"tones": table, "distance_db": dist}


def main() -> None:
    r = report()
    names = list(r["tones"])
    print("f (Hz) | " + " | ".join(f"{n}: gain / image / residual (dB)" for n in names))
    for f in FREQS:
        cells = [" / ".join(f"{v:.4f}" if i == 0 else f"{v:.1f}" for i, v in enumerate(r["tones"][n][f])) for n in names]
        print(f"{f} | " + " | ".join(cells))
    for name, d in r["distance_db"].items():
        print(f"core vs {name}: {d:.1f} dB")


if __name__ == "__main__":
    main()
