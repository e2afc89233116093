"""Time the VAE decoder through the core's tile plan, variants interleaved in one process.

Each variant is a decoder graph (`--graph NAME=PATH`) and a tile plan (`--plan CHUNK:OVERLAP`, the core's
`ace_vae_tile_plan`; the driver uses 512:16, the official code 512:64). Every repeat runs every variant once
in turn (A, B, A, B …), so load from other processes on this shared machine hits all variants alike; the
machine's fp32 GEMM rate and load average are printed before and after. Latents are random (the decoder's
cost does not depend on the values). `--profile` adds one ORT-profiled decode per variant and prints each
op type's share.

    python scripts/bench_vae.py --graph base=/pkg/vae_decoder.onnx --graph new=/tmp/dec.onnx --seconds 10 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))

from bench_machine import machine_line  # noqa: E402

LATENT_RATE_HZ = 25  # 48 kHz / hop 1920
LATENT_CHANNELS = 64


def session(path: str, threads: int, profile_dir: str | None = None, ops_library: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if ops_library is not None:  # the core's fused kernels (ai.acestep.Snake), as the hosts register them
        opts.register_custom_ops_library(str(ops_library))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the hosts do
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(profile_dir) / "vae")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def decode(sess, latents: np.ndarray, plan) -> np.ndarray:
    """The driver's loop: decode each window, keep the samples between its crops, concatenate."""
    parts = []
    for w in plan:
        (audio,) = sess.run(None, {"latents": np.ascontiguousarray(latents[:, :, w.start:w.end])})
        parts.append(audio[:, :, w.crop_left: audio.shape[2] - w.crop_right])
    return np.concatenate(parts, axis=2)


def op_shares(profile_json: str) -> dict[str, float]:
    """Seconds per op type from an ORT profile (kernel events only)."""
    per_op: dict[str, float] = defaultdict(float)
    for event in json.loads(Path(profile_json).read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e6
    return dict(per_op)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph", action="append", required=True, metavar="NAME=PATH", help="decoder variant")
    ap.add_argument("--plan", action="append", default=None, metavar="CHUNK:OVERLAP",
                    help="tile plan(s) to run every graph with (default 512:16, the driver's)")
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 30.0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="one profiled decode per variant: op-type shares")
    ap.add_argument("--ops", action="append", default=[], metavar="NAME",
                    help="open variant NAME with the core library's custom ops registered (the hosts' default); "
                         "without, a graph's ai.acestep.Snake functions run as their five-op bodies")
    args = ap.parse_args(argv)

    from acestep_runtime.frames import vae_tile_plan

    from acestep_runtime.ort_ops import ops_library_path

    graphs = []
    for spec in args.graph:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--graph {spec!r}: expected NAME=PATH to an existing .onnx file")
        graphs.append((name, path))
    unknown = set(args.ops) - {name for name, _ in graphs}
    if unknown:
        ap.error(f"--ops {sorted(unknown)}: no such --graph variant")
    ops = {name: ops_library_path() if name in args.ops else None for name, _ in graphs}
    plans = []
    for spec in args.plan or ["512:16"]:
        chunk, _, overlap = spec.partition(":")
        plans.append((int(chunk), int(overlap)))

    print(machine_line(), flush=True)
    print(f"threads {args.threads}, batch {args.batch}, onnxruntime {__import__('onnxruntime').__version__}")
    t = time.perf_counter()
    sessions = {name: session(path, args.threads, ops_library=ops[name]) for name, path in graphs}
    print(f"sessions opened in {time.perf_counter() - t:.1f} s")
    variants = [(g, p) for g, _ in graphs for p in plans]
    label = {v: f"{v[0]}@{v[1][0]}:{v[1][1]}" for v in variants}

    rng = np.random.default_rng(0)
    for name, _ in graphs:  # warm-up: the first run of a session initialises its kernels
        sessions[name].run(None, {"latents": rng.standard_normal((args.batch, LATENT_CHANNELS, 16), dtype=np.float32)})
    for seconds in args.seconds:
        frames = int(round(seconds * LATENT_RATE_HZ))
        latents = rng.standard_normal((args.batch, LATENT_CHANNELS, frames), dtype=np.float32)
        # Plans that give the same windows at this length (e.g. one direct window) are timed once.
        seen, runs = set(), []
        for v in variants:
            windows = tuple((w.start, w.end) for w in vae_tile_plan(frames, *v[1]))
            if (v[0], windows) not in seen:
                seen.add((v[0], windows))
                runs.append(v)
        times: dict = {v: [] for v in runs}
        outputs = {}
        for _ in range(args.repeats):
            for v in runs:
                plan = vae_tile_plan(frames, *v[1])
                t = time.perf_counter()
                audio = decode(sessions[v[0]], latents, plan)
                times[v].append(time.perf_counter() - t)
                outputs.setdefault(v, audio)
        base = runs[0]
        print(f"\n{seconds:g} s of audio ({frames} latent frames), {args.repeats} interleaved repeats; "
              f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; max|audio| of the first "
              f"{float(np.abs(outputs[runs[0]]).max()):.3g}")
        print(f"  {'variant':28s} {'tiles':>5s} {'median s':>9s} {'min s':>8s} {'ratio':>6s} {'max|Δ| vs first':>16s}")
        base_med = statistics.median(times[base])
        for v in runs:
            med = statistics.median(times[v])
            diff = float(np.abs(outputs[v] - outputs[base]).max())
            tiles = len(vae_tile_plan(frames, *v[1]))
            print(f"  {label[v]:28s} {tiles:5d} {med:9.2f} {min(times[v]):8.2f} {med / base_med:6.3f} {diff:16.2e}")
        if args.profile:
            for name, path in graphs:
                with tempfile.TemporaryDirectory() as tmp:
                    sess = session(path, args.threads, tmp, ops[name])
                    decode(sess, latents, vae_tile_plan(frames, *plans[0]))  # warm-up inside the profile
                    t = time.perf_counter()
                    decode(sess, latents, vae_tile_plan(frames, *plans[0]))
                    wall = time.perf_counter() - t
                    shares = op_shares(sess.end_profiling())
                total = sum(shares.values())
                print(f"  profile {name} (two decodes, kernel time {total:.2f} s, last decode {wall:.2f} s wall):")
                for op, sec in sorted(shares.items(), key=lambda kv: -kv[1])[:10]:
                    print(f"    {op:24s} {100 * sec / total:5.1f} %")
    print("\n" + machine_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
