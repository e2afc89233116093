"""Session start: the optimised-graph cache (created, reused, invalidated, repaired) and sessions
loaded in background threads give the same bytes as sessions made one by one from the package."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnxruntime as ort
import pytest

from acestep_runtime.package import ModelPackage
from acestep_runtime.pipeline import Pipeline
from acestep_runtime.session_cache import ENV, INFO_FILE, MODEL_FILE, default_dir
from acestep_runtime.sessions import Sessions
from tools.parity.fixtures import tiny_package_dir

REQUEST = {"caption": "a calm piano piece", "lyrics": "[Verse]\nla la", "duration": 10, "seed": 7, "thinking": False}
COMPONENTS = ["text_encoder", "lyric_embedding", "condition_encoder", "dit_cross_kv", "dit_decoder", "vae_decoder"]


@pytest.fixture(scope="module")
def package():
    return tiny_package_dir()


def feeds_for(sess, rng) -> dict:
    """Random inputs of small concrete shapes for every input of a session (ids stay in range)."""
    sizes = {}
    out = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else sizes.setdefault(d, 2 if d == "batch" else 16) for d in i.shape]
        if i.type == "tensor(int64)":
            out[i.name] = np.ones(shape, np.int64) if "mask" in i.name else rng.integers(0, 100, shape)
        else:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def run_each(sessions: Sessions, names) -> dict:
    rng = np.random.default_rng(0)
    return {n: sessions.session(n).run(None, feeds_for(sessions.session(n), rng)) for n in names}


def entries(root):
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_cache_is_created_then_reused_with_identical_outputs(package, tmp_path):
    pkg = ModelPackage.open(package)
    plain = Sessions(pkg, device="cpu", threads=1, cache=None)
    first = Sessions(pkg, device="cpu", threads=1, cache=tmp_path)
    names = ["text_encoder", "dit_decoder", "vae_decoder"]
    expected = run_each(plain, names)
    assert run_each(first, names).keys() == expected.keys()
    assert not any(first.cache_hits.values())
    assert len(entries(tmp_path)) == 3
    for entry in tmp_path.iterdir():
        assert (entry / MODEL_FILE).is_file() and json.loads((entry / INFO_FILE).read_text())["component"] in names
    second = Sessions(pkg, device="cpu", threads=1, cache=tmp_path)
    got = run_each(second, names)
    assert all(second.cache_hits[n] for n in names)
    for n in names:
        for a, b in zip(expected[n], got[n]):
            assert a.tobytes() == b.tobytes(), n
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_cache_is_invalidated_by_the_ort_version_and_by_the_package_files(package, tmp_path, monkeypatch):
    pkg = ModelPackage.open(package)
    Sessions(pkg, device="cpu", cache=tmp_path).session("dit_cross_kv")
    (old,) = entries(tmp_path)
    monkeypatch.setattr(ort, "__version__", ort.__version__ + "-other")
    newer = Sessions(pkg, device="cpu", cache=tmp_path)
    newer.session("dit_cross_kv")
    assert newer.cache_hits == {"dit_cross_kv": False}
    (new,) = entries(tmp_path)  # the stale entry of this package and component is gone
    assert new != old
    monkeypatch.undo()

    # The same package with a graph file rewritten in place (same manifest, new mtime): a miss.
    copy = tmp_path / "pkg"
    copy.mkdir()
    for f in package.iterdir():
        (copy / f.name).symlink_to(f.resolve())
    (copy / "dit_cross_kv.onnx").unlink()
    (copy / "dit_cross_kv.onnx").write_bytes((package / "dit_cross_kv.onnx").read_bytes())
    cache = tmp_path / "cache"
    other = ModelPackage.open(copy)
    Sessions(other, device="cpu", cache=cache).session("dit_cross_kv")
    again = Sessions(other, device="cpu", cache=cache)
    again.session("dit_cross_kv")
    assert again.cache_hits == {"dit_cross_kv": True}
    (copy / "dit_cross_kv.onnx").write_bytes((package / "dit_cross_kv.onnx").read_bytes())
    touched = Sessions(ModelPackage.open(copy), device="cpu", cache=cache)
    touched.session("dit_cross_kv")
    assert touched.cache_hits == {"dit_cross_kv": False}
    assert len(entries(cache)) == 1


def test_a_damaged_entry_is_rebuilt(package, tmp_path, caplog):
    pkg = ModelPackage.open(package)
    Sessions(pkg, device="cpu", cache=tmp_path).session("dit_cross_kv")
    (entry,) = tmp_path.iterdir()
    (entry / MODEL_FILE).write_bytes(b"not a graph")
    with caplog.at_level(logging.WARNING, logger="acestep_runtime"):
        fresh = Sessions(pkg, device="cpu", cache=tmp_path)
        fresh.session("dit_cross_kv")
    assert "unusable" in caplog.text and fresh.cache_hits == {"dit_cross_kv": False}
    again = Sessions(pkg, device="cpu", cache=tmp_path)
    again.session("dit_cross_kv")
    assert again.cache_hits == {"dit_cross_kv": True}


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, str(tmp_path / "c"))
    assert default_dir() == tmp_path / "c"
    for off in ("off", "0", ""):
        monkeypatch.setenv(ENV, off)
        assert default_dir() is None
    monkeypatch.delenv(ENV)
    assert default_dir() is None  # off unless asked for


def test_without_prepacking_the_outputs_stay_close(package):
    """prepack=False (--fast-start): GEMMs pack their weights on the fly, which may round differently
    but must agree with the pre-packed session."""
    pkg = ModelPackage.open(package)
    names = ["text_encoder", "dit_decoder"]
    packed = run_each(Sessions(pkg, device="cpu", threads=1, cache=None), names)
    fast = Sessions(pkg, device="cpu", threads=1, cache=None, prepack=False)
    got = run_each(fast, names)
    for n in names:
        for a, b in zip(packed[n], got[n]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()), err_msg=n)


def test_a_failed_background_load_raises_where_the_session_is_needed(package, tmp_path):
    pkg = ModelPackage.open(package)
    sessions = Sessions(pkg, device="cpu", cache=None)
    sessions.preload(["text_encoder", "no_such_component"])
    with pytest.raises(Exception, match="no_such_component"):
        sessions.session("no_such_component")
    assert sessions.session("text_encoder") is not None
    sessions.close()


def test_parallel_cached_start_gives_the_same_bytes_as_sequential_uncached(package, tmp_path):
    """One generation with sessions made one at a time from the package (no cache), one that fills
    the cache with sessions loading in parallel, one that loads them back from the cache."""
    results = []
    for cache, workers in ((None, 1), (tmp_path, 3), (tmp_path, 3)):
        pkg = ModelPackage.open(package)
        with Pipeline(pkg, Sessions(pkg, device="cpu", threads=1, cache=cache, load_workers=workers)) as pipe:
            results.append((pipe.generate(REQUEST), dict(pipe.sessions.cache_hits)))
    (base, _), (filled, hits_fill), (cached, hits_cached) = results
    assert not any(hits_fill.values()) and set(hits_cached) == set(COMPONENTS) and all(hits_cached.values())
    for r in (filled, cached):
        assert r.audio.tobytes() == base.audio.tobytes()
        assert r.latents.tobytes() == base.latents.tobytes()
