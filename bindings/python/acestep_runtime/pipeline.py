"""text2music on ONNX Runtime, driven by the core (``ace_generation_*``).

The host's whole job: open the package and its sessions, then loop — ask the core for the next
graph run, run it, keep the outputs the core says to keep (they never cross into the core) and
submit the rest. Prompts, tokens, noise, schedule, guidance, solver steps, VAE tiling and the peak
guard are the core's, identical in every host.

No torch, transformers or diffusers are imported here, ever.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .generation import Generation
from .package import ModelPackage
from .sessions import Sessions

# progress(stage, done, total): stage is "load", an LM phase ("lm_simple", "lm_metadata", "lm_codes":
# tokens written / the phase's token budget), "encode", "diffusion" or "decode"
ProgressFn = Callable[[str, int, int], None]


class Cancelled(Exception):
    """Generation was cancelled between two graph runs; nothing was written."""


@dataclass
class GenerationResult:
    """What :meth:`Pipeline.generate` returns. Save it with :meth:`save`."""

    audio: np.ndarray  # [B, 2, samples] float32, peak-guarded
    latents: np.ndarray  # [B, T, 64] final latents
    seeds: list[int]  # the seed of each item
    track_ids: list[str]
    file_names: dict[str, list[str]]  # per format: each item's file name in an output directory (core)
    frames: int  # T, latent frames at 25 Hz
    sample_rate: int
    notes: list[str]  # values the model ignored or adjusted (also in every sidecar)
    sidecars: list[dict]  # per item: everything needed to reproduce it
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    ort_seconds: float = 0.0  # time inside onnxruntime during this call
    prompts: dict = field(default_factory=dict)
    schedule: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)  # per item, before the peak guard
    # What the 5 Hz LM planned (settings, per-phase token counts and text, metadata, caption, lyrics,
    # code count, codes), or None when the LM did not run. Also in every sidecar under "lm".
    lm: dict | None = None
    lm_stats: dict = field(default_factory=dict)  # LM tokens, ORT seconds and host seconds per token

    def save(self, out, format: str | None = None, *, overwrite: bool = False, cancel=None) -> list[Path]:
        """Writes every item as an audio file plus its ``.json`` sidecar (see :func:`outputs.save`);
        returns the audio paths. ``out`` is a directory (existing, or ending in '/') or a file path."""
        from . import outputs

        return outputs.save(self, out, format, overwrite=overwrite, cancel=cancel)


class Pipeline:
    """Sessions of one model package, reused across generations."""

    def __init__(self, package: ModelPackage, sessions: Sessions):
        self.package = package
        self.sessions = sessions
        self.kind = package.kind

    @classmethod
    def open(cls, path, *, device: str = "auto", threads: int | None = None, verify: bool = False,
             session_cache="auto", prepack: bool = True, fused_ops: bool = True) -> "Pipeline":
        """Opens the model package at ``path`` (checked by the core; ``verify`` also checks every
        file's sha256) and prepares ONNX Runtime sessions on ``device`` ("auto", "cpu", "cuda").
        ``session_cache``: directory of the optimised-graph cache, "auto" (``$ACESTEP_SESSION_CACHE``
        when set, else none) or None; ``prepack=False`` starts fast with memory-mapped weights (see
        :class:`Sessions`); ``fused_ops=False`` runs the VAE's Snake activations unfused (:mod:`.ort_ops`)."""
        package = ModelPackage.open(path, verify=verify)
        return cls(package, Sessions(package, device=device, threads=threads, cache=session_cache, prepack=prepack,
                                     fused_ops=fused_ops))

    def close(self) -> None:
        self.sessions.close()
        self.package.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def plan(self, request: dict) -> dict:
        """What ``generate(request)`` would do, without running a graph: the resolved request, seeds,
        frames, schedule, notes and track ids (``ace_generation_info_json``)."""
        with Generation(self.package, request) as gen:
            return gen.info

    def generate(
        self,
        request: dict,
        *,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Generates the tracks of ``request`` (a dict in the request schema of docs/python_api.md,
        e.g. ``{"caption": ..., "lyrics": ..., "duration": 30, "seed": 42}``). ``progress`` is called
        after each step; ``cancel`` is checked between graph runs (raises :class:`Cancelled`)."""
        ort_before = self.sessions.stats.total
        t0 = time.perf_counter()
        with Generation(self.package, request) as gen:
            # Every session the run needs starts loading now, in background threads, in the order the
            # core runs them; the run starts as soon as its first graph is ready, so the DiT and VAE
            # load while the encoders run. "load" times the wait for that first graph; a later wait
            # counts in the stage that needed the session (Sessions.load_seconds has each load).
            needed = gen.info["components"]
            self.sessions.preload(needed)
            if progress:
                progress("load", 0, 1)
            if needed:
                self.sessions.session(needed[0])
            if progress:
                progress("load", 1, 1)
            timings = {"load": time.perf_counter() - t0}
            lm_stats = self._run(gen, progress, cancel, timings)
            audio, latents = gen.audio(), gen.latents()
            timings["total"] = time.perf_counter() - t0
            ort_seconds = self.sessions.stats.total - ort_before
            host = {
                "runtime": self.sessions.runtime_info(needed),
                "timings_s": timings,
                "ort_seconds": ort_seconds,
            }
            info = gen.refresh_info()
            if info.get("lm") is not None:
                host["lm_stats"] = lm_stats
            sidecars = [gen.sidecar(i, host) for i in range(audio.shape[0])]
        return GenerationResult(
            audio=audio,
            latents=latents,
            seeds=[int(s) for s in info["seeds"]],
            track_ids=list(info["track_ids"]),
            file_names=dict(info["file_names"]),
            frames=int(info["frames"]),
            sample_rate=int(info["sample_rate"]),
            notes=list(info["notes"]),
            sidecars=sidecars,
            timings=timings,
            ort_seconds=ort_seconds,
            prompts=dict(info["prompts"]),
            schedule=[float(t) for t in info["schedule"]],
            peaks=[float(s["peak_before_guard"]) for s in sidecars],
            lm=info.get("lm"),
            lm_stats=lm_stats if info.get("lm") is not None else {},
        )

    def _run(self, gen: Generation, progress, cancel, timings: dict) -> dict:
        """Runs every call the core asks for; returns the LM's per-token statistics."""
        # Values the core asked the host to keep, as ORT values: an LM KV cache goes from one
        # decode call to the next without a copy through numpy; only submitted outputs become numpy.
        kept: dict[str, object] = {}
        stage_start = time.perf_counter()
        stage = None
        lm = {"tokens": 0, "seconds": 0.0, "ort_seconds": 0.0}
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation cancelled")
            t_call = time.perf_counter()
            call = gen.next()
            if call is None:
                break
            if call.stage != stage:
                if stage is not None:
                    timings[stage] = time.perf_counter() - stage_start
                stage, stage_start = call.stage, time.perf_counter()
            feeds = {i.name: (kept[i.host_key] if i.host_key is not None else i.array) for i in call.inputs}
            ort_before = self.sessions.stats.total
            values = self.sessions.run_values(call.component, feeds, [o.name for o in call.outputs])
            submit = {}
            for out, value in zip(call.outputs, values):
                if out.keep_as is not None:
                    kept[out.keep_as] = value
                else:
                    submit[out.name] = value.numpy()
            gen.submit(submit)
            if call.component.startswith("lm_"):
                lm["tokens"] += 1
                lm["seconds"] += time.perf_counter() - t_call
                lm["ort_seconds"] += self.sessions.stats.total - ort_before
            for key in call.release:
                kept.pop(key, None)
            if progress:
                progress(call.stage, call.stage_done + 1, call.stage_total)
        if stage is not None:
            timings[stage] = time.perf_counter() - stage_start
        if lm["tokens"]:
            # Per LM call (one token each): ORT time, and everything else (the core's CFG, mask and
            # draw, the feeds, the logits copy) as host time.
            lm["ort_ms_per_token"] = 1000 * lm["ort_seconds"] / lm["tokens"]
            lm["host_ms_per_token"] = 1000 * (lm["seconds"] - lm["ort_seconds"]) / lm["tokens"]
        return lm
