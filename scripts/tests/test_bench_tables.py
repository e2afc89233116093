"""scripts/bench.py --tables: the generated tables replace only what lies between the bench markers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tables_go_between_the_markers_and_the_rest_is_kept(bench, tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Title\n\nintro\n", encoding="utf-8")
    bench.write_between_markers(doc, "| a |\n")
    first = doc.read_text(encoding="utf-8")
    assert first == f"# Title\n\nintro\n\n{bench.BEGIN}\n| a |\n{bench.END}\n"
    # Another helper's section after the markers, then a new run: only the tables change.
    doc.write_text(first + "\n## VAE decode\n\nkept\n", encoding="utf-8")
    bench.write_between_markers(doc, "| b |\n| c |\n")
    assert doc.read_text(encoding="utf-8") == (
        f"# Title\n\nintro\n\n{bench.BEGIN}\n| b |\n| c |\n{bench.END}\n\n## VAE decode\n\nkept\n")


def test_a_file_with_one_marker_is_refused_untouched(bench, tmp_path):
    doc = tmp_path / "performance.md"
    text = f"# Title\n{bench.END}\nrest\n"
    doc.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit, match="markers"):
        bench.write_between_markers(doc, "| a |\n")
    assert doc.read_text(encoding="utf-8") == text


def test_a_tiny_run_measures_every_backend(tmp_path):
    """One short run of the whole script on the tiny package and its checkpoints: each backend's worker
    completes (a worker that fails is only reported by the script, so a full-size run would silently
    lose its reference: this is how the torch worker once broke on a request key)."""
    import json
    import os
    import subprocess
    import sys

    torch = pytest.importorskip("torch")  # noqa: F841 (the reference backend needs it)
    from tools.parity.fixtures import tiny_checkpoints_dir, tiny_package_dir

    root = SCRIPT.parents[1]
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "bindings" / "python"), str(root)]))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tiny_package_dir()), "--torch",
                           str(tiny_checkpoints_dir()), "--durations", "10", "--repeats", "1", "--threads", "1",
                           "--json", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["ort-fp32", "torch-fp32"], proc.stdout[-3000:]
    for name, backend in results.items():
        assert "error" not in backend, (name, backend)
        (row,) = backend["rows"]
        assert row["frames"] == 250 and row["dit_steps"] == 8, (name, row)
        assert 0 < row["dit_step"] * row["dit_steps"] < row["total"], (name, row)
    assert "Ratios to `torch-fp32`" in proc.stdout
