#!/usr/bin/env python3
"""Benchmark of the Python host on a model package (not a test).

Reports per-stage wall times, the time spent inside ONNX Runtime, the host overhead
(total − Σ ORT run time, i.e. everything the host and the core do between graph runs), peak RSS and
the real-time factor (generation time / audio duration), for each requested duration.

    python3 scripts/bench.py [--model PKG] [--durations 10,30] [--repeats 3] [--threads N]

Without --model it uses the tiny package (fixtures/generated/tiny-package; built by
scripts/make_tiny_package.sh).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bindings" / "python"))

from acestep_runtime.pipeline import Pipeline  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_machine import machine_line  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "fixtures" / "generated" / "tiny-package")
    parser.add_argument("--durations", default="10,30")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    print(machine_line())
    durations = [float(d) for d in args.durations.split(",")]
    t0 = time.perf_counter()
    pipe = Pipeline.open(args.model, device="cpu", threads=args.threads)
    pipe.sessions.warm(["text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder"])
    load_s = time.perf_counter() - t0
    print(f"package {args.model} ({pipe.package.variant}), session load {load_s:.2f} s, RSS {peak_rss_mb():.0f} MB")

    results = []
    request = {"caption": "an energetic pop track with bright synths", "lyrics": "[Verse]\nla la la", "seeds": [1]}
    pipe.generate({**request, "duration": 10.0})  # warm-up: first runs allocate ORT arenas
    for duration in durations:
        runs = []
        for _ in range(args.repeats):
            result = pipe.generate({**request, "duration": duration})
            total = result.timings["total"]
            runs.append({
                **{k: result.timings[k] for k in ("encode", "diffusion", "decode")},
                "total": total,
                "ort": result.ort_seconds,
                "overhead": total - result.ort_seconds,
            })
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        audio_s = result.audio.shape[-1] / result.sample_rate
        row = {
            "duration_s": duration,
            "frames": result.frames,
            **{f"{k}_s": round(v, 4) for k, v in med.items()},
            "host_overhead_pct": round(100.0 * med["overhead"] / med["total"], 2),
            "rtf": round(med["total"] / audio_s, 4),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        results.append(row)
        print(
            f"{duration:6.1f} s audio (T={result.frames}): total {med['total']:.3f} s = encode {med['encode']:.3f} + "
            f"diffusion {med['diffusion']:.3f} + decode {med['decode']:.3f}; ORT {med['ort']:.3f} s; host overhead "
            f"{med['overhead'] * 1000:.1f} ms ({row['host_overhead_pct']:.2f} %); RTF {row['rtf']:.3f}; "
            f"peak RSS {row['peak_rss_mb']:.0f} MB"
        )
    pipe.close()
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "load_s": load_s, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
