"""A session gives its run's working memory back when the run ends (the CPU arena is shrunk after
every run), so a long song's DiT activations are not still held while the VAE decodes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from acestep_runtime.package import ModelPackage
from acestep_runtime.sessions import Sessions
from scripts.bench_memory import current_rss_mb, peak_rss_mb, reset_peak_rss
from tools.parity.fixtures import tiny_package_dir

# One VAE window of the driver's tile plan (512 + 2 × 64 latent frames): ~0.5 GB of activations on
# the tiny decoder, against ~10 MB of output.
LATENTS = np.random.default_rng(0).standard_normal((1, 64, 640)).astype(np.float32)


def working_memory_mb(sessions: Sessions) -> tuple[float, float]:
    """(MB the run needed above the resident set before it, MB of that still resident after it)."""
    sessions.session("vae_decoder")
    sessions.run("vae_decoder", {"latents": LATENTS[:, :, :64]})  # first-run allocations out of the way
    before = current_rss_mb()
    if not reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs: the peak of one run cannot be measured here")
    (audio,) = sessions.run("vae_decoder", {"latents": LATENTS})
    peak, after = peak_rss_mb(), current_rss_mb()
    return peak - before, after - before - audio.nbytes / 2**20


def test_a_run_gives_its_working_memory_back():
    pkg = ModelPackage.open(tiny_package_dir())
    sessions = Sessions(pkg, device="cpu", threads=1, cache=None)
    used, kept = working_memory_mb(sessions)
    assert used > 200, f"the run needed only {used:.0f} MB: too little to tell anything"
    assert kept < 0.25 * used, f"{kept:.0f} MB of the run's {used:.0f} MB still held after it"


def test_without_the_shrink_the_arena_keeps_it():
    """The control: ORT's default run options keep the arena's peak, which the measurement sees."""
    pkg = ModelPackage.open(tiny_package_dir())
    sessions = Sessions(pkg, device="cpu", threads=1, cache=None)
    sessions.run_options = ort.RunOptions()
    used, kept = working_memory_mb(sessions)
    assert kept > 0.5 * used, f"only {kept:.0f} MB of {used:.0f} MB kept without the shrink"
