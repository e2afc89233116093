"""The C# host against independent references, driven from Python (bindings/csharp/test.sh runs it
after building bin/ with mcs):

- core noise through P/Invoke == torch.randn, and == the core through cffi;
- the library loader: an explicit path works from a directory without the library, a bad one fails
  with a message that lists where it looked;
- the per-step C# example (examples/ffi/csharp) == the Python host's ``Pipeline.generate`` on the
  tiny package: same final latents, same audio, same WAV bytes, bit for bit.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from csharp_hosts import BIN, PACKAGE, mono, ok, require_package
from csharp_hosts import CASES as DRIVER_CASES


# -- noise ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,seed", [((1, 250, 64), 42), ((3, 7), 0), ((2, 5, 16), 2**32 + 5), ((17,), 123456789)])
def test_noise_matches_torch_and_the_core_via_python(tmp_path, shape, seed):
    torch = pytest.importorskip("torch")
    from acestep_runtime import noise

    out = tmp_path / "noise.f32"
    used = int(ok(mono("Tests.exe", "noise", seed, "torch_cpu", *shape, out)).stdout.strip())
    assert used == seed
    got = np.fromfile(out, dtype="<f4").reshape(shape)
    expect = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()
    assert got.tobytes() == expect.tobytes()
    via_python, _ = noise.randn(shape, seed)
    assert got.tobytes() == via_python.tobytes()


def test_noise_random_seed_is_reported_and_reproducible(tmp_path):
    a, b = tmp_path / "a.f32", tmp_path / "b.f32"
    used = int(ok(mono("Tests.exe", "noise", -1, "torch_cpu", 4, 4, a)).stdout.strip())
    assert 0 <= used < 2**32
    assert int(ok(mono("Tests.exe", "noise", used, "torch_cpu", 4, 4, b)).stdout.strip()) == used
    assert a.read_bytes() == b.read_bytes()


# -- library resolution ---------------------------------------------------------------------------


def test_library_from_an_explicit_path_and_a_clear_error_when_missing(tmp_path):
    # The runner and the binding in a directory without the core library: only the path given works.
    for name in ("Tests.exe", "AceStep.Runtime.dll"):
        shutil.copy(BIN / name, tmp_path / name)
    real = (BIN / "libacestep_runtime.so").resolve()
    env = {k: v for k, v in os.environ.items() if k not in ("ACESTEP_RUNTIME_LIB", "LD_LIBRARY_PATH")}

    def run(extra):
        return subprocess.run(["mono", str(tmp_path / "Tests.exe"), "load-library"], capture_output=True, text=True,
                              env={**env, **extra}, timeout=60)

    missing = run({})
    assert missing.returncode == 3, missing.stdout + missing.stderr
    assert str(tmp_path / "libacestep_runtime.so") in missing.stdout  # names where it looked
    assert "ACESTEP_RUNTIME_LIB" in missing.stdout and "LD_LIBRARY_PATH" in missing.stdout

    bad = run({"ACESTEP_RUNTIME_LIB": str(tmp_path / "nope" / "libacestep_runtime.so")})
    assert bad.returncode == 3 and str(tmp_path / "nope" / "libacestep_runtime.so") in bad.stdout

    good = run({"ACESTEP_RUNTIME_LIB": str(real)})
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"loaded from {real}, ABI 1" in good.stdout


# -- the per-step example vs the Python host ------------------------------------------------------------

# The driver tests' requests (csharp_hosts.CASES), so the Python host runs each once.
CASES = {"ode": DRIVER_CASES["turbo_ode"][1], "sde_batch2": DRIVER_CASES["sde_batch2"][1], "tiled": DRIVER_CASES["tiled_24s"][1]}
# Pinned to one thread: the SDE and the tiled ODE runs ("ode" runs with ORT's default threads below).
PINNED = ["sde_batch2", "tiled"]


def run_example(tmp_path, request: dict, threads: int | None = 1):
    import json

    req = tmp_path / "request.json"
    # The per-step example is a hand-written DiT loop that knows no LM keys; the cases are DiT runs.
    request = {k: v for k, v in request.items() if k != "thinking"}
    req.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
    out, dump = tmp_path / "out", tmp_path / "dump"
    args = ["Generate.exe", "--model", require_package(PACKAGE), "--request", req, "--out", out, "--device", "cpu", "--dump", dump]
    if threads is not None:
        args += ["--threads", threads]
    proc = ok(mono(*args))
    return out, dump, proc


@pytest.mark.parametrize("case", PINNED)
def test_example_matches_the_python_host_bit_for_bit(tmp_path, python_host, case):
    check_example(tmp_path, case, python_host.result(PACKAGE, CASES[case]), threads=1)


def test_example_with_default_threads_still_matches(tmp_path):
    """ORT's default intra-op thread count on both sides (not pinned to 1)."""
    from acestep_runtime.pipeline import Pipeline

    with Pipeline.open(require_package(PACKAGE), device="cpu") as pipe:
        result = pipe.generate(dict(CASES["ode"]))
    check_example(tmp_path, "ode", result, threads=None)


def check_example(tmp_path, case: str, result, threads: int | None) -> None:
    """Generate.exe on CASES[case]: same latents, audio and WAV bytes as the Python host's ``result``."""
    import soundfile as sf
    from acestep_runtime import audio_io

    out, dump, _ = run_example(tmp_path, CASES[case], threads)

    latents = np.fromfile(dump / "latents.f32", dtype="<f4").reshape(result.latents.shape)
    audio = np.fromfile(dump / "audio.f32", dtype="<f4").reshape(result.audio.shape)
    assert latents.tobytes() == result.latents.tobytes(), f"latents max_abs {np.abs(latents - result.latents).max()}"
    assert audio.tobytes() == result.audio.tobytes(), f"audio max_abs {np.abs(audio - result.audio).max()}"

    batch, channels, samples = result.audio.shape
    assert channels == 2 and samples == 1920 * result.frames
    if case.startswith("tiled"):
        from acestep_runtime.frames import vae_tile_plan

        assert len(vae_tile_plan(result.frames)) == 2
    for b, seed in enumerate(result.seeds):
        wav = out / f"seed{seed}.wav"
        # Same bytes as the Python host's float WAV encoder (libsndfile) for the same audio.
        assert wav.read_bytes() == audio_io.encode(result.audio[b], "wav32f")
        data, rate = sf.read(wav, dtype="float32", always_2d=True)
        assert rate == 48000 and data.shape == (samples, 2)
        assert data.T.tobytes() == result.audio[b].tobytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"seed{s}.wav" for s in result.seeds)  # no temp files left


def test_example_cancelled_writes_nothing(tmp_path):
    import json

    req = tmp_path / "request.json"
    req.write_text(json.dumps({k: v for k, v in CASES["ode"].items() if k != "thinking"}), encoding="utf-8")
    proc = mono("Generate.exe", "--model", PACKAGE, "--request", req, "--out", tmp_path / "o", "--timeout", "0.001")
    assert proc.returncode == 130 and "cancelled: nothing was written" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_example_errors_are_one_line_and_name_the_problem(tmp_path):
    import json

    req = tmp_path / "bad.json"
    req.write_text(json.dumps({"caption": "x", "durration": 10}), encoding="utf-8")
    proc = mono("Generate.exe", "--model", PACKAGE, "--request", req, "--out", tmp_path / "o")
    assert proc.returncode == 1 and "unknown request key: durration" in proc.stderr
    req.write_text(json.dumps({"caption": "x", "duration": 5, "seed": 1}), encoding="utf-8")
    proc = mono("Generate.exe", "--model", PACKAGE, "--request", req, "--out", tmp_path / "o")
    assert proc.returncode == 1 and "duration" in proc.stderr and "[invalid_argument]" in proc.stderr
    proc = mono("Generate.exe", "--model", tmp_path / "nowhere", "--request", req, "--out", tmp_path / "o")
    assert proc.returncode == 1 and "model package not found" in proc.stderr
    assert not (tmp_path / "o").exists()
