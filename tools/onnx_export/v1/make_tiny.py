"""Write the tiny random-weight v1 checkpoints (official layout) for tests.

    python -m tools.onnx_export.v1.make_tiny --out DIR [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .tiny import write_tiny_v1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.v1.make_tiny", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for name, path in write_tiny_v1(a.out, a.seed).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
