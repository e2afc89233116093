"""The host registers the core library's ONNX Runtime kernels (ai.acestep.Snake) on CPU sessions by
default: the song is the one the unfused function bodies give (latents bit for bit, audio within 1e-5),
the sidecar says which ran, and an onnxruntime that refuses the library leaves the graphs unfused."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from acestep_runtime import ort_ops
from acestep_runtime.pipeline import Pipeline
from tools.parity.fixtures import tiny_package_dir

REQUEST = {"caption": "a calm piano piece", "lyrics": "[Verse]\nla la", "duration": 12, "seed": 11, "thinking": False}


@pytest.fixture(scope="module")
def songs():
    out = {}
    for fused in (True, False):
        with Pipeline.open(tiny_package_dir(), device="cpu", threads=2, session_cache=None, fused_ops=fused) as pipe:
            out[fused] = pipe.generate(REQUEST)
    return out


def test_fused_kernels_give_the_unfused_song(songs):
    fused, plain = songs[True], songs[False]
    assert np.array_equal(fused.latents, plain.latents), "the VAE is the only graph with ai.acestep ops"
    assert np.abs(plain.audio).max() > 1e-3
    assert np.abs(fused.audio - plain.audio).max() <= 1e-5
    assert fused.track_ids == plain.track_ids


def test_the_sidecar_says_whether_the_fused_kernels_ran(songs):
    assert songs[True].sidecars[0]["host"]["runtime"]["fused_ops"] == "ai.acestep"
    assert songs[False].sidecars[0]["host"]["runtime"]["fused_ops"] is None


def test_an_onnxruntime_that_refuses_the_library_runs_the_graphs_unfused(monkeypatch, caplog):
    def refuse(self, path):
        raise RuntimeError("this onnxruntime is too old")

    import onnxruntime as ort

    monkeypatch.setattr(ort.SessionOptions, "register_custom_ops_library", refuse, raising=False)
    caplog.set_level(logging.WARNING)
    with Pipeline.open(tiny_package_dir(), device="cpu", threads=1, session_cache=None) as pipe:
        result = pipe.generate({**REQUEST, "duration": 10})
        assert pipe.sessions.fused_ops is False
    assert result.sidecars[0]["host"]["runtime"]["fused_ops"] is None
    assert np.isfinite(result.audio).all()
    warned = [r.getMessage() for r in caplog.records if r.name == ort_ops.__name__]
    assert len(warned) == 1 and "too old" in warned[0], warned
