"""The 5 Hz LM through the generation driver, end to end on the tiny package (random-weight LM).

What a random LM writes is noise, so the checks are about structure, which the FSM guarantees
whatever the weights: the CoT block parses into valid values, every code is in 0..63999, the
code count is 5 × the requested duration, and the DiT length follows the codes. Same seed → same
bytes. The driver's token choices are replayed against the official
`MetadataConstrainedLogitsProcessor` (allowed-token sets along the generated sequence, on the
CFG-combined logits the host saw) and against the core's public sampler + FSM: that test lives in
test_fsm_differential.py, next to the harness, so the official processor is built once.
Bad input: an over-long prompt, thinking on a package without an LM, cancelling mid-phase.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from acestep_runtime._native import AceError
from acestep_runtime.pipeline import Cancelled, Pipeline
from tools.parity.fixtures import tiny_package_dir

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "fixtures" / "official_examples"
LANGS = set("ar az bg bn ca cs da de el en es fa fi fr he hi hr ht hu id is it ja ko la lt ms ne nl no pa pl pt ro "
            "ru sa sk sr sv sw ta te th tl tr uk ur vi yue zh unknown".split())
INSPIRED = "Expand the user's input into a more detailed and specific musical description:"
SIMPLE_BENGALI = {"description": "a soft Bengali love song for a quiet evening", "instrumental": False,
                  "vocal_language": "bn"}  # official examples/simple_mode/example_01.json


@pytest.fixture(scope="module")
def lm_tokenizer_dir() -> Path:
    return tiny_package_dir() / "tokenizer" / "lm"


@pytest.fixture(scope="module")
def pipe():
    with Pipeline.open(tiny_package_dir(), device="cpu", threads=1) as p:
        yield p


def cot_fields(text: str) -> dict[str, str]:
    """`key: value` lines of a CoT block, read independently of the core's parser."""
    assert text.startswith("<think>\n"), text[:80]
    body = text[len("<think>\n"):].split("</think>")[0]
    fields = {}
    for line in body.split("\n"):
        m = re.match(r"^([a-z]+):(.*)$", line)
        if m:
            fields[m.group(1)] = m.group(2).strip()
    return fields


def check_codes(result, duration: float):
    lm = result.lm
    codes = lm["audio_codes"]
    assert lm["code_count"] == len(codes) == int(duration * 5)
    assert all(0 <= c <= 63999 for c in codes)
    assert result.frames == 5 * len(codes)  # 25 Hz latents from 5 Hz codes (≥ 128 frames here)
    assert result.audio.shape == (1, 2, result.frames * 1920)
    sidecar = result.sidecars[0]
    assert sidecar["request"]["audio_codes"] == codes and sidecar["request"]["thinking"] is False
    assert sidecar["lm"]["code_count"] == len(codes)
    codes_phase = [p for p in lm["phases"] if p["phase"] == "lm_codes"][0]
    assert codes_phase["stopped_by"] == "eos" and codes_phase["tokens"] == len(codes) + 1


THINK = {"caption": "a calm piano piece", "lyrics": "[verse]\nquiet rain", "duration": 10, "seed": 11,
         "thinking": True, "use_cot_caption": False}


def test_thinking_request_end_to_end(pipe):
    result = pipe.generate(THINK)
    lm = result.lm
    assert [p["phase"] for p in lm["phases"]] == ["lm_metadata", "lm_codes"]
    meta_phase = lm["phases"][0]
    assert meta_phase["stopped_by"] == "eos"
    # Without the caption every field is FSM-constrained: each one is present and valid.
    fields = cot_fields(meta_phase["text"])
    assert list(fields) == ["bpm", "duration", "keyscale", "language", "timesignature"]
    assert 30 <= int(fields["bpm"]) <= 300
    assert fields["duration"] == "10"  # the user's value, injected
    assert re.fullmatch(r"[A-G](#|b|♯|♭)? (major|minor)", fields["keyscale"])
    assert fields["language"] in LANGS and fields["timesignature"] in {"2", "3", "4", "6"}
    assert lm["metadata"]["bpm"] == int(fields["bpm"]) and lm["metadata"]["keyscale"] == fields["keyscale"]
    check_codes(result, 10)
    # The DiT prompts carry the LM's metadata (the user left bpm/key/time signature open).
    assert f"- bpm: {fields['bpm']}\n" in result.prompts["dit_caption"]
    assert f"- keyscale: {fields['keyscale']}\n" in result.prompts["dit_caption"]
    assert result.prompts["dit_lyrics"].startswith(f"# Languages\n{fields['language']}\n")
    assert "a calm piano piece" in result.prompts["dit_caption"]  # use_cot_caption off
    # Same seed, same bytes.
    again = pipe.generate(THINK)
    assert again.audio.tobytes() == result.audio.tobytes() and again.track_ids == result.track_ids
    assert again.lm["audio_codes"] == lm["audio_codes"]
    # The sidecar's request reproduces the audio without the LM.
    replay = pipe.generate(result.sidecars[0]["request"])
    assert replay.lm is None and replay.audio.tobytes() == result.audio.tobytes()


def test_simple_mode_end_to_end(pipe, lm_tokenizer_dir):
    from tokenizers import Tokenizer as HfTokenizer

    example = json.loads((EXAMPLES / "simple_mode" / "example_01.json").read_text(encoding="utf-8"))
    assert example == SIMPLE_BENGALI
    req = {**example, "duration": 10, "seed": 21, "lm_max_text_tokens": 60}
    result = pipe.generate(req)
    lm = result.lm
    phases = [p["phase"] for p in lm["phases"]]
    assert phases[0] == "lm_simple" and phases[-1] == "lm_codes"
    # The official inspiration prompt (no CFG: one row), tokenized independently.
    prompt = (f"<|im_start|>system\n# Instruction\n{INSPIRED}\n\n<|im_end|>\n<|im_start|>user\n"
              f"{example['description']}\n\ninstrumental: false<|im_end|>\n<|im_start|>assistant\n")
    hf = HfTokenizer.from_file(str(lm_tokenizer_dir / "tokenizer.json"))
    assert lm["phases"][0]["prompt_tokens"] == [len(hf.encode(prompt, add_special_tokens=False).ids)]
    assert lm["phases"][0]["text"].startswith("<think>\nbpm: ")
    sample = lm["sample"]
    assert sample is not None and "lyrics" in sample
    check_codes(result, 10)
    again = pipe.generate(req)
    assert again.audio.tobytes() == result.audio.tobytes() and again.lm["sample"] == sample


# ---- bad input ----

def test_thinking_on_a_package_without_lm_names_the_component(tmp_path):
    from acestep_runtime.package import ModelPackage

    demo = REPO / "fixtures" / "generated" / "demo-package"
    if not demo.is_dir():
        pytest.skip("demo package not built")
    with Pipeline.open(demo, device="cpu", threads=1) as p:
        for req, field in (({"caption": "x", "thinking": True}, "request.thinking"),
                           ({"description": "a song"}, "request.description")):
            with pytest.raises(AceError) as err:
                p.plan(req)
            assert err.value.message.startswith(field) and "lm_prefill" in err.value.message
        # Without the key the demo package runs the DiT alone, as the official code does without an LM.
        assert p.plan({"caption": "x"})["lm"] is None
    with ModelPackage.open(demo) as pkg:
        assert "lm_prefill" not in pkg.summary().get("components", {})


def test_lm_settings_without_the_lm_are_noted_and_leave_the_track_id(pipe):
    base = {"caption": "x", "duration": 10, "seed": 4, "thinking": False}
    plain = pipe.plan(base)
    with_settings = pipe.plan({**base, "lm_temperature": 0.5, "lm_top_k": 40})
    assert with_settings["lm"] is None
    assert "lm_temperature, lm_top_k: ignored: the 5 Hz LM does not run (\"thinking\" is false)" in with_settings["notes"]
    assert not any("lm_" in n for n in plain["notes"])
    assert with_settings["track_ids"] == plain["track_ids"]
    codes = pipe.plan({"caption": "x", "audio_codes": [1, 2, 3] * 20, "lm_cfg_scale": 3})
    assert any(n.startswith("lm_cfg_scale: ignored") and "audio_codes" in n for n in codes["notes"])


def test_over_long_prompt_is_refused_before_any_graph(pipe):
    lyrics = "la " * 5000  # ~5000 tokens: more than the LM's 4096 positions
    with pytest.raises(AceError) as err:
        pipe.plan({"caption": "x", "lyrics": lyrics, "thinking": True})
    assert "request.caption / request.lyrics" in err.value.message and "4096" in err.value.message
    with pytest.raises(AceError) as err:
        pipe.plan({"caption": "x", "lyrics": "la " * 1500, "duration": 600, "bpm": 90, "keyscale": "C major",
                   "timesignature": "4", "thinking": True})
    assert err.value.message.startswith("request.duration") and "3000 audio codes" in err.value.message


def test_lm_settings_are_checked_by_field(pipe):
    for req, field in (({"lm_temperature": -1}, "request.lm_temperature"),
                       ({"lm_cfg_scale": 0.5}, "request.lm_cfg_scale"),
                       ({"lm_top_p": 2}, "request.lm_top_p"),
                       ({"lm_top_k": 1.5}, "request.lm_top_k"),
                       ({"thinking": 1}, "request.thinking"),
                       ({"thinking": True, "batch_size": 2}, "request.batch_size"),
                       ({"thinking": True, "audio_codes": [1, 2]}, "request.thinking")):
        with pytest.raises(AceError) as err:
            pipe.plan({"caption": "x", **req})
        assert err.value.message.startswith(field), err.value.message


@pytest.mark.parametrize("stage", ["lm_metadata", "lm_codes"])
def test_cancel_mid_phase_writes_nothing(pipe, tmp_path, stage):
    cancel = threading.Event()

    def progress(s, done, total):
        if s == stage and done >= 3:
            cancel.set()

    with pytest.raises(Cancelled):
        pipe.generate({**THINK, "duration": 10}, progress=progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_cli_think_and_simple(tmp_path):
    import subprocess
    import sys

    env_cmd = [sys.executable, "-m", "acestep_runtime", "-v", "generate", "--model", str(tiny_package_dir()),
               "--no-progress", "--threads", "1", "--duration", "10", "--seed", "3"]
    out = f"{tmp_path}/a/"
    run = subprocess.run(env_cmd + ["--caption", "drums", "--think", "--lm-max-text-tokens", "60", "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO, env={**__import__("os").environ,
                                                                        "PYTHONPATH": f"{REPO}/bindings/python"})
    assert run.returncode == 0, run.stderr
    assert "lm: lm_metadata" in run.stderr and "50 codes" in run.stderr and "lm metadata:" in run.stderr
    sidecar = json.loads(next(Path(out).glob("*.json")).read_text())
    assert sidecar["lm"]["code_count"] == 50
    bad = subprocess.run(env_cmd + ["--lm-top-p", "3", "--out", str(tmp_path / "b/")], capture_output=True, text=True,
                         cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": f"{REPO}/bindings/python"})
    assert bad.returncode == 2 and "request.lm_top_p" in bad.stderr and "--lm-top-p" in bad.stderr


def test_ctrl_c_between_lm_tokens_writes_nothing(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=f"{REPO}/bindings/python")
    # 120 s = 600 codes: the codes phase lasts seconds on the tiny LM.
    proc = subprocess.Popen(
        [sys.executable, "-m", "acestep_runtime", "generate", "--model", str(tiny_package_dir()), "--think",
         "--caption", "x", "--duration", "120", "--seed", "1", "--lm-max-text-tokens", "40", "--threads", "1",
         "--out", str(tmp_path) + "/"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = ""
    deadline = time.monotonic() + 300
    while "lm_codes" not in seen and time.monotonic() < deadline:
        chunk = proc.stderr.read(1)
        if not chunk:
            break
        seen += chunk
    assert "lm_codes" in seen, seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "cancelled" in err, seen + err
    assert list(tmp_path.iterdir()) == []
