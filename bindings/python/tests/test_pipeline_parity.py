"""End-to-end parity: the torch-free Python host (ONNX package + Rust core) against the independent PyTorch
reference (tools/parity/torch_reference.py) on the tiny checkpoints and the package exported from them.

The reference shares no code with the host or the core: prompts, tokenization, frames, schedule, noise,
solver loop, tiled decode and peak guard are written there from the spec, and the networks run as torch
modules (transformers Qwen3Model, the exporter's torch modules, diffusers AutoencoderOobleck).

Requests: one with lyrics and metadata at 11.0 s (T = 275, odd: exercises the DiT's patch padding), one
instrumental without metadata at 24.0 s (T = 600 > 512: the VAE decode is tiled), one with 20 LM codes
(cover instruction, detokenized hints padded to 128 frames with silence), SDE sampling without a shift,
custom timesteps; plus a batch of 2 seeds, which must equal the two single runs. Tolerances: final
latents max_abs ≤ 1e-4, audio SNR ≥ 60 dB. Measured (tiny package, 2026-11): max_abs ≈ 6e-6, SNR ≈ 127 dB.
The non-neural pieces (frames, schedules, tile plan, peak guard, prompts and tokens) are also compared
directly, core vs reference, over sweeps.
"""
from __future__ import annotations

import numpy as np
import pytest

from acestep_runtime.pipeline import Pipeline
from tools.parity.fixtures import tiny_checkpoints_dir, tiny_package_dir
from tools.parity.torch_reference import run_reference

LATENT_TOL = 1e-4
MIN_SNR_DB = 60.0

WITH_LYRICS = {
    "caption": "An upbeat synth-pop track with bright pads and a punchy kick",
    "lyrics": "[Verse 1]\nNeon lights across the bay\nWe keep dancing till the day\n\n[Chorus]\nOh oh oh",
    "vocal_language": "en", "bpm": 120, "keyscale": "A minor", "timesignature": "4",
    "duration": 11.0, "shift": 3.0, "infer_method": "ode",
}
INSTRUMENTAL = {
    "caption": "ambient drone, slowly evolving textures", "lyrics": "", "instrumental": True,
    "duration": 24.0, "shift": 2.0, "infer_method": "ode",
}
# LM codes (cover path): 20 codes = 100 frames, padded to the 128-frame minimum with silence_latent[:, :28].
# The official handler (`_prepare_batch`: `pad_chunk = silence_latent[:, :pad_length, :]`) pads hints with the
# FIRST frames of the silence latent, not with frames 100..127; the tiny silence latent varies over time, so
# the two choices give different songs.
WITH_CODES = {
    "caption": "lo-fi hip hop beat", "lyrics": "[Verse]\nslow night", "vocal_language": "en", "duration": 10,
    "audio_codes": [(i * 7919) % 64000 for i in range(20)], "shift": 3.0, "infer_method": "ode",
}
# SDE with the core's documented seed policy (ε of step i, item b from manual_seed(seed_b + i + 1)), and no
# shift given (turbo default 3.0)
WITH_SDE = dict({k: v for k, v in WITH_LYRICS.items() if k != "shift"}, infer_method="sde")
# custom timesteps (spec §4.1 example: trailing 0 dropped, values snapped to VALID_TIMESTEPS), 12 s → T = 300
WITH_TIMESTEPS = dict(INSTRUMENTAL, duration=12.0, timesteps=[0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0])
CASES = {"lyrics_11s": (WITH_LYRICS, 42, 275), "instrumental_24s": (INSTRUMENTAL, 7, 600),
         "codes_20": (WITH_CODES, 9, 128), "sde_11s": (WITH_SDE, 21, 275), "timesteps_12s": (WITH_TIMESTEPS, 5, 300)}
BATCH_SEEDS = [5, 6]


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((test.astype(np.float64) - reference) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0.0 else 10.0 * np.log10(signal / noise)


@pytest.fixture(scope="session")
def checkpoints():
    return tiny_checkpoints_dir()


@pytest.fixture(scope="session")
def pipeline():
    with Pipeline.open(tiny_package_dir()) as pipe:
        yield pipe


def host_run(pipeline, request: dict, seeds: list[int]):
    # The DiT path against the torch reference: the tiny package's LM (on by default) is turned off.
    return pipeline.generate(dict(request, thinking=False, seeds=list(seeds), batch_size=len(seeds)))


@pytest.fixture(scope="session")
def runs(pipeline, checkpoints):
    """case → (host result, reference dict), both single-item."""
    return {name: (host_run(pipeline, req, [seed]), run_reference(checkpoints, req, seeds=[seed]))
            for name, (req, seed, _) in CASES.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_host_prompts_frames_schedule_match_reference(runs, case):
    host, ref = runs[case]
    assert host.frames == ref["frames"] == CASES[case][2]
    assert host.prompts["dit_caption"] == ref["caption_prompt"]
    assert host.prompts["dit_lyrics"] == ref["lyric_prompt"]
    np.testing.assert_allclose(host.schedule, ref["schedule"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_host_latents_match_reference(runs, case):
    host, ref = runs[case]
    assert host.latents.shape == ref["latents"].shape
    err = float(np.max(np.abs(host.latents - ref["latents"])))
    hint = " (LM hints shorter than T are padded with silence_latent[:, :pad], see WITH_CODES)" if case == "codes_20" else ""
    assert err <= LATENT_TOL, f"{case}: final latent max_abs {err:.3g} > {LATENT_TOL}{hint}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_host_audio_matches_reference(runs, case):
    host, ref = runs[case]
    assert host.audio.shape == ref["audio"].shape == (1, 2, 1920 * CASES[case][2])
    assert host.audio.dtype == np.float32
    snr = snr_db(ref["audio"], host.audio)
    assert snr >= MIN_SNR_DB, f"{case}: audio SNR {snr:.1f} dB < {MIN_SNR_DB} dB"


def test_batch_of_two_equals_single_runs(pipeline, checkpoints):
    batch = host_run(pipeline, WITH_LYRICS, BATCH_SEEDS)
    ref_batch = run_reference(checkpoints, WITH_LYRICS, seeds=BATCH_SEEDS)
    assert batch.latents.shape == (2, 275, 64) and batch.audio.shape == (2, 2, 1920 * 275)
    for i, seed in enumerate(BATCH_SEEDS):
        single = host_run(pipeline, WITH_LYRICS, [seed])
        err = float(np.max(np.abs(batch.latents[i] - single.latents[0])))
        assert err <= LATENT_TOL, f"batch item {i} vs single run: latent max_abs {err:.3g}"
        assert snr_db(single.audio[0], batch.audio[i]) >= MIN_SNR_DB
        err_ref = float(np.max(np.abs(batch.latents[i] - ref_batch["latents"][i])))
        assert err_ref <= LATENT_TOL, f"batch item {i} vs reference: latent max_abs {err_ref:.3g}"
    # different seeds really give different songs
    assert float(np.max(np.abs(batch.latents[0] - batch.latents[1]))) > 0.1


def test_peak_guard_matches_reference():
    """The tiny model's songs peak near 0.2, so the guard never engages above; check the host's guard
    (core) against the reference's on audio where one item is too loud."""
    import torch

    from acestep_runtime.frames import peak_guard as host_peak_guard
    from tools.parity.torch_reference import peak_guard as ref_peak_guard

    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((3, 2, 4800)) * 0.3).astype(np.float32)
    audio[1, 1, 100] = -3.5
    audio[2] *= 0.1
    want, want_peaks = ref_peak_guard(torch.from_numpy(audio.copy()))
    got = audio.copy()
    peaks = host_peak_guard(got)
    np.testing.assert_allclose(peaks, want_peaks, rtol=0, atol=0)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-7, atol=0)
    assert np.abs(got[1]).max() == pytest.approx(1.0) and np.array_equal(got[2], audio[2])


def test_frame_count_matches_reference_over_the_duration_range():
    """int(round(d, 1)·48000) // 1920 in float64, with its float traps (10.2 s → 254, not 255): every 0.01 s
    from 10 to 600 s plus an off-grid sweep, host (core) vs reference."""
    from acestep_runtime.frames import frames_from_duration
    from tools.parity.torch_reference import frames_for_duration

    durations = [round(10 + i * 0.01, 2) for i in range(59001)] + [10 + i * 0.0137 for i in range(43000)]
    bad = [(d, frames_from_duration(d), frames_for_duration(d)) for d in durations
           if frames_from_duration(d) != frames_for_duration(d)]
    assert not bad, f"{len(bad)} durations differ, e.g. (duration, host, reference): {bad[:5]}"
    assert frames_from_duration(10.2) == 254


def test_schedules_match_reference():
    """Turbo shift snapping and the custom-timestep rules, core vs reference, on a random sweep."""
    from acestep_runtime.schedule import custom_schedule, turbo_schedule
    from tools.parity.torch_reference import resolve_schedule

    for shift in np.round(np.linspace(0.05, 6.0, 120), 3).tolist() + [1.5, 2.5]:
        np.testing.assert_allclose(turbo_schedule(shift), resolve_schedule(shift), rtol=0, atol=1e-7)
    rng = np.random.default_rng(0)
    for _ in range(400):
        n = int(rng.integers(0, 26))
        ts = rng.random(n).round(int(rng.integers(1, 7))).tolist() + [0.0] * int(rng.integers(0, 3))
        got = custom_schedule(ts, fallback_shift=2.0)
        want = resolve_schedule(2.0, ts)
        assert len(got) == len(want), ts
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7, err_msg=str(ts))


def _official_examples() -> list[dict]:
    import json
    from pathlib import Path

    cases = Path(__file__).resolve().parents[3] / "fixtures" / "cases"
    return [json.loads(p.read_text(encoding="utf-8"))["request"] for p in sorted(cases.glob("text2music_*.json"))]


def test_prompts_and_tokens_match_reference_for_official_examples(checkpoints, pipeline):
    """DiT caption/lyric prompts and their token ids, as the core's generation driver makes them
    (template, tokenizer, HF-style truncation), against the reference's spec templates and
    `tokenizers`, for every fixture case and three variants of the first."""
    from tools.parity import torch_reference as ref

    requests = []
    for r in _official_examples():
        requests.append({k: r[k] for k in ("caption", "lyrics", "vocal_language", "bpm", "keyscale",
                                           "timesignature", "duration") if k in r})
    first = requests[0]
    # variants: instrumental; no metadata with a caption of ~390 tokens (truncated to 256); LM codes (cover)
    requests += [dict(first, instrumental=True), {"caption": first["caption"] * 3, "lyrics": "", "duration": 61.9},
                 dict(first, audio_codes=[1, 2, 3])]
    tok_json = checkpoints / ref.TEXT_DIR / "tokenizer.json"
    truncated = 0
    for req in requests:
        plan = pipeline.plan(dict(req, thinking=False))
        cap, lyr = ref.build_prompts(req)
        assert plan["prompts"]["dit_caption"] == cap
        assert plan["prompts"]["dit_lyrics"] == lyr
        assert plan["tokens"]["caption"] == ref.tokenize(tok_json, cap, ref.CAPTION_MAX_LENGTH)
        assert plan["tokens"]["lyrics"] == ref.tokenize(tok_json, lyr, ref.LYRIC_MAX_LENGTH)
        truncated += len(plan["tokens"]["caption"]) == ref.CAPTION_MAX_LENGTH
    assert truncated >= 1  # the long caption exercised truncation


def test_vae_tile_plan_matches_reference_windows():
    """The core's tile plan (windows and sample crops) against the windows the reference's tiled decode
    actually decodes, for every T from 1 to 1200 and around later multiples of the stride up to 15000."""
    import torch

    from acestep_runtime.frames import vae_tile_plan
    from tools.parity.torch_reference import HOP, tiled_decode

    sizes = list(range(1, 1201)) + [k * 384 + d for k in (4, 5, 7, 15, 38) for d in (-1, 0, 1)] + [6000, 15000]
    for frames in sizes:
        marker = torch.arange(frames, dtype=torch.float32).reshape(1, 1, frames)
        seen = []

        def decode(z):
            start, end = int(z[0, 0, 0]), int(z[0, 0, -1]) + 1
            seen.append((start, end))
            return torch.zeros(1, 1, 1).expand(1, 1, (end - start) * HOP)

        total = tiled_decode(decode, marker).shape[-1]
        plan = vae_tile_plan(frames)
        assert [(w.start, w.end) for w in plan] == seen, frames
        kept = sum((w.end - w.start) * HOP - w.crop_left - w.crop_right for w in plan)
        assert kept == total == frames * HOP, frames
        for w in plan:
            assert w.crop_left == (w.core_start - w.start) * HOP and w.crop_right == (w.end - w.core_end) * HOP
