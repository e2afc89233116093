"""The cached fixture builder: stamp-gated reuse, rebuild on source change, nothing half-built left behind."""
from __future__ import annotations

import pytest

from tools.parity import fixtures


def _writer(calls: list, text: str):
    def build(out):
        calls.append(out)
        out.mkdir()
        (out / "data.txt").write_text(text)
    return build


def test_build_reuses_current_and_rebuilds_on_new_digest(tmp_path):
    target = tmp_path / "thing"
    calls: list = []
    assert fixtures._build(target, "d1", _writer(calls, "one"), force=False) == target
    assert (target / "data.txt").read_text() == "one" and (tmp_path / "thing.stamp").read_text().strip() == "d1"
    fixtures._build(target, "d1", _writer(calls, "two"), force=False)
    assert len(calls) == 1 and (target / "data.txt").read_text() == "one"  # current: not rebuilt
    fixtures._build(target, "d2", _writer(calls, "two"), force=False)
    assert len(calls) == 2 and (target / "data.txt").read_text() == "two"
    fixtures._build(target, "d2", _writer(calls, "three"), force=True)
    assert len(calls) == 3 and (target / "data.txt").read_text() == "three"
    # only the target, its stamp and the lock file remain: temp and old directories are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "thing", "thing.stamp"]


def test_interrupted_build_leaves_no_valid_looking_directory(tmp_path):
    target = tmp_path / "thing"
    fixtures._build(target, "d1", _writer([], "one"), force=False)

    def crash(out):
        out.mkdir()
        (out / "partial").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fixtures._build(target, "d2", crash, force=False)
    assert not (tmp_path / "thing.stamp").exists()  # the old directory is no longer trusted
    assert not (target / "partial").exists()  # the partial build never replaced it
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "thing"]
    calls: list = []
    fixtures._build(target, "d1", _writer(calls, "again"), force=False)
    assert len(calls) == 1 and (target / "data.txt").read_text() == "again"  # rebuilt although d1 was its digest


def test_source_hash_tracks_exporter_sources(tmp_path):
    (tmp_path / "tools" / "onnx_export" / "sub").mkdir(parents=True)
    (tmp_path / "tools" / "make_qwen_tokenizer.py").write_text("a = 1\n")
    (tmp_path / "tools" / "onnx_export" / "sub" / "m.py").write_text("b = 1\n")
    h1 = fixtures.source_hash(tmp_path)
    (tmp_path / "tools" / "onnx_export" / "notes.md").write_text("not a source")
    assert fixtures.source_hash(tmp_path) == h1
    (tmp_path / "tools" / "onnx_export" / "sub" / "m.py").write_text("b = 2\n")
    h2 = fixtures.source_hash(tmp_path)
    assert h2 != h1
    (tmp_path / "tools" / "make_qwen_tokenizer.py").write_text("a = 2\n")
    assert fixtures.source_hash(tmp_path) != h2


def test_unknown_variant_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown tiny variant 'sfx' \(known: turbo, base\)"):
        fixtures.tiny_package_dir(variant="sfx", generated=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was started
