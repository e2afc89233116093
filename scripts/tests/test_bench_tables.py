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
