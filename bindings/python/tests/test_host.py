"""The Python host end to end on the tiny package: CLI, determinism, formats, cancellation, bad input.

Parity with the torch reference is in test_pipeline_parity.py; this file checks the host's own
behaviour. Generation runs in subprocesses where the test needs a clean interpreter or a signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tools.parity.fixtures import tiny_package_dir

REPO = Path(__file__).resolve().parents[3]
PYTHONPATH = os.pathsep.join([str(REPO / "bindings" / "python"), str(REPO)])


@pytest.fixture(scope="session")
def package() -> Path:
    return tiny_package_dir()


def as_dir(path) -> str:
    """A directory argument for --out (the trailing slash makes the CLI treat it as a directory)."""
    return f"{path}/"


def run_cli(*args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    return subprocess.run(
        [sys.executable, "-m", "acestep_runtime", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def test_generating_imports_no_torch(package, tmp_path):
    code = f"""
import sys
from acestep_runtime.cli import main
status = main(["generate", "--model", {str(package)!r}, "--no-think", "--caption", "calm piano", "--duration", "10",
               "--seed", "3", "--out", {str(tmp_path) + '/'!r}, "--no-progress"])
banned = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "diffusers"))
print("BANNED", banned)
sys.exit(status)
"""
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "BANNED []" in proc.stdout
    assert len(list(tmp_path.glob("*.flac"))) == 1


def test_same_seed_same_bytes_and_track_id(package, tmp_path):
    outs = []
    for run in ("a", "b"):
        proc = run_cli("generate", "--model", package, "--no-think", "--caption", "dub techno", "--lyrics", "[Instrumental]",
                       "--duration", "10.04", "--seed", "11", "--format", "wav32f", "--out", as_dir(tmp_path / run),
                       "--no-progress")
        assert proc.returncode == 0, proc.stderr
        outs.append(sorted((tmp_path / run).glob("*.wav")))
    (a,), (b,) = outs
    assert a.name == b.name  # named by track id
    assert a.read_bytes() == b.read_bytes()
    other = run_cli("generate", "--model", package, "--no-think", "--caption", "dub techno", "--lyrics", "[Instrumental]",
                    "--duration", "10.04", "--seed", "12", "--format", "wav32f", "--out", as_dir(tmp_path / "c"),
                    "--no-progress")
    assert other.returncode == 0, other.stderr
    (c,) = sorted((tmp_path / "c").glob("*.wav"))
    assert c.name != a.name and c.read_bytes() != a.read_bytes()


def test_batch_items_equal_single_runs(package):
    from acestep_runtime.pipeline import Pipeline

    with Pipeline.open(package, device="cpu") as pipe:
        base = {"thinking": False, "caption": "synthwave", "lyrics": "[Verse]\nneon lights", "duration": 11.0}
        both = pipe.generate({**base, "seeds": [5, 6], "batch_size": 2})
        one = pipe.generate({**base, "seeds": [5]})
        two = pipe.generate({**base, "seeds": [6]})
    assert both.seeds == [5, 6]
    np.testing.assert_allclose(both.latents[0], one.latents[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(both.latents[1], two.latents[0], atol=1e-5, rtol=0)
    assert np.max(np.abs(both.latents[0] - both.latents[1])) > 1e-3  # different seeds differ


@pytest.mark.parametrize("fmt,ext", [("wav16", ".wav"), ("wav24", ".wav"), ("wav32f", ".wav"), ("flac", ".flac"), ("mp3", ".mp3")])
def test_every_format_reads_back_at_48k_stereo(package, tmp_path, fmt, ext):
    proc = run_cli("generate", "--model", package, "--no-think", "--caption", "ambient", "--duration", "10", "--seed", "1",
                   "--format", fmt, "--out", tmp_path / "track", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / f"track{ext}"
    data, rate = sf.read(path, always_2d=True)
    sidecar = json.loads((tmp_path / f"track{ext}.json").read_text())
    frames = sidecar["frames"]
    assert rate == 48000 and data.shape[1] == 2
    assert sidecar["samples"] == 1920 * frames == 1920 * 250
    if fmt == "mp3":  # codec delay + frame padding, see audio_io
        assert 1920 * frames <= data.shape[0] < 1920 * frames + 2 * 1152
    else:
        assert data.shape[0] == 1920 * frames
    assert sidecar["seed"] == 1 and len(sidecar["track_id"]) == 64
    assert set(sidecar["host"]["timings_s"]) >= {"load", "encode", "diffusion", "decode", "total"}
    assert sidecar["host"]["format"] == fmt and sidecar["host"]["runtime"]["onnxruntime"]
    assert sidecar["model"]["manifest_sha256"]


@pytest.mark.parametrize("stage,sig", [("load", signal.SIGINT), ("diffusion", signal.SIGINT),
                                       ("decode", signal.SIGTERM)])
def test_a_signal_in_any_stage_writes_nothing_and_exits_130(package, tmp_path, stage, sig):
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    # A long track so the DiT loop and the decode take several seconds on the tiny model.
    proc = subprocess.Popen(
        [sys.executable, "-m", "acestep_runtime", "generate", "--model", str(package), "--no-think", "--caption", "x",
         "--duration", "300", "--seed", "1", "--out", str(tmp_path) + "/"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = ""
    deadline = time.monotonic() + 300
    while stage not in seen and time.monotonic() < deadline:
        chunk = proc.stderr.read(1)
        if not chunk:
            break
        seen += chunk
    assert stage in seen, seen
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, seen + err
    assert "cancelled" in err
    assert list(tmp_path.iterdir()) == []


def test_info_describes_the_package(package):
    proc = run_cli("info", package)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model_kind"] == "turbo"
    assert summary["random_weights"] is True and "RANDOM weights" in proc.stderr
    assert {"dit_decoder", "vae_decoder", "text_encoder"} <= set(summary["components"])


def _copy_package(src: Path, dst: Path) -> Path:
    """Hard-links every file (cheap), so one can be replaced without touching the original."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def test_corrupted_graph_is_detected(package, tmp_path):
    pkg = _copy_package(package, tmp_path / "pkg")
    target = pkg / "dit_decoder.onnx"
    data = bytearray(target.read_bytes())
    target.unlink()  # break the hard link before writing
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("generate", "--model", pkg, "--no-think", "--duration", "10", "--seed", "1", "--verify", "--out", as_dir(out))
    assert proc.returncode == 2
    assert "dit_decoder.onnx" in proc.stderr and "sha256" in proc.stderr
    assert list(out.iterdir()) == []


def test_truncated_graph_is_detected_without_verify(package, tmp_path):
    pkg = _copy_package(package, tmp_path / "pkg")
    target = pkg / "vae_decoder.onnx"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[: len(data) // 2])
    proc = run_cli("generate", "--model", pkg, "--no-think", "--duration", "10", "--out", tmp_path / "x.wav")
    assert proc.returncode == 2
    assert "vae_decoder.onnx" in proc.stderr and "size" in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "/nonexistent/pkg"], "model package not found"),
        (["--duration", "5"], "outside the supported range"),
        (["--duration", "601"], "outside the supported range"),
        (["--format", "ogg"], "unknown output format 'ogg'"),
        (["--bpm", "1000"], "bpm"),
        (["--shift", "-1"], "shift"),
    ],
)
def test_bad_input_is_a_clear_error(package, tmp_path, args, message):
    out = tmp_path / "out"
    out.mkdir()
    full = ["generate", "--model", package, "--no-think", "--duration", "10", "--out", as_dir(out), "--no-progress"]
    # later flags win with argparse
    proc = run_cli(*full, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.startswith("error:") or "error:" in proc.stderr
    assert list(out.iterdir()) == []


def test_unwritable_output_path_leaves_nothing(package, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = run_cli("generate", "--model", package, "--no-think", "--duration", "10", "--out", blocker / "x.wav", "--no-progress")
    assert proc.returncode == 2
    assert "output directory does not exist" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_request_file_with_unknown_key_is_rejected(package, tmp_path):
    request = tmp_path / "r.json"
    request.write_text(json.dumps({"caption": "x", "durration": 12}))
    proc = run_cli("generate", "--model", package, "--no-think", "--request", request, "--out", as_dir(tmp_path / "o"))
    assert proc.returncode == 2
    assert "request.durration: unknown key" in proc.stderr


def test_sidecar_reproduces_a_random_seed_track_bit_for_bit(package, tmp_path):
    first = run_cli("generate", "--model", package, "--no-think", "--caption", "glitch", "--duration", "10", "--format", "wav32f",
                    "--out", as_dir(tmp_path / "a"), "--no-progress")
    assert first.returncode == 0, first.stderr
    (audio,) = sorted((tmp_path / "a").glob("*.wav"))
    sidecar = json.loads(audio.with_name(audio.name + ".json").read_text())
    assert sidecar["request"]["seeds"] == [sidecar["seed"]] and sidecar["seed"] >= 0  # resolved, not []
    assert sidecar["host"]["audio_sha256"] and sidecar["runtime"]["core_abi"] == 1
    again = run_cli("generate", "--model", package, "--no-think", "--request", audio.with_name(audio.name + ".json"),
                    "--format", "wav32f", "--out", as_dir(tmp_path / "b"), "--no-progress")
    assert again.returncode == 0, again.stderr
    (copy,) = sorted((tmp_path / "b").glob("*.wav"))
    assert copy.name == audio.name and copy.read_bytes() == audio.read_bytes()


def test_existing_output_is_not_overwritten_without_the_flag(package, tmp_path):
    args = ["generate", "--model", package, "--no-think", "--caption", "x", "--duration", "10", "--seed", "4",
            "--out", tmp_path / "song.flac", "--no-progress"]
    assert run_cli(*args).returncode == 0
    before = (tmp_path / "song.flac").stat().st_mtime_ns
    refused = run_cli(*args)
    assert refused.returncode == 2 and "exists; pass --overwrite" in refused.stderr
    assert (tmp_path / "song.flac").stat().st_mtime_ns == before
    assert run_cli(*args, "--overwrite").returncode == 0


def test_format_follows_the_out_extension_and_wav_variants_get_distinct_names(package, tmp_path):
    mp3 = run_cli("generate", "--model", package, "--no-think", "--caption", "x", "--duration", "10", "--seed", "4",
                  "--out", tmp_path / "song.mp3", "--no-progress")
    assert mp3.returncode == 0, mp3.stderr
    assert (tmp_path / "song.mp3").is_file() and not list(tmp_path.glob("*.flac"))
    clash = run_cli("generate", "--model", package, "--no-think", "--caption", "x", "--duration", "10", "--seed", "4",
                    "--out", tmp_path / "other.mp3", "--format", "flac", "--no-progress")
    assert clash.returncode == 2 and "does not match format flac" in clash.stderr
    names = set()
    for fmt in ("wav16", "wav24", "wav32f"):
        proc = run_cli("generate", "--model", package, "--no-think", "--caption", "x", "--duration", "10", "--seed", "4",
                       "--format", fmt, "--out", as_dir(tmp_path / "d"), "--no-progress")
        assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "d").glob("*.wav"))
    assert len(names) == 3, names


def test_ignored_flags_are_announced_and_do_not_rename_the_track(package, tmp_path):
    plain = run_cli("generate", "--model", package, "--no-think", "--caption", "x", "--duration", "10", "--seed", "4",
                    "--out", as_dir(tmp_path / "a"), "--no-progress")
    noisy = run_cli("generate", "--model", package, "--no-think", "--caption", "x", "--duration", "10", "--seed", "4",
                    "--steps", "20", "--guidance-scale", "3", "--out", as_dir(tmp_path / "b"), "--no-progress")
    assert plain.returncode == 0 and noisy.returncode == 0, noisy.stderr
    assert "note: inference_steps=20, guidance_scale=3 ignored" in noisy.stderr
    assert [p.name for p in (tmp_path / "a").iterdir()] == [p.name for p in (tmp_path / "b").iterdir()]


def test_request_file_with_several_seeds_sets_the_batch(package, tmp_path):
    request = tmp_path / "r.json"
    request.write_text(json.dumps({"caption": "x", "duration": 10}))
    proc = run_cli("generate", "--model", package, "--no-think", "--request", request, "--seed", "1,2", "--out",
                   as_dir(tmp_path / "o"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "o").glob("*.flac"))) == 2


def test_version_and_bad_codes(package, tmp_path):
    proc = run_cli("--version")
    assert proc.returncode == 0 and "acestep-runtime 0.1.0" in proc.stdout and "ABI v1" in proc.stdout
    bad = run_cli("generate", "--model", package, "--no-think", "--audio-codes", "hello", "--out", as_dir(tmp_path / "o"))
    assert bad.returncode == 2 and "request.audio_codes" in bad.stderr and "invalid literal" not in bad.stderr
