"""What every benchmark prints beside its figures: this machine's measured fp32 GEMM rate and its load
average. The machines are shared and differ between sessions; a figure faster than the machine's peak
is a measurement error."""

from __future__ import annotations

import os
import time

import numpy as np


def gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` fp32 GEMM rate of numpy's BLAS on an n×n×n product, in GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def load_avg() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: fp32 GEMM {gemm_gflops():.1f} GFLOP/s (numpy, n=1024), load average {load}, {os.cpu_count()} CPUs"
