"""scripts/bench_vae.py on the tiny decoder: its tiled decode loop stitches windows into the untiled audio
(an overlap of 10 frames covers the decoder's receptive field), and the profile prints op shares."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_vae  # noqa: E402
from tools.parity.fixtures import tiny_package_dir  # noqa: E402


def test_tiled_decode_equals_untiled():
    from acestep_runtime.frames import vae_tile_plan

    sess = bench_vae.session(str(tiny_package_dir() / "vae_decoder.onnx"), threads=1)
    latents = np.random.default_rng(0).standard_normal((1, 64, 40), dtype=np.float32)
    (whole,) = sess.run(None, {"latents": latents})
    plan = vae_tile_plan(40, 24, 10)
    assert len(plan) == 10
    assert np.abs(bench_vae.decode(sess, latents, plan) - whole).max() <= 1e-5


def test_bench_runs_and_profiles(capsys):
    graph = tiny_package_dir() / "vae_decoder.onnx"
    assert bench_vae.main(["--graph", f"a={graph}", "--plan", "512:64", "--plan", "24:10", "--seconds", "1.6",
                           "--repeats", "1", "--threads", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "fp32 GEMM" in out and "load average" in out
    assert re.search(r"a@512:64 +1 ", out) and re.search(r"a@24:10 +10 ", out)
    shares = dict((op, float(x)) for op, x in re.findall(r"^ {4}(\w+) +([\d.]+) %$", out, re.M))
    # the ten largest op types: Conv among them, their shares a part of the whole
    assert "Conv" in shares and "Cos" in shares and 4 <= len(shares) <= 10, shares
    assert 50 <= sum(shares.values()) <= 100 + 0.05 * len(shares), shares  # each printed to 0.1 %


def test_ops_variant_runs_the_fused_kernel(capsys):
    """--ops NAME opens that variant with the core's kernels: its profile shows Snake and no Cos, and its
    audio is the function bodies' within float rounding."""
    graph = tiny_package_dir() / "vae_decoder.onnx"
    assert bench_vae.main(["--graph", f"bodies={graph}", "--graph", f"fused={graph}", "--ops", "fused",
                           "--seconds", "1.6", "--repeats", "1", "--threads", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    diff = float(re.search(r"fused@512:16 +1 +[\d.]+ +[\d.]+ +[\d.]+ +([\d.e+-]+)", out).group(1))
    assert diff <= 1e-5
    fused_profile = out[out.index("profile fused"):]
    assert "Snake" in fused_profile and "Cos" not in fused_profile
    bodies_profile = out[out.index("profile bodies"):out.index("profile fused")]
    assert "Cos" in bodies_profile and "Snake" not in bodies_profile
