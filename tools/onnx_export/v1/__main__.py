"""Export official ACE-Step v1 (3.5B) checkpoints to an ONNX model package (docs/io_contract_v1.md).

    python -m tools.onnx_export.v1 --checkpoints DIR --out PKG [--lyric-tokenizer vocab.json] [--force]

DIR holds ace_step_transformer/, music_dcae_f8c8/, music_vocoder/, umt5-base/ (the HF layout). The lyric
BPE file is not part of the HF checkpoint: pass the repository's acestep/models/lyrics_utils/vocab.json, or
put it at DIR/lyric_tokenizer/vocab.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..common import DEFAULT_EXTERNAL_DATA_MIN_BYTES, DEFAULT_OPSET, CheckpointError
from ..package import PackageError
from .package import V1ExportOptions, export_v1_package


def parse_args(argv=None) -> V1ExportOptions:
    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.v1", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--lyric-tokenizer", type=Path, default=None)
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--external-data-min-mb", type=float, default=DEFAULT_EXTERNAL_DATA_MIN_BYTES / 2**20)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    return V1ExportOptions(checkpoints=a.checkpoints, out=a.out, lyric_tokenizer=a.lyric_tokenizer, opset=a.opset,
                           force=a.force, external_data_min_bytes=int(a.external_data_min_mb * 2**20),
                           log=lambda m: print(f"[onnx_export.v1] {m}", file=sys.stderr, flush=True))


def main(argv=None) -> int:
    opts = parse_args(argv)
    start = time.perf_counter()
    try:
        out = export_v1_package(opts)
    except (CheckpointError, PackageError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[onnx_export.v1] package written to {out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
