"""The one-call Python API: ``acestep_runtime.generate(...)``. See docs/python_api.md."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_DIR = Path(__file__).resolve().parents[3]
TINY_PACKAGE = _REPO_DIR / "fixtures" / "generated" / "tiny-package"
# built without torch by `python -m tools.demo_package` (scripts/run_demo.sh)
DEMO_PACKAGE = _REPO_DIR / "fixtures" / "generated" / "demo-package"


def default_model() -> Path:
    """``$ACESTEP_MODEL`` if set, else a random-weight package of a source checkout: the tiny test
    package (built by the exporter, ``scripts/setup.sh --dev``) when present, else the demo package
    (``python -m tools.demo_package``, no torch needed)."""
    env = os.environ.get("ACESTEP_MODEL")
    if env:
        return Path(env)
    if not TINY_PACKAGE.is_dir() and DEMO_PACKAGE.is_dir():
        return DEMO_PACKAGE
    return TINY_PACKAGE


def generate(caption: str = "", lyrics: str = "", *, duration: float | None = None, seed: int | None = None,
             model: str | os.PathLike | None = None, device: str = "auto", threads: int | None = None,
             progress=None, **request):
    """Generates one track (or a batch) and returns a :class:`~acestep_runtime.pipeline.GenerationResult`.

    ``caption``, ``lyrics``, ``duration`` (seconds, 10–600) and ``seed`` are the common request keys;
    any other key of the request schema (``bpm``, ``keyscale``, ``vocal_language``, ``batch_size``,
    ``infer_method``, ``audio_codes``, ...) can be passed as a keyword. ``model`` is a model package
    directory (default: :func:`default_model`). Save the result with ``result.save(path)``.

    For several generations on one package, open a :class:`~acestep_runtime.pipeline.Pipeline` once.
    """
    from .pipeline import Pipeline

    body = {"caption": caption, "lyrics": lyrics, **request}
    if duration is not None:
        body["duration"] = duration
    if seed is not None:
        body["seed"] = seed
    with Pipeline.open(model if model is not None else default_model(), device=device, threads=threads) as pipe:
        return pipe.generate(body, progress=progress)
