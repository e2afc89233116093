"""The examples of docs/python_api.md run as written (doctest), on the tiny package."""

from __future__ import annotations

import doctest
from pathlib import Path

from tools.parity.fixtures import tiny_package_dir

DOC = Path(__file__).resolve().parents[3] / "docs" / "python_api.md"


def test_python_api_doc_examples_run(monkeypatch):
    monkeypatch.setenv("ACESTEP_MODEL", str(tiny_package_dir()))
    result = doctest.testfile(str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 15
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {DOC.name} failed (see output)"


def test_public_names_have_docstrings():
    import acestep_runtime
    from acestep_runtime import generation, outputs, package, pipeline

    names = [acestep_runtime.generate, acestep_runtime.default_model, pipeline.Pipeline, pipeline.Pipeline.open,
             pipeline.Pipeline.generate, pipeline.Pipeline.plan, pipeline.GenerationResult,
             pipeline.GenerationResult.save, generation.Generation, generation.Generation.next,
             generation.Generation.submit, package.ModelPackage, outputs.save]
    missing = [n.__qualname__ for n in names if not (n.__doc__ or "").strip()]
    assert not missing, missing
