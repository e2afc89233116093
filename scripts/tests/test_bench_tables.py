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


def test_a_worker_killed_in_a_long_duration_keeps_the_rows_it_finished(bench, monkeypatch):
    """A worker the OOM killer ends at 600 s still reports its shorter durations (printed as it finished
    them), and the tables say where it stopped; a reference without a 600 s row gets no ratio row there."""
    import json
    import subprocess
    import types

    def row(duration, total):
        keys = ("text", "condition", "dit_step", "vae", "total", "text_cpu", "condition_cpu", "dit_step_cpu",
                "vae_cpu", "total_cpu")
        return {**{k: total / 10 for k in keys}, "total": total, "total_cpu": total, "dit_steps": 8,
                "duration_s": duration, "frames": int(duration * 25), "rtf": total / duration,
                "load_avg_max": 1.0, "peak_rss_mb": 1024.0 * duration / 10}

    stdout = "\n".join(json.dumps({"row": row(d, d)}) for d in (10.0, 30.0)) + "\n"
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: types.SimpleNamespace(returncode=-9, stdout=stdout))
    args = types.SimpleNamespace(durations="10,30,600", repeats=1, threads=2)
    res = bench.run_worker("ort", "PKG", args)
    assert res["error"] == "worker exited with status -9"
    assert [r["duration_s"] for r in res["rows"]] == [10.0, 30.0]

    results = {"ort-int8": {"rows": res["rows"] + [], "load_s": None, "gemm_gflops": 300.0,
                            "incomplete": "worker exited with status -9 after the 10, 30 s rows, in the next duration"},
               "ort-fp32": {"rows": [row(10.0, 5.0), row(600.0, 900.0)], "load_s": 2.0, "gemm_gflops": 300.0},
               "torch-fp32": {"rows": [row(10.0, 10.0), row(30.0, 30.0)], "load_s": 1.0, "gemm_gflops": 300.0}}
    text = bench.markdown(results, "torch-fp32")
    assert "| ort-int8 | 30 s | – |" in text
    assert "Not finished (rows above are the durations each finished): ort-int8: worker exited with status -9" in text
    ratios = text.split("Ratios to")[1]
    assert "| ort-fp32 | 10 s | 0.50× | 0.50× | 0.50× | 0.50× | 0.50× |" in ratios
    assert "| ort-fp32 | 600 s" not in ratios and "| ort-int8 | 30 s | 1.00×" in ratios
