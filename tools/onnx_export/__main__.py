"""Export official ACE-Step 1.5 checkpoints to an ONNX model package.

    python -m tools.onnx_export --checkpoints DIR --out PKG [--dit acestep-v15-turbo]
        [--lm acestep-5Hz-lm-0.6B|none] [--opset 18] [--profile fp32|fp16|int8] [--force]

See docs/onnx_export.md; --profile: docs/precision_profiles.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .common import DEFAULT_EXTERNAL_DATA_MIN_BYTES, DEFAULT_OPSET, CheckpointError
from .package import ExportOptions, PackageError, export_package

PROFILES = ("fp32", "fp16", "int8")  # tools/onnx_opt/profiles.py PROFILES (checked equal by a test)


def _optional(value: str) -> str | None:
    return None if value.strip().lower() == "none" else value


def parse_args(argv=None) -> tuple[str, ExportOptions]:
    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export",
                                 description="Export ACE-Step 1.5 checkpoints to an ONNX model package.")
    ap.add_argument("--checkpoints", required=True, type=Path,
                    help="directory holding the official checkpoint folders (vae/, Qwen3-Embedding-0.6B/, ...)")
    ap.add_argument("--out", required=True, type=Path, help="model package directory to create")
    ap.add_argument("--dit", default="acestep-v15-turbo", help="DiT checkpoint folder, or 'none' (default: %(default)s)")
    ap.add_argument("--lm", default="acestep-5Hz-lm-0.6B", help="5 Hz LM checkpoint folder, or 'none' (default: %(default)s)")
    ap.add_argument("--text-encoder", default="Qwen3-Embedding-0.6B", help="text encoder folder (default: %(default)s)")
    ap.add_argument("--vae", default="vae", help="VAE folder (default: %(default)s)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (tested: 18)")
    ap.add_argument("--external-data-min-mb", type=float, default=DEFAULT_EXTERNAL_DATA_MIN_BYTES / 2**20,
                    help="graphs with at least this many MiB of weights store them in <graph>.onnx.data "
                         "(default: %(default)s)")
    ap.add_argument("--profile", default="fp32", choices=PROFILES,
                    help="precision profile (default: %(default)s); int8/fp16 are made from the fp32 export "
                         "by tools.onnx_opt, which also measures their deviation from fp32")
    ap.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    args = ap.parse_args(argv)
    return args.profile, ExportOptions(
        checkpoints=args.checkpoints, out=args.out, dit=_optional(args.dit), lm=_optional(args.lm),
        text_encoder=args.text_encoder, vae=args.vae, opset=args.opset, force=args.force,
        external_data_min_bytes=int(args.external_data_min_mb * 2**20),
        log=lambda msg: print(f"[onnx_export] {msg}", file=sys.stderr, flush=True),
    )


def export_with_profile(opts: ExportOptions, profile: str) -> Path:
    """Export fp32; for another profile, export fp32 beside the target, convert it into the target
    (tools.onnx_opt, deviation measured against that fp32 export) and delete the fp32 copy."""
    if profile == "fp32":
        return export_package(opts)
    import dataclasses
    import shutil

    from tools.onnx_opt.profiles import apply_profile
    from .package import check_output_dir

    out = Path(opts.out).absolute()
    check_output_dir(out, opts.force)  # fail before a long export
    fp32_dir = out.parent / f".{out.name}.fp32-{os.getpid()}"
    try:
        export_package(dataclasses.replace(opts, out=fp32_dir, force=True))
        return apply_profile(fp32_dir, out, profile, force=opts.force, log=opts.log)
    finally:
        shutil.rmtree(fp32_dir, ignore_errors=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--checkpoints", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.checkpoints is not None and (known.checkpoints / "ace_step_transformer").is_dir():
        # ACE-Step v1 checkpoints (HF layout): the v1 exporter, tools/onnx_export/v1
        from .v1.__main__ import main as v1_main

        return v1_main(argv)
    profile, opts = parse_args(argv)
    start = time.perf_counter()
    try:
        out = export_with_profile(opts, profile)
    except (CheckpointError, PackageError, FileNotFoundError, ValueError) as exc:
        # every loader reports bad checkpoints with one of these, naming the file / key / value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[onnx_export] package written to {out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
