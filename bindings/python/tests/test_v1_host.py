"""ACE-Step v1 end to end through the Python host, which has no v1 code: the core's driver picks the
v1 family from the package manifest and asks for the v1 graphs (docs/io_contract_v1.md).

Checked against the contract and the spec, not against the driver's own numbers: the output length
is the spec's `ceil(4096·T·48000/44100)` with `T = int(duration·44100/4096)`, the ERG q-scales the
calls carry are the manifest's layer lists, the call counts follow spec §7 (guidance interval
counted on N, Heun's 2N − 1 calls). Numerical parity with a torch reference of the loop is in
test_v1_pipeline_parity.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_runtime._native import AceError
from acestep_runtime.generation import Generation
from acestep_runtime.pipeline import Cancelled, Pipeline

REPO = Path(__file__).resolve().parents[3]
PYTHONPATH = os.pathsep.join([str(REPO / "bindings" / "python"), str(REPO)])
LYRICS = "[verse]\nhello world\n\nsing it 2 times"


@pytest.fixture(scope="module")
def v1_package() -> Path:
    from tools.onnx_export.v1.fixtures import tiny_v1_package_dir

    return tiny_v1_package_dir()


@pytest.fixture(scope="module")
def pipe(v1_package):
    with Pipeline.open(v1_package, device="cpu", threads=2) as p:
        yield p


def request(**kw) -> dict:
    r = {"caption": "lofi hip hop, mellow", "lyrics": LYRICS, "duration": 1.0, "inference_steps": 6, "seed": 11}
    r.update(kw)
    return r


def frames_of(duration: float) -> int:
    return int(duration * 44100 / 512 / 8)  # spec §2


def samples_48k(frames: int) -> int:
    return -(-frames * 4096 * 48000 // 44100)  # ceil, spec §2


def calls_of(pipe: Pipeline, req: dict, audio: list | None = None) -> list:
    """Runs a generation like the pipeline does and records every call (component, inputs); appends
    the result audio to ``audio`` when given."""
    seen = []
    with Generation(pipe.package, req) as gen:
        kept = {}
        while (call := gen.next()) is not None:
            feeds = {i.name: (kept[i.host_key] if i.host_key is not None else i.array) for i in call.inputs}
            seen.append((call.component, {i.name: (i.host_key, None if i.array is None else i.array.copy())
                                          for i in call.inputs}, call.stage, call.stage_done, call.stage_total))
            values = pipe.sessions.run_values(call.component, feeds, [o.name for o in call.outputs])
            submit = {}
            for out, value in zip(call.outputs, values):
                if out.keep_as is not None:
                    kept[out.keep_as] = value
                else:
                    submit[out.name] = value.numpy()
            gen.submit(submit)
            for key in call.release:
                kept.pop(key)
        assert kept == {}, f"host values never released: {sorted(kept)}"
        if audio is not None:
            audio.append(gen.audio())
    return seen


def test_the_plan_is_v1(pipe):
    plan = pipe.plan(request(duration=10.0))
    assert plan["model_family"] == "ace-step-v1"
    assert plan["components"] == ["text_encoder", "condition_encoder", "dit_decoder", "dcae_decoder", "vocoder"]
    assert plan["frames"] == frames_of(10.0) == 107
    assert plan["sample_rate"] == 48000 and plan["samples"] == samples_48k(107)
    # defaults of spec §8
    r = plan["request"]
    assert (r["guidance_scale"], r["scheduler_type"], r["cfg_type"], r["omega_scale"]) == (15.0, "euler", "apg", 10.0)
    assert r["use_erg_tag"] and r["use_erg_lyric"] and r["use_erg_diffusion"]


def test_stereo_48k_of_the_requested_length_and_deterministic(pipe):
    a = pipe.generate(request(duration=1.5))
    t = frames_of(1.5)
    assert a.sample_rate == 48000 and a.frames == t
    assert a.audio.shape == (1, 2, samples_48k(t)) and a.audio.dtype == np.float32
    assert abs(a.audio.shape[-1] / 48000 - 1.5) < 4096 / 44100  # within one latent frame
    assert a.latents.shape == (1, 128, t)
    assert np.isfinite(a.audio).all() and 0 < np.abs(a.audio).max() <= 1.0
    assert not np.array_equal(a.audio[0, 0], a.audio[0, 1])  # two vocoder rows, not one copied
    b = pipe.generate(request(duration=1.5))
    assert a.audio.tobytes() == b.audio.tobytes() and a.track_ids == b.track_ids
    c = pipe.generate(request(duration=1.5, seed=12))
    assert not np.allclose(a.audio, c.audio) and c.track_ids != a.track_ids
    s = a.sidecars[0]
    assert s["seed"] == 11 and s["track_id"] == a.track_ids[0] and s["sample_rate"] == 48000
    assert s["request"]["seeds"] == [11] and s["model"]["family"] == "ace-step-v1"
    # the resolved request reproduces the item
    again = pipe.generate(s["request"])
    assert again.audio.tobytes() == a.audio.tobytes()


def test_calls_follow_the_guidance_plan_and_the_erg_lists(pipe, v1_package):
    manifest = json.loads((v1_package / "manifest.json").read_text())
    erg = manifest["config"]["erg"]
    n = 8
    calls = calls_of(pipe, request(inference_steps=n))
    comps = [c[0] for c in calls]
    # spec §7: guided calls are [int(n·0.25), int(n·0.75)) = [2, 6): two decodes each
    assert comps == (["text_encoder"] * 2 + ["condition_encoder"] * 2 + ["dit_decoder"] * (n + 4)
                     + ["dcae_decoder", "vocoder"])

    def scale(layers, width):
        s = np.ones(width, np.float32)
        s[layers] = np.float32(erg["tau"])
        return s

    te, te_erg = calls[0][1]["erg_q_scale"][1], calls[1][1]["erg_q_scale"][1]
    assert np.array_equal(te, np.ones_like(te)) and np.array_equal(te_erg, scale(erg["text_encoder_layers"], len(te)))
    cond, uncond = calls[2][1], calls[3][1]
    assert cond["text_hidden_states"][0] != uncond["text_hidden_states"][0]  # ERG tag text for uncond
    assert np.array_equal(cond["lyric_token_ids"][1], uncond["lyric_token_ids"][1])  # ERG lyric: real ids
    lyric_width = len(cond["erg_q_scale"][1])
    assert np.array_equal(cond["erg_q_scale"][1], np.ones(lyric_width, np.float32))
    assert np.array_equal(uncond["erg_q_scale"][1], scale(erg["lyric_encoder_layers"], lyric_width))
    dits = [c[1] for c in calls if c[0] == "dit_decoder"]
    erg_dit = [d for d in dits if not np.array_equal(d["erg_q_scale"][1], np.ones_like(d["erg_q_scale"][1]))]
    assert len(erg_dit) == 4
    assert np.array_equal(erg_dit[0]["erg_q_scale"][1], scale(erg["dit_layers"], len(erg_dit[0]["erg_q_scale"][1])))
    # the encoder mask is [1 | text mask | lyric mask], the timestep 1000·σ of the spec grid
    lt, ll = cond["text_attention_mask"][1].shape[1], cond["lyric_attention_mask"][1].shape[1]
    assert dits[0]["encoder_attention_mask"][1].shape == (1, 1 + lt + ll)
    assert dits[0]["timestep"][1].tolist() == [1000.0]
    # progress: every DiT decode counts, totals are the stage's
    dit_progress = [(c[3], c[4]) for c in calls if c[0] == "dit_decoder"]
    assert dit_progress == [(i, n + 4) for i in range(n + 4)]


def test_unguided_and_heun_call_counts(pipe):
    comps = [c[0] for c in calls_of(pipe, request(guidance_scale=1.0, inference_steps=5))]
    assert comps == ["text_encoder", "condition_encoder"] + ["dit_decoder"] * 5 + ["dcae_decoder", "vocoder"]
    # one step: the interval [int(0.25), int(0.75)) is empty, so guidance 15 never runs (and says so)
    assert "unguided" in " ".join(pipe.plan(request(inference_steps=1))["notes"])
    comps = [c[0] for c in calls_of(pipe, request(inference_steps=1))]
    assert comps == ["text_encoder", "condition_encoder", "dit_decoder", "dcae_decoder", "vocoder"]
    # Heun: 2N − 1 = 11 calls, the interval [1, 4) on the call index (counted on N = 6)
    comps = [c[0] for c in calls_of(pipe, request(scheduler_type="heun", inference_steps=6))]
    assert comps.count("dit_decoder") == 11 + 3
    # double condition: a third (text-only) condition and decode per guided call
    calls = calls_of(pipe, request(guidance_scale_text=5.0, guidance_scale_lyric=2.0, inference_steps=4,
                                   use_erg_tag=False, use_erg_lyric=False))
    comps = [c[0] for c in calls]
    assert comps.count("text_encoder") == 1 and comps.count("condition_encoder") == 3
    assert comps.count("dit_decoder") == 4 + 2 * 2  # guided calls [1, 3)
    uncond = calls[3][1]  # plain null condition: zeros text, zero lyric ids, real mask
    assert uncond["text_hidden_states"][0] is None and not uncond["text_hidden_states"][1].any()
    assert not uncond["lyric_token_ids"][1].any() and uncond["lyric_attention_mask"][1].all()


@pytest.mark.parametrize("extra", [{"scheduler_type": "pingpong"}, {"scheduler_type": "heun", "cfg_type": "cfg_star"},
                                   {"lyrics": "", "caption": ""}, {"batch_size": 2, "seed": [3, 4]}])
def test_other_settings_run(pipe, extra):
    r = pipe.generate(request(inference_steps=4, **extra))
    b = extra.get("batch_size", 1)
    assert r.audio.shape == (b, 2, samples_48k(frames_of(1.0))) and np.isfinite(r.audio).all()
    assert len(set(r.track_ids)) == b


def test_windowed_vocoder_equals_the_whole_song_vocoder(pipe):
    """30 s = 2576 mel frames: two vocoder windows (2048 kept frames, 256 of context each side). The
    same mel through one whole-song vocoder run, resampled and peak-guarded, gives the same audio."""
    from acestep_runtime.audio_resample import resample

    req = request(duration=30.0, inference_steps=1)
    result = []
    calls = calls_of(pipe, req, result)
    vocoder = [c for c in calls if c[0] == "vocoder"]
    assert [v[1]["mel"][1].shape[2] for v in vocoder] == [2048 + 256, 2576 - 2048 + 256]
    assert [(v[3], v[4]) for v in vocoder] == [(1, 3), (2, 3)]
    mel = np.concatenate([vocoder[0][1]["mel"][1][:, :, :2048], vocoder[1][1]["mel"][1][:, :, 256:]], axis=2)
    whole = pipe.sessions.run("vocoder", {"mel": mel}, ["audio"])[0]
    expect = resample(whole, 44100, 48000)
    expect /= max(1.0, float(np.abs(expect).max()))
    got = result[0][0]
    assert got.shape == expect.shape
    assert np.abs(got - expect).max() <= 1e-6


def official_decode_overlap(pipe: Pipeline, latents: np.ndarray) -> np.ndarray:
    """`MusicDCAE.decode_overlap` of the official v1 code (music_dcae_pipeline.py, d612523) transcribed
    loop for loop in numpy, for one item's latents [8, 16, T], with the package's DCAE decoder and
    vocoder graphs (which include the official scaling and mel denormalisation). Returns the 44.1 kHz
    rows [2, 512·F]: the official cut to the song's length (it cuts after resampling)."""
    run = pipe.sessions.run
    win, offset, hop, trim = 512, 128, 256, 1024
    T = latents.shape[-1]
    anchors = list(range(offset, T - offset, hop)) or [offset]
    segments = []
    for i, anchor in enumerate(anchors):
        s = max(0, anchor - offset)
        e = min(T, s + win)
        mel = run("dcae_decoder", {"latents": np.ascontiguousarray(latents[None, :, :, s:e])}, ["mel"])[0]
        first, last = i == 0, i == len(anchors) - 1
        if first and last:
            segments.append(mel[..., :(e - s) * 8])
        elif first:
            segments.append(mel[..., :-trim])
        elif last:
            segments.append(mel[..., trim:])
        else:
            segments.append(mel[..., trim:-trim])
    mels = np.concatenate(segments, axis=3)[0]  # [2, 128, F]
    frames = mels.shape[2]
    block_len, overlap, fade = 512 * 512, 1024, 128
    block_hop = block_len - 2 * overlap

    def vocoder(start):
        block = mels[:, :, start:start + 512]
        block = np.pad(block, ((0, 0), (0, 0), (0, 512 - block.shape[2])))
        return run("vocoder", {"mel": np.ascontiguousarray(block)}, ["audio"])[0]

    tail, head = np.linspace(1, 0, fade, dtype=np.float32), np.linspace(0, 1, fade, dtype=np.float32)
    current = vocoder(0)[:, :-overlap]
    p, total = block_hop, frames * 512
    while p < total:
        new = vocoder(p // 512)
        n = min(fade, current.shape[1], new.shape[1] - (overlap - fade))
        current[:, -n:] = current[:, -n:] * tail[:n] + new[:, overlap - n:overlap] * head[:n]
        final = p + block_hop >= total
        current = np.concatenate([current, new[:, overlap:] if final else new[:, overlap:-overlap]], axis=1)
        p += block_hop
    return current[:, :total]


def test_overlapped_decode_is_the_official_decode_overlap(pipe):
    """60 s (645 latent frames) with `overlapped_decode`: two DCAE windows (512 latents, 128 of context
    trimmed) and 11 vocoder blocks of 512 mel frames joined with the official crossfade, equal to the
    transcribed official loop on the same latents; without the flag the song is decoded whole, and
    the two differ (the DCAE attention sees one window), as they do in the official code."""
    from acestep_runtime.audio_resample import resample

    req = request(duration=60.0, inference_steps=1, overlapped_decode=True)
    plan = pipe.plan(req)
    assert plan["decode"] == {"overlapped": True, "dcae_windows": 2, "vocoder_windows": 11}
    result = []
    calls = calls_of(pipe, req, result)
    dcae = [c for c in calls if c[0] == "dcae_decoder"]
    vocoder = [c for c in calls if c[0] == "vocoder"]
    assert [d[1]["latents"][1].shape[3] for d in dcae] == [512, 645 - 256]
    assert {v[1]["mel"][1].shape for v in vocoder} == {(2, 128, 512)}
    assert [(c[3], c[4]) for c in dcae + vocoder] == [(k, 13) for k in range(13)]
    got = pipe.generate(req)
    assert np.array_equal(got.audio[0], result[0][0])  # the recorded run is the pipeline's run

    audio44 = official_decode_overlap(pipe, got.latents.reshape(8, 16, 645))
    expect = resample(np.ascontiguousarray(audio44), 44100, 48000)
    expect /= max(1.0, float(np.abs(expect).max()))
    assert got.audio[0].shape == expect.shape == (2, samples_48k(645))
    err = np.abs(got.audio[0] - expect).max()
    print(f"overlapped decode vs the official loop: max |Δ| {err:.1e}")
    assert err <= 1e-6

    whole = pipe.generate(request(duration=60.0, inference_steps=1))
    assert pipe.plan(request(duration=60.0))["decode"] == {"overlapped": False, "dcae_windows": 1,
                                                          "vocoder_windows": 3}
    assert np.array_equal(whole.latents, got.latents)
    diff = np.abs(whole.audio[0] - got.audio[0]).max()
    print(f"overlapped vs whole decode: max |Δ| {diff:.1e}")
    assert diff > 1e-4


def test_overlapped_decode_is_whole_up_to_48_s(pipe):
    plan = pipe.plan(request(duration=48.0, overlapped_decode=True))
    assert plan["decode"]["overlapped"] is False and plan["decode"]["dcae_windows"] == 1
    assert any("overlapped_decode: applies to songs longer than 48" in n for n in plan["notes"])


def test_cancel_between_calls_raises_and_returns_nothing(pipe):
    cancel = threading.Event()
    seen = []

    def progress(stage, done, total):
        seen.append(stage)
        if stage == "diffusion" and done == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        pipe.generate(request(), progress=progress, cancel=cancel)
    assert "decode" not in seen


@pytest.mark.parametrize("req,field", [
    ({"thinking": True}, "request.thinking: an ACE-Step 1.5 setting"),
    ({"bpm": 120}, "request.bpm: an ACE-Step 1.5 setting"),
    ({"duration": 300}, "request.duration"),
    ({"duration": 0.2}, "request.duration"),
    ({"scheduler_type": "dpm"}, "request.scheduler_type"),
    ({"cfg_type": "adg"}, "request.cfg_type"),
    ({"vocal_language": "ko"}, "request.vocal_language"),
    ({"inference_steps": 0}, "request.inference_steps"),
    ({"colour": 1}, "request.colour: unknown key"),
    ({"overlapped_decode": "yes"}, "request.overlapped_decode"),
])
def test_bad_requests_name_the_field(pipe, req, field):
    with pytest.raises(AceError) as e:
        pipe.plan(request(**req))
    assert e.value.message.startswith(field), e.value.message


def test_a_v1_field_on_a_15_package_names_the_family():
    from tools.parity.fixtures import tiny_package_dir

    with Pipeline.open(tiny_package_dir(), device="cpu") as p, pytest.raises(AceError) as e:
        p.plan({"caption": "x", "scheduler_type": "heun"})
    assert e.value.message.startswith("request.scheduler_type: an ACE-Step v1 setting")


def run_cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    return subprocess.run([sys.executable, "-m", "acestep_runtime", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600, **kw)


def test_cli_writes_a_48k_stereo_wav_with_sidecar(v1_package, tmp_path):
    out = tmp_path / "song.wav"
    proc = run_cli("generate", "--model", v1_package, "--caption", "calm piano", "--lyrics", "[verse]\nla la",
                   "--duration", "1.5", "--steps", "4", "--seed", "5", "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    data, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 48000 and data.shape == (samples_48k(frames_of(1.5)), 2)
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert len(sidecar["track_id"]) == 64 and sidecar["seed"] == 5
    assert sidecar["host"]["format"] == "wav16" and sidecar["model"]["family"] == "ace-step-v1"
    bad = run_cli("generate", "--model", v1_package, "--caption", "x", "--bpm", "120", "--out", tmp_path / "b.wav")
    assert bad.returncode == 2 and "request.bpm: an ACE-Step 1.5 setting" in bad.stderr
    assert not (tmp_path / "b.wav").exists()
