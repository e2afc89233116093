#!/usr/bin/env python3
"""Core hot-path benchmark: one guided base/SFT step on [2, 6000, 64] (240 s, batch 2).

Times, in one run and interleaved, the core (through cffi) against the same math in numpy:
  - APG (momentum, clip, float64 projection; official apg_forward semantics, dims = time axis),
  - CFG combine (uncond + g·(cond − uncond)),
  - one ODE solver step of a base-model context (x − v·dt, from branch h-sched),
and prints each ratio core/numpy (target: <= 0.5) plus the ratio for APG + solver step together.
It also checks that both sides agree, so the numbers compare equal work.

    python3 scripts/bench_core.py [--repeats 30] [--shape 2 6000 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))

from acestep_runtime import guidance  # noqa: E402
from acestep_runtime._native import check, ffi, lib  # noqa: E402
from acestep_runtime.solver import Context  # noqa: E402


class NumpyApg:
    """The official apg_forward written with numpy (float32 tensors, float64 projection)."""

    def __init__(self, momentum=-0.75, norm_threshold=2.5, eta=0.0):
        self.m, self.thr, self.eta = np.float32(momentum), np.float32(norm_threshold), np.float32(eta)
        self.running = None

    def __call__(self, cond, uncond, g):
        diff = cond - uncond
        self.running = diff if self.running is None else diff + self.m * self.running
        d = self.running
        norm = np.sqrt(np.einsum("btc,btc->bc", d, d))[:, None, :]
        with np.errstate(divide="ignore"):
            d = d * np.minimum(np.float32(1.0), self.thr / norm)
        c64, d64 = cond.astype(np.float64), d.astype(np.float64)
        v_hat = c64 / np.maximum(np.sqrt(np.einsum("btc,btc->bc", c64, c64))[:, None, :], 1e-12)
        par = np.einsum("btc,btc->bc", d64, v_hat)[:, None, :] * v_hat
        orth = d64 - par
        return cond + np.float32(g - 1.0) * (orth.astype(np.float32) + self.eta * par.astype(np.float32))


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--shape", type=int, nargs=3, default=[2, 6000, 64])
    args = ap.parse_args()
    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    cond = rng.standard_normal(shape).astype(np.float32)
    uncond = (cond + 0.5 * rng.standard_normal(shape)).astype(np.float32)
    xt = rng.standard_normal(shape).astype(np.float32)
    g = 7.0

    # --- agreement first (fresh states, three calls so the momentum is exercised)
    check_apg, ref_apg = guidance.Apg(), NumpyApg()
    for _ in range(3):
        a, b = check_apg.apply(cond, uncond, g), ref_apg(cond, uncond, g)
    check_apg.close()
    apg_err = float(np.abs(a - b).max() / np.abs(b).max())
    cfg_err = float(np.abs(guidance.cfg(cond, uncond, g) - (uncond + np.float32(g) * (cond - uncond))).max())

    ctx = Context({"model": "base", "steps": 30, "shift": 3.0})
    t_sched = ctx.timesteps
    dt = np.float32(t_sched[0] - t_sched[1])
    shape_c = ffi.new("size_t[3]", list(shape))
    out_x = np.empty_like(xt)
    v = a  # the guided velocity

    def core_step():
        check(lib.ace_scheduler_step(ctx.ptr, 0, ffi.cast("const float *", xt.ctypes.data),
                                     ffi.cast("const float *", v.ctypes.data), shape_c, 3,
                                     ffi.cast("float *", out_x.ctypes.data), xt.size))

    def numpy_step():
        return xt - v * dt

    core_step()
    step_err = float(np.abs(out_x - numpy_step()).max())

    # --- timing, interleaved so machine load hits both sides alike
    core_apg, ref_apg = guidance.Apg(), NumpyApg()
    out_apg = np.empty_like(cond)
    out_cfg = np.empty_like(cond)
    times = {k: [] for k in ("apg_core", "apg_numpy", "cfg_core", "cfg_numpy", "step_core", "step_numpy")}
    for _ in range(2):  # warm-up (allocates the momentum buffers)
        core_apg.apply(cond, uncond, g, out=out_apg)
        ref_apg(cond, uncond, g)
    for _ in range(args.repeats):
        times["apg_core"].append(timed(lambda: core_apg.apply(cond, uncond, g, out=out_apg)))
        times["apg_numpy"].append(timed(lambda: ref_apg(cond, uncond, g)))
        times["cfg_core"].append(timed(lambda: guidance.cfg(cond, uncond, g, out=out_cfg)))
        times["cfg_numpy"].append(timed(lambda: uncond + np.float32(g) * (cond - uncond)))
        times["step_core"].append(timed(core_step))
        times["step_numpy"].append(timed(numpy_step))
    core_apg.close()
    ctx.close()

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"shape {list(shape)}, {args.repeats} repeats, median ms (interleaved, same run)")
    print(f"agreement: APG max rel err {apg_err:.2e}, CFG max abs err {cfg_err:.2e}, step max abs err {step_err:.2e}")
    rows = [("APG", "apg"), ("CFG combine", "cfg"), ("ODE solver step", "step")]
    print(f"{'op':<24}{'core ms':>10}{'numpy ms':>10}{'core/numpy':>12}")
    for label, key in rows:
        c, n = med[f"{key}_core"], med[f"{key}_numpy"]
        print(f"{label:<24}{c:>10.3f}{n:>10.3f}{c / n:>12.3f}")
    c = med["apg_core"] + med["step_core"]
    n = med["apg_numpy"] + med["step_numpy"]
    ratio = c / n
    print(f"{'APG + solver step':<24}{c:>10.3f}{n:>10.3f}{ratio:>12.3f}   (target <= 0.5: "
          f"{'met' if ratio <= 0.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
