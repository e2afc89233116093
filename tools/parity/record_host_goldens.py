"""Goldens of the Python host as it was before the generation driver (issue 8), on the tiny packages.

    python -m tools.parity.record_host_goldens [--host pipeline|per_step] [--case NAME ...]

writes, per case, `fixtures/host_goldens/<case>.json` and `<case>.latents.npy`. The JSON holds the
request, the resolved seeds, frames, schedule, peaks (before the guard), per-item parameters and track
ids, the prompts, the audio shape, sha256 of the float32 little-endian audio bytes and of the final
latents bytes, which package it ran on (variant, manifest sha256, sha256 of every ONNX component), and
an environment block (onnxruntime / numpy versions, `platform.machine()`, the SIMD flags avx2, avx512f,
fma of the CPU, and the ORT intra-op thread count, pinned to 1). `tools/parity/tests/test_host_goldens.py` replays every case with
`tools/parity/per_step_host.py` and wants the same bits where package and environment match, and
latents within 1e-4 (with a warning naming what differs) where they do not.

Cases (tiny packages from `tools/parity/fixtures.py`; the turbo package unless marked base):

    turbo_ode         caption + lyrics + metadata, duration 12 (a JSON int), seed 42: T = 300
    turbo_sde         the same request with infer_method "sde", duration 12.0, seed 5
    custom_timesteps  instrumental, 12.0 s, timesteps [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085]
    lm_codes          40 LM codes (three above 63999: clamped), no duration: T = 5·40 = 200
    batch2            seeds [7, 8], batch_size 2, 12.0 s
    tiled             instrumental, 24.0 s: T = 600 > 512, so the VAE decode runs in several tiles
    guided_apg        base: inference_steps 6, guidance_scale 4, apg, cfg interval [0.2, 0.8], 10.0 s
    guided_cfg        base: inference_steps 6, guidance_scale 3, cfg, shift 2.0, 10.0 s

Re-recording. The goldens were recorded (commit 5290174) from the host before the driver: its
`Pipeline.generate` plus `outputs.item_params` and `frames.track_id`. That host is gone; `--host
per_step` records with `tools/parity/per_step_host.py`, its frozen copy (the tests prove both give
the same bits), e.g. to re-record for a new onnxruntime or a changed exporter. `--host pipeline` now
runs the driver-based host, whose track ids follow the new scheme: do not record goldens with it. Re-record only for such a reason, and say it in the commit: the
point of the goldens is that they do not move.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = ROOT / "fixtures" / "host_goldens"

CAPTION = "An upbeat synth-pop track with bright pads and a punchy kick"
LYRICS = "[Verse 1]\nNeon lights across the bay\nWe keep dancing till the day\n\n[Chorus]\nOh oh oh"
SONG = {"caption": CAPTION, "lyrics": LYRICS, "vocal_language": "en", "bpm": 120, "keyscale": "A minor",
        "timesignature": "4"}
AMBIENT = {"caption": "ambient drone, slowly evolving textures", "lyrics": "", "instrumental": True}
# 40 codes, spread over the codebook; three exceed the 63999 maximum and are clamped by the host.
LM_CODES = [(i * 7919) % 64000 for i in range(37)] + [64000, 65535, 99999]

# case → (tiny package variant, request)
CASES: dict[str, tuple[str, dict]] = {
    "turbo_ode": ("turbo", dict(SONG, duration=12, seed=42)),
    "turbo_sde": ("turbo", dict(SONG, duration=12.0, infer_method="sde", seed=5)),
    "custom_timesteps": ("turbo", dict(AMBIENT, duration=12.0, seed=11,
                                       timesteps=[0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085])),
    "lm_codes": ("turbo", {"caption": "lo-fi hip hop beat", "lyrics": "[Verse]\nslow night", "vocal_language": "en",
                           "audio_codes": LM_CODES, "seed": 9}),
    "batch2": ("turbo", dict(SONG, duration=12.0, shift=2.0, seeds=[7, 8], batch_size=2)),
    "tiled": ("turbo", dict(AMBIENT, duration=24.0, seed=3)),
    "guided_apg": ("base", dict(SONG, duration=10.0, seed=1, inference_steps=6, guidance_scale=4.0,
                                guidance_type="apg", cfg_interval_start=0.2, cfg_interval_end=0.8)),
    "guided_cfg": ("base", dict(AMBIENT, duration=10.0, seed=2, inference_steps=6, guidance_scale=3.0,
                                guidance_type="cfg", shift=2.0)),
}
SIMD_FLAGS = ("avx2", "avx512f", "fma")
# ORT's CPU kernels split work by thread count, and the bits follow the split (measured: 1 and 2 threads
# agree on a 2-core machine, 3 do not). One intra-op thread makes the goldens independent of the core count.
THREADS = 1


def sha256_f32(array: np.ndarray) -> str:
    """sha256 of the array's float32 little-endian C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def cpu_flags() -> dict[str, bool]:
    """The SIMD flags that decide which kernels ORT's MLAS (and the core's noise) pick; x86 Linux only."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    return {f: f in flags for f in SIMD_FLAGS}


def environment() -> dict:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "machine": platform.machine(),
            "cpu_flags": cpu_flags(), "intra_op_threads": THREADS}


def package_identity(package_dir: Path) -> dict:
    """What decides the numbers a package gives: its components' sha256 (from the manifest), plus the
    manifest's own sha256 (which also covers the exporter's git commit, so it changes on every export
    from another commit, and with it the track ids)."""
    raw = (Path(package_dir) / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    return {"model_variant": manifest.get("model_variant"),
            "manifest_sha256": hashlib.sha256(raw).hexdigest(),
            "components_sha256": {name: c.get("sha256") for name, c in sorted(manifest["components"].items())}}


def open_pipeline(package_dir: Path):
    from acestep_runtime.pipeline import Pipeline

    # The per-step host opens plain ONNX Runtime sessions, which run the VAE's ai.acestep.Snake functions
    # as their five-op bodies; so does this pipeline, for the bits to compare (the fused kernel is checked
    # against those bodies in bindings/python/tests/test_fused_ops.py).
    return Pipeline.open(package_dir, device="cpu", threads=THREADS, fused_ops=False)


def run_pipeline(pipeline, request: dict) -> dict:
    """The driver-based host: `Pipeline.generate`, whose loop the core drives (the goldens were
    recorded from the host before the driver; its track ids used the old parameter set, see
    test_host_goldens). `pipeline` is an open Pipeline (see `open_pipeline`) or a package directory."""
    if isinstance(pipeline, (str, Path)):
        with open_pipeline(Path(pipeline)) as pipe:
            return run_pipeline(pipe, request)
    # The goldens are DiT runs; the tiny turbo package has an LM, which a request runs by default.
    result = pipeline.generate(dict(request, thinking=False))
    return {"latents": result.latents, "audio": result.audio, "seeds": result.seeds, "frames": result.frames,
            "schedule": result.schedule, "peaks": result.peaks, "params": [s["params"] for s in result.sidecars],
            "track_ids": result.track_ids, "prompts": result.prompts}


def run_per_step(package_dir: Path, request: dict) -> dict:
    from tools.parity.per_step_host import Package, run

    with Package(package_dir, threads=THREADS) as package:
        return run(package, request)


HOSTS = {"pipeline": run_pipeline, "per_step": run_per_step}


def package_for(variant: str) -> Path:
    from tools.parity.fixtures import tiny_package_dir

    return tiny_package_dir(variant=variant)


def golden_record(case: str, variant: str, request: dict, out: dict, package_dir: Path, host: str) -> dict:
    return {
        "case": case,
        "recorded_with": host,
        "package": dict(package_identity(package_dir), variant=variant),
        "environment": environment(),
        "request": request,
        "seeds": out["seeds"],
        "frames": out["frames"],
        "schedule": out["schedule"],
        "peaks": out["peaks"],
        "track_ids": out["track_ids"],
        "params": out["params"],
        "prompts": out["prompts"],
        "audio_shape": list(out["audio"].shape),
        "audio_sha256": sha256_f32(out["audio"]),
        "latents_shape": list(out["latents"].shape),
        "latents_sha256": sha256_f32(out["latents"]),
    }


def record(cases, host: str = "pipeline", goldens: Path = GOLDENS) -> None:
    goldens.mkdir(parents=True, exist_ok=True)
    for case in cases:
        variant, request = CASES[case]
        package_dir = package_for(variant)
        out = HOSTS[host](package_dir, request)
        doc = golden_record(case, variant, request, out, package_dir, host)
        (goldens / f"{case}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        np.save(goldens / f"{case}.latents.npy", np.ascontiguousarray(out["latents"], dtype="<f4"))
        print(f"{case}: frames {doc['frames']}, audio {doc['audio_shape']}, seeds {doc['seeds']}, "
              f"peaks {[round(p, 4) for p in doc['peaks']]}, ids {[t[:12] for t in doc['track_ids']]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.parity.record_host_goldens",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", choices=sorted(HOSTS), default="pipeline", help="host to record with (default: %(default)s)")
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="record only this case (repeatable)")
    ap.add_argument("--out", type=Path, default=GOLDENS, help="output directory (default: %(default)s)")
    args = ap.parse_args(argv)
    import acestep_runtime

    # an editable install of another checkout would silently record that checkout's host
    print(f"recording with {args.host} host; acestep_runtime from {Path(acestep_runtime.__file__).parent}")
    record(args.case or list(CASES), args.host, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
