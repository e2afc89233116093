#!/usr/bin/env python3
"""The C# host against the Python host, end to end, in one run (not a test).

Warm: both hosts keep one pipeline open (sessions loaded once) and generate the same request
`--repeats` times, alternating: per host the median total of `generate`, the median time inside ONNX Runtime,
the overhead (total − ORT: the host's loop, the core, copies) and the C#/Python ratios. The C# host
runs in this process through pythonnet (mono), on the same core library. Cold: one CLI process per
host (`mono AceStepGenerate.exe` vs `python3 -m acestep_runtime generate`), wall time including
runtime start-up and session creation.

    python3 scripts/bench_csharp.py [--model PKG] [--duration 10] [--repeats 5] [--threads 1]

Needs bindings/csharp/build.sh run first and pythonnet (scripts/setup.sh --dev). Prints the
machine's fp32 GEMM rate and load average beside the figures.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "bindings" / "csharp" / "bin"
sys.path[:0] = [str(ROOT / "bindings" / "python"), str(ROOT), str(ROOT / "scripts")]

from bench_machine import machine_line  # noqa: E402


def ort_library() -> str:
    import onnxruntime

    found = glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*"))
    if not found:
        sys.exit("no libonnxruntime.so in the onnxruntime wheel's capi/ directory")
    return found[0]


class PythonHost:
    def __init__(self, model: Path, threads: int):
        from acestep_runtime.pipeline import Pipeline

        self.pipe = Pipeline.open(model, device="cpu", threads=threads)

    def run(self, request: dict) -> tuple[float, float]:
        r = self.pipe.generate(dict(request))
        return r.timings["total"], r.ort_seconds

    def close(self):
        self.pipe.close()


class CSharpHost:
    """AceStep.Runtime.Pipeline in this process (pythonnet on mono), on the Python host's core library."""

    def __init__(self, model: Path, threads: int):
        import pythonnet

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # clr_loader's "mono before 6.12" warning
            pythonnet.load("mono")
        import clr

        clr.AddReference(str(BIN / "AceStep.Runtime.dll"))
        from acestep_runtime import _native
        from AceStep.Runtime import AceLibrary, Pipeline

        AceLibrary.Load(str(_native._lib_path))
        self.pipe = Pipeline.Open(str(model), "cpu", threads, os.environ["ACESTEP_ORT_LIB"])

    def run(self, request: dict) -> tuple[float, float]:
        r = self.pipe.Generate(json.dumps(request))
        return r.Timings["total"], r.RunSeconds

    def close(self):
        self.pipe.Dispose()


def cold_cli(model: Path, duration: float, threads: int) -> tuple[float, float]:
    """Wall seconds of one CLI run per host (fresh process each)."""
    common = ["--model", str(model), "--caption", "lofi hip hop", "--duration", str(duration), "--seed", "42", "--no-think",
              "--device", "cpu", "--threads", str(threads), "--format", "wav16"]
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in (("python", [sys.executable, "-m", "acestep_runtime", "generate", *common, "--no-progress", "--out", f"{tmp}/py/"]),
                          ("csharp", ["mono", str(BIN / "AceStepGenerate.exe"), *common, "--quiet", "--out", f"{tmp}/cs/"])):
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "bindings" / "python")})
            times.append(time.perf_counter() - t)
            if proc.returncode != 0:
                sys.exit(f"{name} CLI failed ({proc.returncode}):\n{proc.stderr}")
    return times[0], times[1]


def summary(runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    total = statistics.median(t for t, _ in runs)
    ort = statistics.median(o for _, o in runs)
    overhead = statistics.median(t - o for t, o in runs)
    return total, ort, overhead


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "fixtures" / "generated" / "tiny-package")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (both hosts)")
    parser.add_argument("--sequential", action="store_true",
                        help="one host at a time (full-size packages: two sets of sessions do not fit in memory)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold CLI runs")
    args = parser.parse_args()
    if not (BIN / "AceStep.Runtime.dll").is_file():
        sys.exit(f"{BIN / 'AceStep.Runtime.dll'} missing: run bindings/csharp/build.sh")
    os.environ.setdefault("ACESTEP_ORT_LIB", ort_library())
    model = args.model.resolve()
    request = {"caption": "lofi hip hop, mellow piano", "duration": args.duration, "seed": 42, "thinking": False}

    print(machine_line())
    print(f"model {model.name}, {args.duration:g} s of audio, turbo ODE, batch 1, {args.threads} ORT thread(s), "
          f"{args.repeats} warm repeats (median)")
    makers = {"python": PythonHost, "csharp": CSharpHost}
    runs: dict = {name: [] for name in makers}
    if args.sequential:
        for name, make in makers.items():
            host = make(model, args.threads)
            try:
                host.run(request)  # warm-up: sessions and first-run allocations
                runs[name] = [host.run(request) for _ in range(args.repeats)]
            finally:
                host.close()
    else:
        hosts = {name: make(model, args.threads) for name, make in makers.items()}
        try:
            for name, host in hosts.items():
                host.run(request)  # warm-up: sessions and first-run allocations
            # Alternate the hosts so that a change of machine load hits both alike.
            for _ in range(args.repeats):
                for name, host in hosts.items():
                    runs[name].append(host.run(request))
        finally:
            for host in hosts.values():
                host.close()
    py, cs = summary(runs["python"]), summary(runs["csharp"])
    print(f"{'host':>8} {'total s':>9} {'ORT s':>9} {'overhead s':>11}")
    for name, (total, ort, overhead) in (("python", py), ("csharp", cs)):
        print(f"{name:>8} {total:9.3f} {ort:9.3f} {overhead:11.3f}")
    print(f"{'C#/Py':>8} {cs[0] / py[0]:9.2f} {cs[1] / py[1]:9.2f} {cs[2] / py[2]:11.2f}")
    if not args.no_cold:
        py_cold, cs_cold = cold_cli(model, args.duration, args.threads)
        print(f"cold CLI process (start-up + sessions + one run): python {py_cold:.2f} s, csharp {cs_cold:.2f} s, "
              f"ratio {cs_cold / py_cold:.2f}")
    print(machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
