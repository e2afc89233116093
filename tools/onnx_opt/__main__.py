"""Make a precision-profile package from an exported fp32 package.

    python -m tools.onnx_opt --from FP32_PKG --out PKG --profile int8|fp16 [--int8-method dynamic|nbits]
        [--int8-vae] [--threads N] [--no-measure] [--accept-deviation] [--force]

`python -m tools.onnx_export ... --profile int8` does the same right after exporting. See
docs/precision_profiles.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .profiles import DEFAULT_INT8_METHOD, INT8_METHODS, PackageError, apply_profile


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tools.onnx_opt",
                                 description="Make an int8 or fp16 model package from an fp32 one.")
    ap.add_argument("--from", dest="src", required=True, type=Path, help="the fp32 model package")
    ap.add_argument("--out", required=True, type=Path, help="directory of the new package")
    ap.add_argument("--profile", required=True, choices=("int8", "fp16"), help="precision profile")
    ap.add_argument("--int8-method", default=DEFAULT_INT8_METHOD, choices=INT8_METHODS,
                    help="int8 quantizer (default: %(default)s)")
    ap.add_argument("--int8-vae", action="store_true",
                    help="int8 profile: also make the VAE decoder's convolutions static int8 (QLinearConv), "
                         "calibrated on the fp32 package's own generations (opt-in: about half the decoder's "
                         "time, audio SNR ~36 dB against fp32 on random weights; see docs/precision_profiles.md)")
    ap.add_argument("--threads", type=int, default=None, help="ORT threads for the deviation runs")
    ap.add_argument("--no-measure", action="store_true",
                    help="do not measure the deviation from fp32 (the manifest says it was not measured)")
    ap.add_argument("--accept-deviation", action="store_true",
                    help="write the package even when its deviation is outside the profile's thresholds "
                         "(recorded as passed: false)")
    ap.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        out = apply_profile(args.src, args.out, args.profile, int8_method=args.int8_method, int8_vae=args.int8_vae,
                            measure=not args.no_measure, check_thresholds=not args.accept_deviation,
                            threads=args.threads, force=args.force,
                            log=lambda msg: print(f"[onnx_opt] {msg}", file=sys.stderr, flush=True))
    except (PackageError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[onnx_opt] {args.profile} package written to {out} in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
