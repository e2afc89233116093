"""Self-checks of the PyTorch reference (tools/parity/torch_reference.py), independent of the host.

Expected values are the spec's tables and templates written out here, or direct computations (a full
VAE decode, torch.randn), never values produced by the reference itself.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.parity import torch_reference as ref
from tools.parity.fixtures import tiny_checkpoints_dir

# the official example requests, shipped unchanged in the repo
EXAMPLES = Path(__file__).resolve().parents[3] / "fixtures" / "official_examples" / "text2music"
EOT = 151643
NEWLINE = 198


@pytest.fixture(scope="session")
def ckpt() -> Path:
    return tiny_checkpoints_dir()


# --- schedule (spec §4.1 table and rules) ---------------------------------------------------------------

SPEC_TABLE = {
    1: [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125],
    2: [1.0, 0.93333, 0.85714, 0.76923, 0.66667, 0.54545, 0.4, 0.22222],
    3: [1.0, 0.95455, 0.9, 0.83333, 0.75, 0.64286, 0.5, 0.3],
}
SPEC_VALID = [1.0, 0.954545, 0.933333, 0.9, 0.875, 0.857142, 0.833333, 0.769230, 0.75, 0.666666, 0.642857,
              0.625, 0.545454, 0.5, 0.4, 0.375, 0.3, 0.25, 0.222222, 0.125]


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_turbo_schedule_matches_spec_table(shift):
    np.testing.assert_allclose(ref.turbo_schedule(shift), SPEC_TABLE[shift], atol=6e-6)


@pytest.mark.parametrize("requested,used", [(0.0, 1), (1.49, 1), (1.5, 1), (1.51, 2), (2.5, 2), (2.51, 3), (7.0, 3)])
def test_shift_snaps_to_nearest_with_ties_to_earlier(requested, used):
    assert ref.turbo_schedule(requested) == ref.turbo_schedule(used)
    np.testing.assert_allclose(ref.turbo_schedule(requested), SPEC_TABLE[used], atol=6e-6)


def test_valid_timesteps_are_the_spec_list():
    got = ref.valid_timesteps()
    assert len(got) == 20
    np.testing.assert_allclose(got, SPEC_VALID, atol=1e-6)


def test_custom_timesteps_spec_example():
    got = ref.resolve_schedule(3.0, [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0])
    np.testing.assert_allclose(got, [0.954545, 0.769231, 0.625, 0.5, 0.4, 0.3, 0.222222, 0.125], atol=1e-6)


def test_custom_timesteps_rules():
    # only trailing zeros dropped, no sort, no de-duplication
    assert ref.resolve_schedule(3.0, [0.3, 1.0, 1.0, 0.0, 0.0]) == [0.3, 1.0, 1.0]
    # all zeros / empty → shift schedule
    assert ref.resolve_schedule(2.0, [0.0, 0.0]) == ref.turbo_schedule(2.0)
    assert ref.resolve_schedule(1.0, []) == ref.turbo_schedule(1.0)
    # more than 20 → first 20
    assert len(ref.resolve_schedule(3.0, [0.5] * 25)) == 20
    # values outside [0, 1] snap to the ends
    assert ref.resolve_schedule(3.0, [1.7, -0.2]) == [1.0, 0.125]


# --- frames (spec §3.1, §3.2) -----------------------------------------------------------------------------

@pytest.mark.parametrize("duration,frames", [(10, 250), (240, 6000), (24, 600), (11.0, 275), (10.04, 250),
                                             # round(10.2, 1) * 48000 = 489599.99999999994 in floats → 254
                                             (10.2, 254), (10.3, 257)])
def test_frames_for_duration(duration, frames):
    assert ref.frames_for_duration(duration) == frames


# --- prompts (spec §1.3, §1.4) ---------------------------------------------------------------------------

EXPECTED_METAS = {
    "example_01.json": "- bpm: 100\n- timesignature: 4\n- keyscale: B minor\n- duration: 160 seconds\n",
    "example_02.json": "- bpm: 100\n- timesignature: 4\n- keyscale: G# minor\n- duration: 159 seconds\n",
    "example_03.json": "- bpm: 100\n- timesignature: 4\n- keyscale: E minor\n- duration: 142 seconds\n",
}
EXPECTED_LANG = {"example_01.json": "zh", "example_02.json": "es", "example_03.json": "fr"}


def _example_request(name: str) -> dict:
    ex = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return {"caption": ex["caption"], "lyrics": ex["lyrics"], "vocal_language": ex["language"], "bpm": ex["bpm"],
            "keyscale": ex["keyscale"], "timesignature": ex["timesignature"], "duration": ex["duration"]}


@pytest.mark.parametrize("name", sorted(EXPECTED_METAS))
def test_prompts_of_official_examples(name, ckpt):
    request = _example_request(name)
    cap, lyr = ref.build_prompts(request)
    assert cap == ("# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\n"
                   + request["caption"] + "\n\n# Metas\n" + EXPECTED_METAS[name] + "<|endoftext|>\n")
    assert lyr == "# Languages\n" + EXPECTED_LANG[name] + "\n\n# Lyric\n" + request["lyrics"] + "<|endoftext|>"
    tok = ckpt / ref.TEXT_DIR / "tokenizer.json"
    cap_ids = ref.tokenize(tok, cap, ref.CAPTION_MAX_LENGTH)
    lyr_ids = ref.tokenize(tok, lyr, ref.LYRIC_MAX_LENGTH)
    assert cap_ids[-3:] == [EOT, NEWLINE, EOT]  # literal <|endoftext|>, "\n", post-processor EOS
    assert lyr_ids[-2:] == [EOT, EOT]
    assert len(cap_ids) <= 256 and len(lyr_ids) <= 2048


def test_prompt_fallbacks():
    cap, lyr = ref.build_prompts({"caption": "x", "duration": 10.7, "bpm": None, "keyscale": " ", "timesignature": ""})
    assert cap.endswith("# Metas\n- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 10 seconds\n"
                        "<|endoftext|>\n")
    assert lyr == "# Languages\nunknown\n\n# Lyric\n[Instrumental]<|endoftext|>"
    _, lyr = ref.build_prompts({"caption": "x", "lyrics": "la la", "instrumental": True, "duration": 30,
                                "vocal_language": "en"})
    assert lyr == "# Languages\nen\n\n# Lyric\n[Instrumental]<|endoftext|>"
    cap, _ = ref.build_prompts({"caption": "x", "audio_codes": [1, 2, 3]})
    assert cap.startswith("# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n")
    assert "- duration: 30 seconds\n" in cap  # no duration known → the dict path's 30 s fallback


def test_tokenizer_matches_transformers_and_truncates_like_hf(ckpt):
    from transformers import AutoTokenizer

    tok_dir = ckpt / ref.TEXT_DIR
    hf = AutoTokenizer.from_pretrained(tok_dir)
    cap, lyr = ref.build_prompts(_example_request("example_01.json"))
    long_caption = ref.build_prompts({"caption": "guitar " * 400, "duration": 30})[0]
    for text, max_len in ((cap, 256), (lyr, 2048), (long_caption, 256)):
        want = hf(text, truncation=True, max_length=max_len).input_ids
        assert ref.tokenize(tok_dir / "tokenizer.json", text, max_len) == want
    ids = ref.tokenize(tok_dir / "tokenizer.json", long_caption, 256)
    assert len(ids) == 256 and ids[-1] == EOT


# --- FSQ, noise, peak guard -------------------------------------------------------------------------------

def test_fsq_values_mixed_radix():
    v = ref.fsq_values([0, 63999, 1, 8, 64, 512, 2560, 12800]).numpy()
    np.testing.assert_array_equal(v[0], [-1] * 6)
    np.testing.assert_array_equal(v[1], [1] * 6)
    for row, d in zip(v[2:], range(6)):  # code = basis_d → level 1 on dimension d only
        expect = np.full(6, -1.0)
        expect[d] = 2.0 / (ref.FSQ_LEVELS[d] - 1) - 1.0
        np.testing.assert_allclose(row, expect, atol=1e-7)


def test_noise_is_per_item_torch_cpu_randn():
    n = ref.initial_noise([7, 8], 130)
    assert n.shape == (2, 130, 64)
    torch.testing.assert_close(n[1:2], torch.randn(1, 130, 64, generator=torch.Generator().manual_seed(8)),
                               rtol=0, atol=0)


def test_peak_guard():
    a = torch.zeros(3, 2, 10)
    a[0, 0, 3] = 0.5
    a[1, 1, 4] = -4.0
    a[2, 0, 0] = 2.0
    out, peaks = ref.peak_guard(a.clone())
    assert peaks == [0.5, 4.0, 2.0]
    assert out[0, 0, 3] == 0.5 and out[1, 1, 4] == -1.0 and out[2, 0, 0] == 1.0
    quiet = torch.full((1, 2, 4), 0.9)
    assert torch.equal(ref.peak_guard(quiet)[0], quiet)


# --- tiled decode (spec §6) -------------------------------------------------------------------------------

def _local_decode(z: torch.Tensor) -> torch.Tensor:
    """A 'decoder' without receptive field: each latent frame becomes 1920 samples of its first 2 channels."""
    return z[:, :2, :].repeat_interleave(ref.HOP, dim=-1) * (1 + torch.arange(ref.HOP).repeat(z.shape[-1]) / ref.HOP)


@pytest.mark.parametrize("frames", [5, 512, 513, 600, 767, 768, 1152, 1153])
def test_tiled_stitching_is_exact_for_a_local_decoder(frames):
    z = torch.randn(2, 64, frames, generator=torch.Generator().manual_seed(frames))
    calls = []

    def decode(x):
        calls.append(x.shape[-1])
        return _local_decode(x)

    out = ref.tiled_decode(decode, z)
    assert out.shape == (2, 2, ref.HOP * frames)
    torch.testing.assert_close(out, _local_decode(z), rtol=0, atol=0)
    if frames <= 512:
        assert calls == [frames]
    else:
        assert len(calls) == -(-frames // 384) and max(calls) <= 512


@pytest.fixture(scope="session")
def vae(ckpt):
    return ref.load_models(str(ckpt))[2]


def test_tiled_decode_equals_direct_decode_for_short_t(vae):
    z = torch.randn(1, 64, 200, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = vae.decode(z).sample
        tiled = ref.tiled_decode(lambda x: ref.vae_decode(vae, x), z)
    assert torch.equal(direct, tiled)


def test_tiled_decode_long_t_close_to_direct(vae):
    """T = 900 (3 windows, seams at 384 and 768). Measured on the tiny seed-0 VAE: max |tiled − direct| =
    1.3e-7 = 7.3e-7 of the peak, spread evenly (not at the seams): the 64-frame context covers the tiny
    decoder's receptive field, so only float summation order differs. A stitching error of even one
    sample would be of the order of the signal itself. Tolerance: 1e-5 of the peak."""
    z = torch.randn(1, 64, 900, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        direct = vae.decode(z).sample
        tiled = ref.tiled_decode(lambda x: ref.vae_decode(vae, x), z)
    assert tiled.shape == direct.shape == (1, 2, 900 * ref.HOP)
    peak = direct.abs().max().item()
    assert (tiled - direct).abs().max().item() <= 1e-5 * peak


# --- whole pipeline ---------------------------------------------------------------------------------------

REQUEST = {"caption": "a calm piano piece", "lyrics": "[Verse]\nla la la", "vocal_language": "en", "bpm": 90,
           "keyscale": "C major", "timesignature": "4", "duration": 11.0, "shift": 3.0}


@pytest.fixture(scope="session")
def single_runs(ckpt):
    return {s: ref.run_reference(ckpt, REQUEST, seeds=[s]) for s in (11, 12)}


def test_reference_shapes_and_prompts(single_runs):
    r = single_runs[11]
    assert r["frames"] == 275 and r["latents"].shape == (1, 275, 64) and r["audio"].shape == (1, 2, 275 * 1920)
    assert r["latents"].dtype == np.float32 and r["audio"].dtype == np.float32
    assert r["context_latents"].shape == (1, 275, 128)
    assert np.all(r["context_latents"][..., 64:] == 1.0)
    L = len(r["lyric_ids"]) + 1 + len(r["caption_ids"])
    assert r["encoder_hidden_states"].shape[:2] == (1, L)
    assert r["caption_prompt"].endswith("- duration: 11 seconds\n<|endoftext|>\n")
    np.testing.assert_allclose(r["schedule"], SPEC_TABLE[3], atol=6e-6)
    assert np.isfinite(r["audio"]).all() and np.abs(r["audio"]).max() <= 1.0


def test_reference_is_deterministic_and_batch_equals_singles(ckpt, single_runs):
    again = ref.run_reference(ckpt, REQUEST, seeds=[11])
    np.testing.assert_array_equal(again["latents"], single_runs[11]["latents"])
    np.testing.assert_array_equal(again["audio"], single_runs[11]["audio"])
    batch = ref.run_reference(ckpt, REQUEST, seeds=[11, 12])
    for i, s in enumerate((11, 12)):
        np.testing.assert_allclose(batch["latents"][i], single_runs[s]["latents"][0], atol=1e-5, rtol=0)
    assert np.abs(single_runs[11]["latents"] - single_runs[12]["latents"]).max() > 0.1


def test_reference_codes_path_pads_hints_with_silence(ckpt):
    codes = [0, 63999, 12345, 777, 4242, 9, 31000, 50000, 100, 2000]
    r = ref.run_reference(ckpt, {"caption": "x", "instrumental": True, "audio_codes": codes}, seeds=[3])
    assert r["requested_frames"] == 50 and r["frames"] == 128
    silence = ref.load_models(str(ckpt))[0].silence_latent[0].numpy()
    np.testing.assert_array_equal(r["hints"][0, 50:], silence[:78])  # padded from silence frame 0
    np.testing.assert_array_equal(r["context_latents"][0, :, :64], r["hints"][0])
    assert r["caption_prompt"].startswith("# Instruction\nGenerate audio semantic tokens")
    assert not np.allclose(r["hints"][0, :50], silence[:50])


def test_reference_sde_is_seeded_and_differs_from_ode(ckpt, single_runs):
    sde = dict(REQUEST, infer_method="sde")
    a = ref.run_reference(ckpt, sde, seeds=[11])
    b = ref.run_reference(ckpt, sde, seeds=[11])
    np.testing.assert_array_equal(a["latents"], b["latents"])
    assert np.abs(a["latents"] - single_runs[11]["latents"]).max() > 1e-3


def test_reference_rejects_bad_requests(ckpt):
    with pytest.raises(ValueError, match="duration"):
        ref.run_reference(ckpt, {"caption": "x"}, seeds=[1])
    with pytest.raises(ValueError, match="unknown request key"):
        ref.run_reference(ckpt, {"caption": "x", "duration": 10, "durration": 3}, seeds=[1])
    with pytest.raises(ValueError, match="infer_method"):
        ref.run_reference(ckpt, {"caption": "x", "duration": 10, "infer_method": "euler"}, seeds=[1])


def test_package_graphs_replay_reference_stages(single_runs):
    """Each exported graph, fed the reference's inputs for its stage, reproduces the reference (ORT vs torch).
    Not a host test: it separates export errors from host/core errors when the end-to-end parity fails."""
    from tools.parity.fixtures import tiny_package_dir
    from tools.parity.ort_replay import stage_diffs

    diffs = stage_diffs(tiny_package_dir(), single_runs[11])
    assert diffs["silence_latent"] == 0.0
    bad = {k: v for k, v in diffs.items() if not v <= 1e-4}
    assert not bad, f"stages off by more than 1e-4: {bad} (all: {diffs})"


def test_cli_saves_the_run(ckpt, tmp_path, single_runs):
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"id": "x", "request": dict(REQUEST, seed=11, batch_size=1)}), encoding="utf-8")
    out = tmp_path / "ref.npz"
    assert ref.main(["--checkpoints", str(ckpt), "--request", str(req), "--seeds", "11", "--out", str(out)]) == 0
    saved = np.load(out)
    np.testing.assert_array_equal(saved["latents"], single_runs[11]["latents"])
    meta = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["frames"] == 275 and meta["caption_ids"] == single_runs[11]["caption_ids"]


def test_models_are_loaded_once_per_directory_however_it_is_named(ckpt):
    # bench.py once named it (str) and run_reference (str, dit_dir): two cache keys, two copies of the
    # fp32 models, which at full size was the out-of-memory kill of the reference worker.
    models = ref.load_models(str(ckpt))
    assert ref.load_models(Path(ckpt), ref.DIT_DIR) is models
    assert ref.load_models(Path(ckpt) / "." , dit_dir=ref.DIT_DIR) is models
