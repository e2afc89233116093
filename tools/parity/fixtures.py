"""Tiny checkpoints and the tiny model package, built once and cached under `fixtures/generated/`.

    from tools.parity.fixtures import tiny_checkpoints_dir, tiny_package_dir
    ckpt = tiny_checkpoints_dir()   # fixtures/generated/tiny-checkpoints (seed 0, official layout)
    pkg = tiny_package_dir()        # fixtures/generated/tiny-package (turbo, exported from ckpt)
    base = tiny_package_dir(variant="base")  # fixtures/generated/tiny-package-base (guided: CFG/APG)

    python -m tools.parity.fixtures [--force] [--variant turbo|base|all]   # from the shell
                                                    # (scripts/make_tiny_package.sh builds both)

The turbo package holds every component (text encoder, VAE, DiT `acestep-v15-turbo`, 5 Hz LM). The base
package is exported from its own checkpoints folder `tiny-checkpoints-base` (text encoder, VAE and a DiT
folder `acestep-v15-base` with `is_turbo: false`, same seed; no LM, which keeps its export short): it is
what the guided path (CFG, APG, cfg interval, `null_condition_emb`) runs on.

Each directory has a stamp file beside it (`<name>.stamp`) holding a hash of `tools/onnx_export/**/*.py`
and `tools/make_qwen_tokenizer.py`; when the hash changes (or the stamp is missing) the directory is
rebuilt. A build runs in a temporary directory next to the target and is renamed into place only when it
finished, and the stamp is written last, so an interrupted build never leaves a directory that looks
valid. A lock file serialises builds between concurrent processes (pytest-xdist, two shells).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

try:
    import fcntl
except ImportError:  # Windows: builds are not serialised between processes (one process at a time)
    fcntl = None

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "fixtures" / "generated"
CHECKPOINTS_NAME = "tiny-checkpoints"
PACKAGE_NAME = "tiny-package"
SEED = 0


class _Variant(NamedTuple):
    checkpoints: str  # folder under fixtures/generated
    package: str
    dit: str  # official DiT folder name
    lm: str  # LM folder name, or "none"


VARIANTS = {
    "turbo": _Variant(CHECKPOINTS_NAME, PACKAGE_NAME, "acestep-v15-turbo", "acestep-5Hz-lm-0.6B"),
    "base": _Variant("tiny-checkpoints-base", "tiny-package-base", "acestep-v15-base", "none"),
}


def _variant(name: str) -> _Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown tiny variant {name!r} (known: {', '.join(VARIANTS)})") from None


def source_hash(root: Path = ROOT) -> str:
    """sha256 over the exporter sources (path + content, sorted), the inputs of both builds."""
    files = sorted((root / "tools" / "onnx_export").rglob("*.py"))
    files.append(root / "tools" / "make_qwen_tokenizer.py")
    h = hashlib.sha256()
    for f in files:
        if "__pycache__" in f.parts or not f.is_file():
            continue
        if f.relative_to(root).parts[:3] == ("tools", "onnx_export", "v1"):
            continue  # the v1 exporter has its own fixtures and stamp (tools/onnx_export/v1/fixtures.py)
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".stamp")


def _is_current(target: Path, digest: str) -> bool:
    stamp = _stamp(target)
    return target.is_dir() and stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == digest


@contextlib.contextmanager
def _lock(generated: Path):
    generated.mkdir(parents=True, exist_ok=True)
    with open(generated / ".lock", "w") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _run(args: list[str], what: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"building the {what} failed (exit {proc.returncode}): {' '.join(args)}\n{tail}")


def _build(target: Path, digest: str, build, force: bool) -> Path:
    """Build `target` with build(tmp_out) unless current; temp dir + rename, stamp written last."""
    with _lock(target.parent):
        if not force and _is_current(target, digest):
            return target
        _stamp(target).unlink(missing_ok=True)  # from here on the old directory is not trusted
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            out = tmp / target.name
            build(out)
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}-old-{os.getpid()}")
                os.replace(target, old)
            os.replace(out, target)
            _stamp(target).write_text(digest + "\n", encoding="utf-8")
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_checkpoints_dir(*, variant: str = "turbo", generated: Path = GENERATED, force: bool = False) -> Path:
    """Tiny random-weight checkpoints (seed 0) in the official layout; built on first use or source change."""
    v = _variant(variant)
    target = generated / v.checkpoints

    def build(out: Path) -> None:
        _run(["-m", "tools.onnx_export.make_tiny", "--out", str(out), "--seed", str(SEED), "--dit", v.dit,
              "--lm", v.lm], f"tiny {variant} checkpoints")

    return _build(target, source_hash(), build, force)


def tiny_package_dir(*, variant: str = "turbo", generated: Path = GENERATED, force: bool = False) -> Path:
    """The model package exported (real CLI) from `tiny_checkpoints_dir(variant=variant)`."""
    v = _variant(variant)
    ckpt = tiny_checkpoints_dir(variant=variant, generated=generated, force=force)
    target = generated / v.package
    # the package depends on the checkpoints, which depend on the same sources: one digest covers both
    return _build(target, source_hash(),
                  lambda out: _run(["-m", "tools.onnx_export", "--checkpoints", str(ckpt), "--out", str(out),
                                    "--dit", v.dit, "--lm", v.lm],
                                   f"tiny {variant} model package"),
                  force)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.parity.fixtures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when the stamps are current")
    ap.add_argument("--generated", type=Path, default=GENERATED, help="output root (default: %(default)s)")
    ap.add_argument("--variant", choices=[*VARIANTS, "all"], default="all",
                    help="which tiny package to build (default: %(default)s)")
    args = ap.parse_args(argv)
    for variant in VARIANTS if args.variant == "all" else [args.variant]:
        start = time.perf_counter()
        pkg = tiny_package_dir(variant=variant, generated=args.generated, force=args.force)  # checkpoints first
        ckpt = args.generated / VARIANTS[variant].checkpoints
        print(f"tiny {variant} checkpoints: {ckpt}")
        print(f"tiny {variant} package: {pkg} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
