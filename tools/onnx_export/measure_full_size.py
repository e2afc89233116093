"""Measure the VAE export at the official (full) size with random weights. A one-off measurement for
docs/onnx_export.md, not a CI test: it needs ~3 GB of RAM, ~1.5 GB of disk and minutes of CPU.

    python -m tools.onnx_export.measure_full_size --work DIR [--seconds 10]

Steps: write a random-weight `vae/` checkpoint with the official config (spec §1.8: 128/128 widths,
channel_multiples [1, 2, 4, 8, 16], downsampling [2, 4, 4, 6, 10]) in the official layout (bf16,
weight_g/weight_v); load it with the exporter's strict loader; export both graphs; run torch (the
diffusers model with weight norm NOT folded) and ONNX Runtime on a `--seconds` input. Prints one JSON
object: export seconds, file sizes, peak RSS, torch-vs-ORT max_abs (and max_abs relative to max |torch|).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> int:
    from tools.onnx_export import vae as vae_mod

    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.measure_full_size")
    ap.add_argument("--work", required=True, type=Path, help="scratch directory (checkpoint + graphs)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt, out = args.work / "vae", args.work / "graphs"
    report: dict = {"config": vae_mod.OFFICIAL_CONFIG}

    t0 = time.perf_counter()
    vae_mod.write_random_vae(ckpt, 0, vae_mod.OFFICIAL_CONFIG)
    report["write_checkpoint_s"] = round(time.perf_counter() - t0, 1)
    report["checkpoint_bytes"] = sum(p.stat().st_size for p in ckpt.iterdir())

    t0 = time.perf_counter()
    reference = vae_mod.load_vae(ckpt)          # weight-normed, as in the checkpoint
    to_export = vae_mod.load_vae(ckpt)
    report["load_s"] = round(time.perf_counter() - t0, 1)
    report["parameters"] = sum(p.numel() for p in to_export.parameters())

    t0 = time.perf_counter()
    files = vae_mod.export_vae_graphs(to_export, out)
    report["export_s"] = round(time.perf_counter() - t0, 1)
    report["peak_rss_after_export_mib"] = round(peak_rss_mib())
    report["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    del to_export

    import onnxruntime as ort

    frames = int(round(args.seconds * 25))
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 64, frames, generator=gen)
    audio = 0.5 * torch.randn(1, 2, 1920 * frames, generator=gen)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    results = {}
    for name, feed_name, x in (("vae_decoder", "latents", latents), ("vae_encoder", "audio", audio)):
        t0 = time.perf_counter()
        with torch.no_grad():
            if name == "vae_decoder":
                refs = [reference.decode(x).sample.numpy()]
            else:
                dist = reference.encode(x).latent_dist
                refs = [dist.mean.numpy(), dist.std.numpy()]
        torch_s = time.perf_counter() - t0
        sess = ort.InferenceSession(str(out / files[name]), opts, providers=["CPUExecutionProvider"])
        t0 = time.perf_counter()
        outs = sess.run(None, {feed_name: x.numpy()})
        ort_s = time.perf_counter() - t0
        max_abs = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))
        scale = max(float(np.abs(r).max()) for r in refs)
        results[name] = {"frames": frames, "torch_s": round(torch_s, 1), "ort_s": round(ort_s, 1),
                         "max_abs": max_abs, "max_abs_rel": max_abs / scale if scale else None,
                         "max_abs_ref": scale, "output_shapes": [list(o.shape) for o in outs]}
        del sess
    report["parity"] = results
    report["peak_rss_total_mib"] = round(peak_rss_mib())
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
