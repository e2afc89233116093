"""The core's generation driver without ONNX Runtime: every graph is a numpy stand-in, so the core's
loop (keep / release protocol, guidance, solver steps, tile crops, peak guard) is checked against
closed forms computed here, independently of the core.

Also: misuse of the driver (each error names the problem), and the request schema seen from a host.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from acestep_runtime._native import AceError
from acestep_runtime.generation import Generation
from acestep_runtime.package import ModelPackage, PackageError
from tools.parity.fixtures import tiny_package_dir

REPO = Path(__file__).resolve().parents[3]
# The tiny package has an LM, which a request runs by default ("thinking"); these tests are
# about the DiT path, so their requests turn it off explicitly.
NO_LM = {"thinking": False}
HOP = 1920
K = 0.25  # stand-in DiT: v = K·x


@pytest.fixture(scope="module")
def package():
    with ModelPackage.open(tiny_package_dir()) as pkg:
        yield pkg


@pytest.fixture(scope="module")
def guided_package(tmp_path_factory):
    """The tiny turbo package relabelled as a base model with a null_condition_emb: the stand-ins do
    not run the graphs, so this exercises the core's guided path without a base checkpoint."""
    src = tiny_package_dir()
    dst = tmp_path_factory.mktemp("guided") / "pkg"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["config"]["acestep"]["is_turbo"] = False
    manifest["model_variant"] = "acestep-v15-base"
    hidden = manifest["components"]["condition_encoder"]["outputs"][0]["shape"][-1]
    null = np.linspace(-1, 1, hidden, dtype=np.float32).reshape(1, 1, hidden)
    np.save(dst / "null_condition_emb.npy", null)
    manifest["files"]["null_condition_emb"] = {
        "file": "null_condition_emb.npy", "bytes": (dst / "null_condition_emb.npy").stat().st_size,
        "dtype": "float32", "shape": [1, 1, hidden]}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with ModelPackage.open(dst) as pkg:
        yield pkg, null


class StandIns:
    """numpy stand-ins for every graph, shaped like the package's signatures."""

    def __init__(self, package: ModelPackage, uncond_shift: float = 0.0):
        comps = package.info["components"]
        self.text_dim = int(comps["text_encoder"]["outputs"][0].split("[")[1].rstrip("]").split(", ")[-1])
        self.hidden = int(comps["condition_encoder"]["outputs"][0].split("[")[1].rstrip("]").split(", ")[-1])
        self.uncond_shift = uncond_shift
        self.calls: list[str] = []

    def __call__(self, component: str, feeds: dict) -> dict:
        self.calls.append(component)
        if component == "audio_detokenizer":
            codes = feeds["audio_codes"]
            return {"lm_hints": np.repeat(codes[..., None].astype(np.float32) / 1e5, 5, axis=1).repeat(64, -1)}
        if component == "text_encoder":
            ids = feeds["input_ids"]
            return {"last_hidden_state": np.broadcast_to((ids % 7)[..., None], (*ids.shape, self.text_dim)).astype(np.float32)}
        if component == "lyric_embedding":
            ids = feeds["input_ids"]
            return {"token_embeddings": np.broadcast_to((ids % 5)[..., None], (*ids.shape, self.text_dim)).astype(np.float32)}
        if component == "condition_encoder":
            text, lyric = feeds["text_hidden_states"], feeds["lyric_hidden_states"]
            b = text.shape[0]
            enc = np.full((b, text.shape[1] + lyric.shape[1] + 1, self.hidden), 0.5, np.float32)
            context = np.concatenate([feeds["src_latents"], feeds["chunk_masks"]], axis=-1)
            return {"encoder_hidden_states": enc, "context_latents": context,
                    "encoder_attention_mask": np.ones(enc.shape[:2], np.int64)}
        if component == "dit_cross_kv":
            # [B, L, H] → a [B, 1, 1, L, H] "cache" that is the encoder states themselves
            return {"cross_kv": np.ascontiguousarray(feeds["encoder_hidden_states"][:, None, None])}
        if component == "dit_decoder":
            x, enc = feeds["hidden_states"], feeds["cross_kv"][:, 0, 0]
            # The uncond half of a guided batch sees null_condition_emb: let it shift the velocity.
            is_uncond = (np.abs(enc[:, :1, :1] - 0.5) > 1e-6).astype(np.float32)
            return {"velocity": (K * x + self.uncond_shift * is_uncond).astype(np.float32)}
        if component == "vae_decoder":
            z = feeds["latents"]  # [B, 64, n] → [B, 2, 1920·n]: channel c of frame f, repeated
            return {"audio": np.repeat(z[:, :2, :], HOP, axis=-1).astype(np.float32)}
        raise AssertionError(f"unexpected component {component}")


def drive(gen: Generation, stand_ins: StandIns) -> list:
    """The host loop, with stand-ins instead of sessions; checks the keep/release protocol."""
    kept, calls = {}, []
    while (call := gen.next()) is not None:
        feeds = {}
        for i in call.inputs:
            if i.host_key is not None:
                assert i.host_key in kept, f"{call.component} needs {i.host_key}, which was released or never kept"
                feeds[i.name] = kept[i.host_key]
            else:
                feeds[i.name] = i.array.copy()
        outs = stand_ins(call.component, feeds)
        submit = {}
        for o in call.outputs:
            if o.keep_as is not None:
                kept[o.keep_as] = outs[o.name]
            else:
                submit[o.name] = outs[o.name]
        gen.submit(submit)
        for key in call.release:
            del kept[key]
        calls.append(call)
    assert kept == {}, f"values never released: {sorted(kept)}"
    return calls


def expected_audio(latents: np.ndarray) -> np.ndarray:
    """Direct (untiled) stand-in decode, then the official peak guard."""
    audio = np.repeat(latents.transpose(0, 2, 1)[:, :2, :], HOP, axis=-1)
    peaks = np.abs(audio).max(axis=(1, 2))
    if (peaks > 1).any():
        audio = audio / np.maximum(peaks, 1)[:, None, None]
    return audio.astype(np.float32)


# 31 s: 775 frames, two VAE tiles with crops (the driver's windows of 512 overlap by 16: stride 480)
@pytest.mark.parametrize("duration", [12, 31])
def test_turbo_ode_loop_matches_closed_form(package, duration):
    with Generation(package, NO_LM | {"caption": "x", "duration": duration, "seeds": [3, 4], "batch_size": 2}) as gen:
        calls = drive(gen, StandIns(package))
        info, latents, audio = gen.info, gen.latents(), gen.audio()
    assert [c.component for c in calls][:5] == ["text_encoder", "lyric_embedding", "condition_encoder",
                                                "dit_cross_kv", "dit_decoder"]
    assert sum(c.component == "dit_cross_kv" for c in calls) == 1  # once per generation, not per step
    frames = info["frames"]
    assert latents.shape == (2, frames, 64) and audio.shape == (2, 2, HOP * frames)
    # Initial noise is torch's randn per item (checked elsewhere); re-create it with the core's noise.
    from acestep_runtime.noise import randn

    x0 = np.concatenate([randn((1, frames, 64), s)[0] for s in (3, 4)])
    # ODE steps x ← x − v·dt with v = K·x, then the final x0 = x − v·t: a product of factors.
    sched = np.asarray(info["schedule"], dtype=np.float64)
    factor = np.prod([1 - K * (sched[i] - sched[i + 1]) for i in range(len(sched) - 1)]) * (1 - K * sched[-1])
    np.testing.assert_allclose(latents, x0 * factor, rtol=2e-5, atol=1e-6)
    n_tiles = sum(c.component == "vae_decoder" for c in calls)
    assert n_tiles == (1 if frames <= 512 else int(np.ceil(frames / (512 - 2 * 16))))
    np.testing.assert_array_equal(audio, expected_audio(latents))


def test_lm_codes_take_the_detokenizer_path_and_pad_with_silence(package):
    codes = [1000, 2000, 3000]  # 15 frames of hints, padded with silence to the 128-frame minimum
    with Generation(package, NO_LM | {"caption": "x", "audio_codes": codes, "seed": 1}) as gen:
        seen = {}
        stand_ins = StandIns(package)
        original = stand_ins.__call__

        def spy(component, feeds):
            seen.setdefault(component, feeds)
            return original(component, feeds)

        stand_ins.__call__ = spy
        kept = {}
        while (call := gen.next()) is not None:
            feeds = {i.name: kept[i.host_key] if i.host_key else i.array.copy() for i in call.inputs}
            outs = spy(call.component, feeds)
            gen.submit({o.name: outs[o.name] for o in call.outputs if o.keep_as is None})
            kept.update({o.keep_as: outs[o.name] for o in call.outputs if o.keep_as})
            for key in call.release:
                del kept[key]
        frames = gen.info["frames"]
    assert frames == 128
    silence = np.load(tiny_package_dir() / "silence_latent.npy")
    src = seen["condition_encoder"]["src_latents"][0]
    hints = np.repeat(np.asarray(codes, np.float32) / 1e5, 5)[:, None].repeat(64, -1)
    np.testing.assert_array_equal(src[:15], hints)
    np.testing.assert_array_equal(src[15:], silence[0, : frames - 15])  # the FIRST silence frames


@pytest.mark.parametrize("guidance_type", ["cfg", "apg"])
def test_guided_batch_applies_guidance_inside_the_interval(guided_package, guidance_type):
    package, null = guided_package
    shift = 0.125  # the uncond half's velocity differs by this constant
    request = {"caption": "x", "duration": 10, "seed": 9, "inference_steps": 6, "guidance_scale": 3.0,
               "guidance_type": guidance_type, "cfg_interval_start": 0.3, "cfg_interval_end": 0.8}
    with Generation(package, NO_LM | request) as gen:
        inputs, cross_kv_feeds = [], []
        stand_ins = StandIns(package, uncond_shift=shift)
        kept = {}
        while (call := gen.next()) is not None:
            feeds = {i.name: i.array.copy() for i in call.inputs if i.host_key is None}
            feeds.update({i.name: kept.get(i.host_key, np.zeros((1, 3, stand_ins.text_dim), np.float32))
                          for i in call.inputs if i.host_key})
            if call.component == "dit_decoder":
                inputs.append(feeds)
            if call.component == "dit_cross_kv":
                cross_kv_feeds.append(feeds)
            outs = stand_ins(call.component, feeds)
            kept.update({o.keep_as: outs[o.name] for o in call.outputs if o.keep_as})
            gen.submit({o.name: outs[o.name] for o in call.outputs if o.keep_as is None})
        info, latents = gen.info, gen.latents()
    # the cross K/V are computed once, from the core's [cond | uncond] encoder batch
    assert len(cross_kv_feeds) == 1 and cross_kv_feeds[0]["encoder_hidden_states"].shape[0] == 2
    assert info["guided"] and info["num_steps"] == 6
    first = inputs[0]
    assert first["hidden_states"].shape[0] == 2  # [cond | uncond]
    np.testing.assert_array_equal(first["hidden_states"][0], first["hidden_states"][1])
    enc = cross_kv_feeds[0]["encoder_hidden_states"]
    np.testing.assert_array_equal(enc[1], np.broadcast_to(null[0], enc[1].shape))
    np.testing.assert_array_equal(first["cross_kv"][:, 0, 0], enc)  # every step reads the kept cache
    np.testing.assert_array_equal(first["context_latents"][0], first["context_latents"][1])
    if guidance_type == "apg":
        return  # APG's own math is tested against numpy in test_guidance.py
    # CFG: v = cond + (g − 1)(cond − uncond) = K·x − (g − 1)·shift inside [0.3, 0.8], K·x outside.
    from acestep_runtime.noise import randn

    x = randn((1, info["frames"], 64), 9)[0].astype(np.float64)
    sched = list(map(float, info["schedule"])) + [0.0]
    for i in range(6):
        t, t_next = sched[i], sched[i + 1]
        inside = 0.3 <= np.float32(t) <= 0.8
        v = K * x - ((3.0 - 1) * shift if inside else 0.0)
        x = x - v * (t - t_next) if i < 5 else x - v * t
    np.testing.assert_allclose(latents, x, rtol=1e-4, atol=1e-5)


def test_misuse_is_reported_not_crashed(package):
    gen = Generation(package, NO_LM | {"caption": "x", "duration": 10, "seed": 1})
    with pytest.raises(AceError, match="no call is pending"):
        gen.submit({})
    with pytest.raises(AceError, match="not finished"):
        gen.audio()
    call = gen.next()
    assert call.component == "text_encoder" and call.outputs[0].keep_as
    with pytest.raises(AceError, match="kept by the host"):
        gen.submit({"last_hidden_state": np.zeros((1, 2, 3), np.float32)})
    gen.submit({})
    with pytest.raises(AceError, match="no call is pending"):
        gen.submit({})
    stand_ins = StandIns(package)
    kept = {"text_hidden_states": np.zeros((1, call.inputs[0].array.shape[1], stand_ins.text_dim), np.float32)}
    while (call := gen.next()) is not None:
        feeds = {i.name: kept[i.host_key] if i.host_key else i.array.copy() for i in call.inputs}
        outs = stand_ins(call.component, feeds)
        kept.update({o.keep_as: outs[o.name] for o in call.outputs if o.keep_as})
        if call.component == "dit_decoder":
            v = outs["velocity"]
            with pytest.raises(AceError, match=r"dit_decoder output \"velocity\" is float32\[1, 200, 64\], expected float32\[1, 250, 64\]"):
                gen.submit({"velocity": v[:, :200]})
            with pytest.raises(AceError, match="has no output \"v\""):
                gen.submit({"v": v})
            with pytest.raises(AceError, match="\"velocity\" is missing"):
                gen.submit({})
            with pytest.raises(TypeError, match="float32 or int64"):
                gen.submit({"velocity": v.astype(np.float16)})
            with pytest.raises(AceError, match="is int64"):
                gen.submit({"velocity": v.astype(np.int64)})
            bad = v.copy()
            bad[0, 5, 7] = np.nan
            with pytest.raises(AceError, match="non-finite"):
                gen.submit({"velocity": bad})
        gen.submit({o.name: outs[o.name] for o in call.outputs if o.keep_as is None})
    with pytest.raises(AceError, match="finished"):
        gen.next()
    assert gen.audio().shape == (1, 2, HOP * 250)
    gen.close()


def test_oversized_batch_is_refused_before_allocating(package):
    with pytest.raises(AceError, match="exceed the limit of 120000 batch × frames"):
        Generation(package, NO_LM | {"caption": "x", "duration": 600, "batch_size": 64})


def test_free_in_the_middle_is_a_clean_cancel(package):
    for _ in range(3):
        gen = Generation(package, NO_LM | {"caption": "x", "duration": 10})
        gen.next()
        gen.close()  # nothing to flush, nothing written


def test_package_missing_a_component_names_it(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_package_dir(), pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    del manifest["components"]["vae_decoder"]
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with ModelPackage.open(pkg) as package:
        with pytest.raises(AceError, match="no component \"vae_decoder\""):
            Generation(package, NO_LM | {"caption": "x", "duration": 10})


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m.update(format_version=2), "format_version 2 is not supported"),
        (lambda m: m["components"]["dit_decoder"].update(file="../../etc/hostname"), "not a relative path inside the package"),
        (lambda m: m["files"]["silence_latent"].update(bytes=12), "silence_latent.npy: size"),
        (lambda m: m["components"]["dit_decoder"].update(file="missing.onnx"), "missing.onnx is missing"),
    ],
)
def test_corrupted_manifest_names_the_problem(tmp_path, edit, message):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_package_dir(), pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    edit(manifest)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=message):
        ModelPackage.open(pkg)


def test_manifest_that_is_not_json(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(tiny_package_dir(), pkg)
    (pkg / "manifest.json").write_text("{ not json")
    with pytest.raises(PackageError, match="manifest.json: not valid JSON"):
        ModelPackage.open(pkg)


# -- the request schema, as every host sees it ----------------------------------------------------


@pytest.mark.parametrize(
    "request_,field",
    [
        ({"bpm": "fast"}, "request.bpm"),
        ({"duration": 5}, "request.duration"),
        ({"duration": float("inf")}, "request"),
        ({"seeds": [1, "x"]}, "request.seeds[1]"),
        ({"batch_size": 65}, "request.batch_size"),
        ({"inference_steps": 10**12}, "request.inference_steps"),
        ({"shift": -1}, "request.shift"),
        ({"audio_codes": "hello"}, "request.audio_codes"),
        ({"keyscale": "H major"}, "keyscale"),
        ({"vocal_language": "xx"}, "language"),
        ({"infer_method": "euler"}, "request.infer_method"),
        ({"durration": 12}, "request.durration: unknown key"),
        ({"src_audio": "a.wav"}, "not supported yet: src_audio"),
        ({"description": 3}, "request.description"),
        ({"task_type": "repaint"}, "not supported yet: task_type"),
        ({"audio_format": "ogg"}, "request.audio_format"),
    ],
)
def test_bad_requests_name_their_field(package, request_, field):
    with pytest.raises((AceError, ValueError)) as err:
        package.normalize(request_)
    assert field in str(err.value)


def test_requests_that_are_not_objects_are_refused(package):
    from acestep_runtime._native import call_string, encode_str, lib

    for text in ('["cap", "lyr"]', '{"bpm": 90, "bpm": 100}', "{"):
        with pytest.raises(AceError):
            call_string(lib.ace_request_normalize, package.ptr, encode_str(text, "request"))


def test_int_and_float_forms_give_one_track_id(package):
    ids = []
    for request in ({"caption": "x", "duration": 12, "seed": 7, "bpm": 90},
                    {"caption": "x", "duration": 12.0, "seeds": [7.0], "bpm": 90.0},
                    {"caption": "x", "duration": 12.04, "seed": 7, "bpm": 90}):  # same frames, same prompt
        with Generation(package, NO_LM | request) as gen:
            ids.append(gen.info["track_ids"][0])
    assert ids[0] == ids[1] == ids[2]
    with Generation(package, NO_LM | {"caption": "x", "duration": 13, "seed": 7, "bpm": 90}) as gen:
        assert gen.info["track_ids"][0] != ids[0]


def test_ignored_values_are_notes_and_leave_the_track_id(package):
    base = {"caption": "x", "duration": 10, "seed": 1}
    with Generation(package, NO_LM | base) as gen:
        plain = gen.info
    for extra, note in [({"inference_steps": 20}, "inference_steps=20 ignored"),
                        ({"guidance_scale": 3, "guidance_type": "cfg"}, "guidance_scale=3"),
                        ({"shift": 2.5}, "shift 2.5 is not a turbo shift; using 2")]:
        with Generation(package, NO_LM | {**base, **extra}) as gen:
            info = gen.info
        assert any(note in n for n in info["notes"]), (extra, info["notes"])
        if "shift" not in extra:
            assert info["track_ids"] == plain["track_ids"], extra
    with Generation(package, NO_LM | {**base, "shift": 2.5}) as a, Generation(package, NO_LM | {**base, "shift": 2}) as b:
        assert a.info["track_ids"] == b.info["track_ids"]  # 2.5 snaps to 2: same schedule, same song


def test_batch_seeds_continue_from_the_given_one(package):
    with Generation(package, NO_LM | {"caption": "x", "duration": 10, "seed": 3, "batch_size": 3}) as gen:
        assert gen.info["seeds"] == [3, 4, 5]
    with Generation(package, NO_LM | {"caption": "x", "duration": 10, "batch_size": 2}) as gen:
        first, second = gen.info["seeds"]
        assert second == first + 1 and gen.info["request"]["seeds"] == [first, second]


def test_official_example_files_normalise(package):
    examples = REPO / "fixtures" / "official_examples"
    text2music = sorted((examples / "text2music").glob("*.json"))
    simple = sorted((examples / "simple_mode").glob("*.json"))
    assert len(text2music) == 20 and len(simple) == 20
    for path in text2music:
        request, notes = package.normalize(json.loads(path.read_text(encoding="utf-8")))
        assert request["caption"] and request["duration"] is not None
    for path in simple:  # simple mode: the LM plans from the description
        example = json.loads(path.read_text(encoding="utf-8"))
        request, notes = package.normalize(example)
        assert request["description"] == example["description"] and request["instrumental"] == example["instrumental"]
        assert request["vocal_language"] == example["vocal_language"] and not notes
