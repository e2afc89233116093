#!/usr/bin/env python3
"""The core's own time per DiT step at full-size shapes (not a test): between the host's `submit` of
the DiT velocity and the next `next` the core applies guidance and the solver step and prepares the
next inputs. Stand-in velocities (no ONNX Runtime) at B = 2, T = 7500 (300 s), turbo ODE, turbo SDE
and a guided APG run, timed through the Python binding (so cffi's per-call cost is included).

    python3 scripts/bench_driver.py [--frames 7500] [--batch 2]

Prints the machine's fp32 GEMM rate and load average beside the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bindings" / "python"), str(ROOT), str(ROOT / "scripts")]

from acestep_runtime.generation import Generation  # noqa: E402
from acestep_runtime.package import ModelPackage  # noqa: E402
from bench_machine import machine_line  # noqa: E402


def guided_copy(src: Path, dst: Path) -> Path:
    """The tiny package relabelled as a base model (the stand-ins do not run its graphs)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["config"]["acestep"]["is_turbo"] = False
    manifest["model_variant"] = "acestep-v15-base"
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def time_dit_steps(package: ModelPackage, request: dict) -> list[float]:
    """Seconds from submitting each DiT velocity to having the next call (core work + binding)."""
    times = []
    with Generation(package, request) as gen:
        call = gen.next()
        while call is not None:
            if call.component == "dit_decoder":
                x = call.inputs[0].array
                velocity = (0.25 * x).astype(np.float32)
                t = time.perf_counter()
                gen.submit({"velocity": velocity})
                call = gen.next()
                times.append(time.perf_counter() - t)
                continue
            if call.component == "vae_decoder":
                break  # decode is not part of this measurement
            outs = {}
            for o in call.outputs:
                if o.keep_as is not None:
                    continue
                b = int(gen.info["batch_size"])
                if o.name == "encoder_hidden_states":
                    outs[o.name] = np.full((b, 300, package_hidden(package)), 0.1, np.float32)
                elif o.name == "context_latents":
                    outs[o.name] = np.zeros((b, request_frames(gen), 128), np.float32)
            gen.submit(outs)
            call = gen.next()
    return times


def package_hidden(package: ModelPackage) -> int:
    return int(package.info["components"]["condition_encoder"]["outputs"][0].split(", ")[-1].rstrip("]"))


def request_frames(gen: Generation) -> int:
    return int(gen.info["frames"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "fixtures" / "generated" / "tiny-package")
    parser.add_argument("--frames", type=int, default=7500)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    print(machine_line())
    duration = args.frames * 1920 / 48000
    base = {"caption": "x", "duration": duration, "seed": 1, "batch_size": args.batch, "thinking": False}
    with tempfile.TemporaryDirectory() as tmp, ModelPackage.open(args.model) as turbo, \
            ModelPackage.open(guided_copy(args.model, Path(tmp) / "guided")) as guided:
        for name, package, request in [
            ("turbo ode", turbo, base),
            ("turbo sde", turbo, {**base, "infer_method": "sde"}),
            ("base apg, 8 steps", guided, {**base, "inference_steps": 8, "guidance_scale": 7.0}),
        ]:
            times = time_dit_steps(package, request)
            latent_mb = args.batch * args.frames * 64 * 4 / 1e6
            print(f"{name:>18}: B={args.batch} T={args.frames} ({latent_mb:.1f} MB latents), {len(times)} steps, "
                  f"core time per step median {1e3 * statistics.median(times):.2f} ms, max {1e3 * max(times):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
