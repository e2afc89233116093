"""The tiny v1 checkpoints and package, built once and cached under `fixtures/generated/` with a stamp
(same mechanism as tools/parity/fixtures.py for 1.5).

    python -m tools.onnx_export.v1.fixtures [--force]

`tiny-v1-checkpoints/` (seed 0, official layout) and `tiny-v1-package/` (exported with the real CLI);
the stamp hashes tools/onnx_export/v1/*.py, common.py and package.py.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from tools.parity.fixtures import GENERATED, ROOT, SEED, _build, _run

CHECKPOINTS_NAME = "tiny-v1-checkpoints"
PACKAGE_NAME = "tiny-v1-package"


def v1_source_hash(root: Path = ROOT) -> str:
    base = root / "tools" / "onnx_export"
    files = sorted((base / "v1").glob("*.py")) + [base / "common.py", base / "package.py"]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def tiny_v1_checkpoints_dir(*, generated: Path = GENERATED, force: bool = False) -> Path:
    return _build(generated / CHECKPOINTS_NAME, v1_source_hash(),
                  lambda out: _run(["-m", "tools.onnx_export.v1.make_tiny", "--out", str(out), "--seed", str(SEED)],
                                   "tiny v1 checkpoints"), force)


def tiny_v1_package_dir(*, generated: Path = GENERATED, force: bool = False) -> Path:
    ckpt = tiny_v1_checkpoints_dir(generated=generated, force=force)
    return _build(generated / PACKAGE_NAME, v1_source_hash(),
                  lambda out: _run(["-m", "tools.onnx_export.v1", "--checkpoints", str(ckpt), "--out", str(out)],
                                   "tiny v1 model package"), force)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.v1.fixtures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--generated", type=Path, default=GENERATED)
    a = ap.parse_args(argv)
    start = time.perf_counter()
    pkg = tiny_v1_package_dir(generated=a.generated, force=a.force)
    print(f"tiny v1 checkpoints: {a.generated / CHECKPOINTS_NAME}")
    print(f"tiny v1 package: {pkg} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
