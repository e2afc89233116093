"""Naming and writing the tracks of a generation: audio file + JSON sidecar per item, atomically.

Each item is named by its track id (core ``ace_track_id``: SHA-256 over the canonical JSON of the
parameters that decide the music), so every host names the same song the same way. The batch size
and the output format are not part of the id: item i of a batch equals the single run of its seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import audio_io
from .frames import track_id
from .package import ModelPackage
from .pipeline import GenerationResult
from .request import GenerationRequest


def item_params(request: GenerationRequest, result: GenerationResult, index: int, package: ModelPackage) -> dict:
    params = request.to_dict()
    for key in ("seeds", "batch_size"):
        params.pop(key)
    params["seed"] = result.seeds[index]
    params["frames"] = result.frames
    params["model_manifest_sha256"] = package.manifest_sha256
    return params


def output_paths(out: str | Path, ids: list[str], fmt: str) -> list[Path]:
    """``out`` is a directory (existing, or ending in '/'), or a file path; a batch gets ``_i`` suffixes."""
    ext = audio_io.extension(fmt)
    as_dir = str(out).endswith(("/", "\\"))
    out = Path(out)
    if as_dir or out.is_dir():
        return [out / f"{tid[:16]}{ext}" for tid in ids]
    stem = out.with_suffix("") if out.suffix.lower() == ext else out
    if len(ids) == 1:
        return [stem.with_name(stem.name + ext)]
    return [stem.with_name(f"{stem.name}_{i}{ext}") for i in range(len(ids))]


def save(result: GenerationResult, request: GenerationRequest, package: ModelPackage, out, fmt: str) -> list[Path]:
    """Writes every item (audio, then its sidecar ``<file>.json``). Returns the audio paths."""
    fmt = audio_io.resolve_format(fmt)
    params = [item_params(request, result, i, package) for i in range(len(result.seeds))]
    ids = [track_id(p) for p in params]
    paths = output_paths(out, ids, fmt)
    if str(out).endswith(("/", "\\")):
        Path(out).mkdir(parents=True, exist_ok=True)  # an explicit directory is created
    for parent in {p.parent for p in paths}:
        if not parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {parent}")
    # Encode everything first: a failure in encoding leaves no file at all.
    encoded = [audio_io.encode(result.audio[i], fmt, sample_rate=result.sample_rate) for i in range(len(paths))]
    for i, path in enumerate(paths):
        audio_io.write_bytes_atomic(path, encoded[i])
        sidecar = {
            "track_id": ids[i],
            "file": path.name,
            "format": fmt,
            "sample_rate": result.sample_rate,
            "channels": int(result.audio.shape[1]),
            "samples": int(result.audio.shape[2]),
            "seed": result.seeds[i],
            "request": request.to_dict(),
            "params": params[i],
            "frames": result.frames,
            "schedule": result.schedule,
            "peak_before_guard": result.peaks[i],
            "timings_s": result.timings,
            "ort_seconds": result.ort_seconds,
            "model": {"path": str(package.root), "variant": package.variant, "manifest_sha256": package.manifest_sha256},
        }
        text = json.dumps(sidecar, ensure_ascii=False, indent=2) + "\n"
        audio_io.write_bytes_atomic(path.with_name(path.name + ".json"), text.encode("utf-8"))
    return paths
