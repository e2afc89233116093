"""Naming and writing the tracks of a generation: audio file + JSON sidecar per item.

Each item is named by its track id (computed by the core from what decides the audio), so every
host names the same song the same way; batch size and output format are not part of the id.

Rules (docs/python_api.md):
- ``out`` ending in '/' or naming an existing directory: files ``<id[:16]><suffix>`` in it, where the
  suffix tells the format apart (``.flac``, ``.mp3``, ``.wav`` for wav16, ``.24bit.wav``, ``.f32.wav``);
- otherwise ``out`` is a file path; its extension picks the format when none is given (``.flac``,
  ``.mp3``, ``.wav`` → wav16) and must agree with a given one; a batch gets ``_<i>`` suffixes;
- an existing file is never replaced unless ``overwrite=True``; the check runs before anything is
  written (and, in the CLI, before generating);
- every file of the result is written in full under a temporary name first (a full disk or an
  interrupt leaves nothing), then renamed into place, audio then sidecar; the sidecar carries the audio
  file's sha256; the renames run under an exclusive lock on the directory (POSIX), so two concurrent
  writers publish one after the other (the existence check is repeated under the lock); temporaries a killed run left (``.<name>.*.partial``,
  older than an hour) are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from . import audio_io

_BY_EXTENSION = {".flac": "flac", ".mp3": "mp3", ".wav": "wav16"}


class OutputError(ValueError):
    """The output location or format cannot be used (names the path and the reason)."""


def _is_dir_target(out) -> bool:
    return str(out).endswith(("/", "\\")) or Path(out).is_dir()


def resolve_format(out, fmt: str | None) -> str:
    """The output format: ``fmt`` if given, else the extension of a file ``out``, else flac."""
    if _is_dir_target(out):
        return audio_io.resolve_format(fmt or "flac")
    ext = Path(out).suffix.lower()
    implied = _BY_EXTENSION.get(ext)
    if fmt is None:
        return implied or "flac"
    fmt = audio_io.resolve_format(fmt)
    if implied is not None and audio_io.extension(fmt) != ext:
        raise OutputError(f"--out {out} has the extension {ext}, which does not match format {fmt}")
    return fmt


def output_paths(out, file_names: dict[str, list[str]], fmt: str) -> list[Path]:
    """Where each item goes (see the module documentation). ``file_names`` is the core's naming of
    each item per format (``file_names`` of a generation plan)."""
    fmt = audio_io.resolve_format(fmt)
    names = file_names[fmt]
    if _is_dir_target(out):
        return [Path(out) / name for name in names]
    out = Path(out)
    ext = audio_io.extension(fmt)
    stem = out.with_suffix("") if out.suffix.lower() == ext else out
    if len(names) == 1:
        return [stem.with_name(stem.name + ext)]
    return [stem.with_name(f"{stem.name}_{i}{ext}") for i in range(len(names))]


def check_targets(paths: list[Path], *, overwrite: bool, creating_dir: bool = False) -> None:
    """Fails before any work when a target directory is missing (unless it is to be created) or a
    file would be replaced."""
    for path in paths:
        if not path.parent.is_dir():
            if creating_dir:
                continue
            raise OutputError(f"output directory does not exist: {path.parent}")
        for target in (path, sidecar_path(path)):
            if target.exists() and not overwrite:
                raise OutputError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")


@contextlib.contextmanager
def _publishing(directory: Path):
    """Holds an exclusive lock on the output directory while a result's files are renamed into it,
    so two writers of the same names publish one after the other and never mix their pairs (POSIX
    ``flock`` on the directory itself: no lock file; without fcntl, e.g. on Windows, no lock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sidecar_path(audio_path: Path) -> Path:
    return audio_path.with_name(audio_path.name + ".json")


def save(result, out, fmt: str | None = None, *, overwrite: bool = False, cancel=None) -> list[Path]:
    """Writes every item of a :class:`~acestep_runtime.pipeline.GenerationResult` (audio, then its
    sidecar ``<file>.json``). Returns the audio paths. Every file is first written in full under a
    temporary name; if ``cancel`` (a ``threading.Event``) is set by then, they are removed and
    ``Cancelled`` is raised, so an interrupt up to the final renames leaves nothing."""
    from .pipeline import Cancelled

    fmt = resolve_format(out, fmt)
    paths = output_paths(out, result.file_names, fmt)
    if str(out).endswith(("/", "\\")):
        Path(out).mkdir(parents=True, exist_ok=True)  # an explicit directory is created
    check_targets(paths, overwrite=overwrite)
    # Encode everything first: a failure in encoding leaves no file at all.
    encoded = [audio_io.encode(result.audio[i], fmt, sample_rate=result.sample_rate) for i in range(len(paths))]
    # Then every file goes to a temporary name; a full disk or an interrupt here leaves nothing.
    staged: list[tuple[Path, Path]] = []
    try:
        for i, path in enumerate(paths):
            sidecar = dict(result.sidecars[i])
            sidecar["host"] = dict(sidecar.get("host") or {}, file=path.name, format=fmt,
                                   audio_sha256=hashlib.sha256(encoded[i]).hexdigest())
            text = json.dumps(sidecar, ensure_ascii=False, indent=2) + "\n"
            staged.append((audio_io.write_temp(path, encoded[i]), path))
            staged.append((audio_io.write_temp(sidecar_path(path), text.encode("utf-8")), sidecar_path(path)))
        if cancel is not None and cancel.is_set():
            raise Cancelled("generation cancelled before its files were published")
        with _publishing(paths[0].parent):
            check_targets(paths, overwrite=overwrite)  # nobody created them meanwhile
            # audio, then its sidecar, per item (renames within one directory: no partial files)
            for tmp, final in staged:
                os.replace(tmp, final)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    return paths
