"""ACE-Step v1 numerics of the core against independent numpy written here from the v1 fact sheet
(`shared/spec/ace_step_v1.md` §6 schedulers, §7 guidance, §9 resampling), plus torch for the
generator stream. Latents are v1's [B, 8, 16, T]. Every reference below follows the spec's text,
not the core's code: float32 where the official code works in float32, float64 where it says so."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from acestep_runtime import AceError
from acestep_runtime import audio_resample as R
from acestep_runtime import guidance as G
from acestep_runtime import noise as N
from acestep_runtime import schedule as S
from acestep_runtime import solver as V

f32 = np.float32
SHAPE = (2, 8, 16, 13)  # odd T on purpose


# ----------------------------------------------------------------------------------------------
# numpy references (spec §6, §7)


def ref_sigmas(n: int, shift: float = 3.0) -> np.ndarray:
    """§6: σ_train = shift(linspace(1, 1000, 1000)[::-1] / 1000) in float32; σ_min = its last
    entry; σ = shift(linspace(1000·1, 1000·σ_min, N) / 1000) in float64 → float32; append 0."""
    train = np.linspace(1, 1000, 1000, dtype=np.float32)[::-1] / np.float32(1000)
    s = f32(shift)
    train = s * train / (f32(1) + (s - f32(1)) * train)
    sigma_min, sigma_max = float(train[-1]), float(train[0])
    t = np.linspace(sigma_max * 1000, sigma_min * 1000, n) / 1000
    sig = (shift * t / (1 + (shift - 1) * t)).astype(np.float32)
    return np.concatenate([sig, np.zeros(1, np.float32)])


def omega(scale: float) -> float:
    return 0.9 + 0.2 / (1 + math.exp(-0.1 * scale))


def ref_euler(x, v, s, sn, scale):
    """§6 Euler: dx = (σ' − σ)·v (float32 scalar difference); m = mean over the whole tensor."""
    dx = (f32(sn) - f32(s)) * v
    m = f32(dx.astype(np.float64).mean())
    return x + ((dx - m) * f32(omega(scale)) + m)


def ref_shift(x, dx, scale):
    m = f32(dx.astype(np.float64).mean())
    return x + ((dx - m) * f32(omega(scale)) + m)


class RefApg:
    """§7 APG on [B, C, H, T]: per (b, c) statistics over (H, T), momentum buffer −0.75 updated on
    guided calls only, projection in float64."""

    def __init__(self):
        self.running = None

    def __call__(self, cond, uncond, g):
        c = cond.astype(np.float64)
        d = c - uncond.astype(np.float64)
        self.running = d if self.running is None else d + (-0.75) * self.running
        d = self.running
        norm = np.sqrt((d * d).sum(axis=(2, 3), keepdims=True))
        with np.errstate(divide="ignore"):
            d = d * np.minimum(1.0, 2.5 / norm)
        v = c / np.maximum(np.sqrt((c * c).sum(axis=(2, 3), keepdims=True)), 1e-12)
        par = (d * v).sum(axis=(2, 3), keepdims=True) * v
        return c + (g - 1) * (d - par)


def ref_guidance_interval(n, gi):
    return int(n * ((1 - gi) / 2)), int(n * (gi * 0.5 + 0.5))


def fake_decode(x, sigma, which):
    """Stands in for the DiT: a smooth velocity field that differs per condition."""
    k = {"cond": f32(0.8), "uncond": f32(0.3), "text": f32(0.5)}[which]
    return (k * x + f32(sigma) * f32(0.7) - f32(0.2) * np.roll(x, 1, axis=-1)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# σ grid


@pytest.mark.parametrize("n", [1, 2, 27, 60, 100])
def test_sigma_grid_is_bit_exact_and_doubly_shifted(n):
    got = S.v1_sigmas(n, 3.0)
    np.testing.assert_array_equal(got, ref_sigmas(n))
    assert S.v1_default_sigma_min(3.0) == pytest.approx(0.0029940119, abs=5e-10)  # spec prints 8 digits
    if n > 1:  # the terminal σ is shift(σ_min) = 0.0089286, not σ_min (§11.2)
        assert got[-2] == pytest.approx(0.0089286, abs=1e-7)
    # model timestep = 1000·σ in float32
    assert (got[:-1] * f32(1000)).dtype == np.float32


def test_sigma_grid_spec_values():
    s60, s27 = S.v1_sigmas(60), S.v1_sigmas(27)
    np.testing.assert_allclose(s60[:3], [1.0, 0.994303, 0.9884747], atol=5e-7)
    np.testing.assert_allclose(s60[-4:], [0.1028077, 0.0573939, 0.0089286, 0.0], atol=5e-7)
    np.testing.assert_allclose(s27[:3], [1.0, 0.9868825, 0.9730582], atol=5e-7)
    np.testing.assert_allclose(s27[-4:], [0.2061979, 0.1145501, 0.0089286, 0.0], atol=5e-7)


# ----------------------------------------------------------------------------------------------
# solvers


def test_euler_omega_mean_spans_the_batch(rng):
    x = rng.standard_normal(SHAPE).astype(f32)
    v = (rng.standard_normal(SHAPE) + np.array([0.5, -0.5]).reshape(2, 1, 1, 1)).astype(f32)
    sig = S.v1_sigmas(60)
    s, sn = float(sig[20]), float(sig[21])
    got = V.euler_omega_step(x, v, s, sn, 10.0)
    np.testing.assert_allclose(got, ref_euler(x, v, s, sn, 10.0), rtol=0, atol=3e-7)
    # per-item calls give another result: the mean is over the batch (§12.5)
    alone = V.euler_omega_step(x[:1].copy(), v[:1].copy(), s, sn, 10.0)
    assert np.abs(alone - got[:1]).max() > 1e-5


def run_v1_loop(sampler, n, *, cfg_type="apg", gi=0.5, g=15.0, g_text=0.0, g_lyric=0.0, decay=0.0,
                seed=7, core=True, rng=None):
    """One v1 diffusion loop (§6–§7) with fake_decode, either through the core (core=True) or
    through the numpy/torch references. Returns the final latent and the list of guided calls."""
    sig = (S.v1_sigmas(n) if core else ref_sigmas(n)).astype(np.float64)
    shape = (1,) + SHAPE[1:]
    if core:
        stream = N.NoiseStream(seed)
        x = stream.randn(shape)
    else:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=gen).numpy()
    apg = G.Apg() if core else RefApg()
    heun = V.Heun(10.0) if (core and sampler == "heun") else None
    start, end = ref_guidance_interval(n, gi)
    double = g_text > 1 and g_lyric > 1
    guided = []
    calls = 2 * n - 1 if sampler == "heun" else n
    # (σ of this call, σ_next) per call
    if sampler == "heun":
        plan = []
        for k in range(n):
            plan.append((sig[k], sig[k + 1], 1))
            if sig[k + 1] != 0:
                plan.append((sig[k], sig[k + 1], 2))
    else:
        plan = [(sig[k], sig[k + 1], 1) for k in range(n)]
    assert len(plan) == calls
    pending = None
    for i, (s, sn, stage) in enumerate(plan):
        at = sn if stage == 2 else s  # the 2nd Heun stage evaluates at σ_next
        if core:
            active, gs = G.v1_call_guidance(i, n, gi, g, 3.0, decay)
        else:
            active = g not in (0.0, 1.0) and start <= i < end
            gs = g - (g - 3.0) * ((i - start) / (end - start - 1)) * decay if (active and decay > 0) else g
        cond = fake_decode(x, at, "cond")
        if active:
            guided.append(i)
            uncond = fake_decode(x, at, "uncond")
            if double:
                text = fake_decode(x, at, "text")
                if core:
                    v = G.double_condition(cond, text, uncond, g_text, g_lyric)
                else:
                    v = (f32(1 - g_text) * uncond + f32(g_text - g_lyric) * text) + f32(g_lyric) * cond
            elif cfg_type == "apg":
                v = apg.apply_v1(cond, uncond, gs) if core else apg(cond, uncond, gs).astype(f32)
            elif cfg_type == "cfg":
                v = G.cfg(cond, uncond, gs) if core else uncond + f32(gs) * (cond - uncond)
            else:  # cfg_star, zero_steps 1
                if core:
                    v = G.cfg_zero_star(cond, uncond, gs, i, 1, True)
                elif i <= 1:
                    v = cond * f32(0)
                else:
                    c, u = cond.reshape(1, -1).astype(np.float64), uncond.reshape(1, -1).astype(np.float64)
                    a = (c * u).sum() / ((u * u).sum() + 1e-8)
                    v = (u * a + gs * (c - u * a)).reshape(cond.shape).astype(f32)
        else:
            v = cond
        if sampler == "euler":
            x = V.euler_omega_step(x, v, s, sn, 10.0) if core else ref_euler(x, v, s, sn, 10.0)
        elif sampler == "pingpong":
            if core:
                x0 = x - f32(s) * v
                eps = stream.randn(shape)
                x = V.pingpong_step(x, v, eps, s, sn)
            else:
                x0 = x - f32(s) * v
                eps = torch.empty(shape).normal_(generator=gen).numpy()  # the same generator (§12.10)
                x = f32(1 - f32(sn)) * x0 + f32(sn) * eps
        else:  # heun, §6: derivatives via the x0 estimate, ω on both stages, last call plain Euler
            if core:
                x = heun.step(x, v, s, sn)
                if sn == 0:
                    heun.reset()
            elif stage == 1:
                d1 = (x - (x - v * f32(s))) / f32(s)
                dt = f32(sn) - f32(s)
                pending = (x, d1, dt)
                x = ref_shift(x, d1 * dt, 10.0)
            else:
                x_prev, d1, dt = pending
                d2 = (x - (x - v * f32(sn))) / f32(sn)
                x = ref_shift(x_prev, (f32(0.5) * (d1 + d2)) * dt, 10.0)
    return x, guided


@pytest.mark.parametrize("sampler", ["euler", "heun", "pingpong"])
def test_full_loops_match_the_references(sampler):
    n = 12
    got, guided = run_v1_loop(sampler, n)
    want, want_guided = run_v1_loop(sampler, n, core=False)
    assert guided == want_guided == list(range(3, 9))  # [int(0.25·12), int(0.75·12)) on N, also for Heun
    err = np.abs(got - want).max()
    assert err < 2e-6 * max(1.0, np.abs(want).max()), err  # measured ≤ 4.8e-7
    assert np.isfinite(got).all() and np.abs(got).max() > 0.1


@pytest.mark.parametrize("cfg_type", ["cfg", "cfg_star"])
def test_loops_with_cfg_and_cfg_zero_star(cfg_type):
    # gi = 1 puts calls 0 and 1 inside the interval, so CFG-Zero*'s zero init (i <= 1) shows
    got, guided = run_v1_loop("euler", 8, cfg_type=cfg_type, gi=1.0, g=4.0)
    want, _ = run_v1_loop("euler", 8, cfg_type=cfg_type, gi=1.0, g=4.0, core=False)
    assert guided == list(range(8))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * max(1.0, np.abs(want).max()))


def test_loop_with_double_condition_and_decay():
    kw = dict(g_text=5.0, g_lyric=2.5, decay=1.0, gi=0.8)
    got, _ = run_v1_loop("euler", 10, **kw)
    want, _ = run_v1_loop("euler", 10, core=False, **kw)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * max(1.0, np.abs(want).max()))


def test_pingpong_noise_continues_the_initial_generator():
    gen = torch.Generator().manual_seed(1234)
    with N.NoiseStream(1234) as s:
        for shape in [(1, 8, 16, 13), (1, 8, 16, 13), (2, 8, 16, 5), (7,), (3,), (5,)]:
            want = torch.empty(shape).normal_(generator=gen).numpy()
            np.testing.assert_array_equal(s.randn(shape), want)
    # first draw = ace_noise_fill with the same seed
    a, _ = N.randn((1, 8, 16, 13), 99)
    np.testing.assert_array_equal(N.NoiseStream(99).randn((1, 8, 16, 13)), a)


def test_cuda_stream_advances_the_philox_offset():
    # torch's CUDA normal_ reserves ((numel − 1) // (G·4) + 1)·4 offsets per launch (G = threads)
    shape = (1, 8, 16, 13)
    s = N.NoiseStream(5, mode="torch_cuda")
    s.randn(shape)
    second = s.randn(shape)
    want, _ = N.randn(shape, 5, mode="torch_cuda", offset=4)  # 1664 values fit one round
    np.testing.assert_array_equal(second, want)


# ----------------------------------------------------------------------------------------------
# guidance pieces


def test_apg_v1_statistics_are_per_batch_and_channel(rng):
    cond = rng.standard_normal(SHAPE).astype(f32)
    uncond = (cond + 0.3 * rng.standard_normal(SHAPE)).astype(f32)
    ref = RefApg()
    with G.Apg() as apg:
        for _ in range(3):
            got = apg.apply_v1(cond, uncond, 15.0)
            want = ref(cond, uncond, 15.0)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
            cond, uncond = uncond, cond
    # a whole-tensor norm (the summary's reading) gives something else
    with G.Apg() as apg:
        flat = apg.apply(cond.reshape(1, -1, 1).copy(), uncond.reshape(1, -1, 1).copy(), 15.0)
    assert np.abs(flat.reshape(SHAPE) - RefApg()(cond, uncond, 15.0)).max() > 1e-3


def test_double_condition_matches_numpy(rng):
    c, t, u = (rng.standard_normal(SHAPE).astype(f32) for _ in range(3))
    got = G.double_condition(c, t, u, 5.0, 2.5)
    want = (1 - 5.0) * u.astype(np.float64) + (5.0 - 2.5) * t + 2.5 * c.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-6)
    with pytest.raises(ValueError, match="text_only"):
        G.double_condition(c, t[:1].copy(), u, 5.0, 2.5)
    bad = t.copy()
    bad.flat[3] = np.nan
    with pytest.raises(AceError, match="text_only contains a non-finite value"):
        G.double_condition(c, bad, u, 5.0, 2.5)


@pytest.mark.parametrize("n, gi", [(60, 0.5), (27, 0.5), (12, 1.0), (10, 0.3), (7, 0.0)])
def test_call_guidance_counts_the_interval_on_n(n, gi):
    start, end = ref_guidance_interval(n, gi)
    for call in range(2 * n - 1):  # Heun's calls; Euler/PingPong use the first n
        active, scale = G.v1_call_guidance(call, n, gi, 15.0, 3.0, 0.0)
        assert active == (start <= call < end)
        assert scale == (15.0 if active else 0.0)
    with pytest.raises(AceError, match="out of range"):
        G.v1_call_guidance(2 * n - 1, n, gi)


def test_call_guidance_decay_and_off_switches():
    start, end = ref_guidance_interval(60, 0.5)
    for call in range(start, end):
        _, scale = G.v1_call_guidance(call, 60, 0.5, 15.0, 3.0, 0.5)
        assert scale == pytest.approx(15.0 - (15.0 - 3.0) * ((call - start) / (end - start - 1)) * 0.5, abs=1e-12)
    assert G.v1_call_guidance(20, 60, 0.5, 1.0) == (False, 0.0)  # g ∈ {0, 1}: no CFG at all
    assert G.v1_call_guidance(20, 60, 0.5, 0.0) == (False, 0.0)
    with pytest.raises(AceError, match="at least 2 steps"):
        G.v1_call_guidance(1, 4, 0.25, 15.0, 3.0, 1.0)  # [1, 2): the official code divides by zero


# ----------------------------------------------------------------------------------------------
# 44.1 → 48 kHz


def test_resampled_length_follows_the_spec():
    assert R.resampled_frames(8 * 4096, 44_100, 48_000) == 35_666  # §2: T = 8
    for t in [1, 645, 2583]:
        assert R.resampled_frames(t * 4096, 44_100, 48_000) == -(-t * 4096 * 160 // 147)
    out = R.resample(np.zeros((2, 8 * 4096), np.float32), 44_100, 48_000)
    assert out.shape == (2, 35_666) and not out.any()


def test_resampler_quality():
    from tools.parity.resample_quality import FREQS, IN_RATE, OUT_RATE, bandlimited_noise, rel_db, tone_metrics
    from tools.parity.resample_quality import torchaudio_resample

    ours = lambda x: R.resample(x, IN_RATE, OUT_RATE)
    for f in FREQS:
        gain, image, residual = tone_metrics(ours, f, seconds=0.25)
        assert abs(gain) < 0.001, (f, gain)  # passband flat to 1/1000 dB up to 21.5 kHz
        assert image < -120 and residual < -120, (f, image, residual)
    # against the official torchaudio resampler: close in the band where it is flat
    noise = bandlimited_noise(cutoff=10_000.0)
    assert rel_db(ours(noise), torchaudio_resample(noise)) < -55
    # stereo channels are independent
    x = bandlimited_noise(seconds=0.2)
    both = ours(np.concatenate([x, -x]))
    np.testing.assert_array_equal(both[0], -both[1])
    np.testing.assert_array_equal(both[0], ours(x)[0])


def test_resampler_bad_input():
    with pytest.raises(AceError, match="in_rate 0"):
        R.resample(np.zeros((1, 10), np.float32), 0, 48_000)
    x = np.zeros((2, 100), np.float32)
    x[1, 5] = np.inf
    with pytest.raises(AceError, match="non-finite"):
        R.resample(x, 44_100, 48_000)
    from acestep_runtime._native import ffi, lib

    a = ffi.new("float[10]")
    o = ffi.new("float[20]")
    assert lib.ace_resample(a, 10, 3, 44_100, 48_000, o, 20) == lib.ACE_STATUS_LENGTH_MISMATCH
    assert lib.ace_resample(a, 10, 2, 44_100, 48_000, o, 20) == lib.ACE_STATUS_LENGTH_MISMATCH  # needs 12
    assert lib.ace_resample(a, 10, 2, 44_100, 48_000, o, 12) == lib.ACE_STATUS_OK
    assert lib.ace_resample(a, 10, 2, 44_100, 48_000, ffi.cast("float *", a), 12) == lib.ACE_STATUS_INVALID_ARGUMENT
    assert lib.ace_resample(ffi.NULL, 10, 2, 44_100, 48_000, o, 12) == lib.ACE_STATUS_NULL_POINTER
