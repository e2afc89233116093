"""Measure exports at the official (full) size with random weights. A one-off measurement for
docs/onnx_export.md, not a CI test: the VAE needs ~6 GB of RAM, ~1.5 GB of disk and minutes of CPU;
the text encoder (`--component text_encoder`) ~10 GB of RAM and ~5 GB of disk.

    python -m tools.onnx_export.measure_full_size --work DIR [--seconds 10] [--component vae|text_encoder]

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


def measure_text_encoder(work: Path, threads: int) -> dict:
    """Qwen3-Embedding-0.6B dims (spec §1.3), random weights: export (> 2 GB, so external data) and parity
    on a 256-token caption-sized input and a 2048-token lyric-sized input."""
    import onnxruntime as ort
    from safetensors.torch import save_file

    from tools.onnx_export import text_encoder as te

    config = dict(te.TINY_CONFIG, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_window_layers=28)
    ckpt, out = work / te.TEXT_ENCODER_DIR, work / "graphs_te"
    ckpt.mkdir(parents=True, exist_ok=True)
    report: dict = {"load_average_at_start": list(__import__("os").getloadavg())}
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = te.build_text_encoder(config)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()},
              str(ckpt / te.WEIGHTS_FILE), metadata={"format": "pt"})
    (ckpt / te.CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    del model
    report["write_checkpoint_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    model = te.load_text_encoder(ckpt)
    report["load_s"] = round(time.perf_counter() - t0, 1)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    report["peak_rss_after_load_mib"] = round(peak_rss_mib())
    t0, c0 = time.perf_counter(), time.process_time()
    files = te.export_text_encoder_graphs(model, out)
    report["export_s"] = round(time.perf_counter() - t0, 1)
    report["export_cpu_s"] = round(time.process_time() - c0, 1)
    report["peak_rss_after_export_mib"] = round(peak_rss_mib())
    report["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config["vocab_size"], (1, 256), generator=gen)
    with torch.no_grad():
        ref = model(input_ids=ids).last_hidden_state.numpy()
        lyric_ids = torch.randint(0, config["vocab_size"], (1, 2048), generator=gen)
        ref_lyric = model.embed_tokens(lyric_ids).numpy()
    del model
    sess = ort.InferenceSession(str(out / files["text_encoder"]), opts, providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    (got,) = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": np.ones((1, 256), np.int64)})
    report["text_encoder_256_tokens"] = {"ort_s": round(time.perf_counter() - t0, 2),
                                         "max_abs": float(np.abs(got - ref).max()),
                                         "max_abs_ref": float(np.abs(ref).max())}
    del sess
    sess = ort.InferenceSession(str(out / files["lyric_embedding"]), opts, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input_ids": lyric_ids.numpy()})
    report["lyric_embedding_2048_tokens"] = {"max_abs": float(np.abs(got - ref_lyric).max())}
    report["peak_rss_total_mib"] = round(peak_rss_mib())
    return report


def main(argv=None) -> int:
    from tools.onnx_export import vae as vae_mod

    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.measure_full_size")
    ap.add_argument("--work", required=True, type=Path, help="scratch directory (checkpoint + graphs)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--component", choices=["vae", "text_encoder"], default="vae")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.component == "text_encoder":
        print(json.dumps(measure_text_encoder(args.work, args.threads), indent=2))
        return 0
    ckpt, out = args.work / "vae", args.work / "graphs"
    report: dict = {"config": vae_mod.OFFICIAL_CONFIG, "load_average_at_start": list(__import__("os").getloadavg())}

    t0 = time.perf_counter()
    vae_mod.write_random_vae(ckpt, 0, vae_mod.OFFICIAL_CONFIG)
    report["write_checkpoint_s"] = round(time.perf_counter() - t0, 1)
    report["checkpoint_bytes"] = sum(p.stat().st_size for p in ckpt.iterdir())

    t0 = time.perf_counter()
    reference = vae_mod.load_vae(ckpt)          # weight-normed, as in the checkpoint
    to_export = vae_mod.load_vae(ckpt)
    report["load_s"] = round(time.perf_counter() - t0, 1)
    report["parameters"] = sum(p.numel() for p in to_export.parameters())

    t0, c0 = time.perf_counter(), time.process_time()
    files = vae_mod.export_vae_graphs(to_export, out)
    report["export_s"] = round(time.perf_counter() - t0, 1)
    report["export_cpu_s"] = round(time.process_time() - c0, 1)  # all threads; wall time depends on load
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
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            if name == "vae_decoder":
                refs = [reference.decode(x).sample.numpy()]
            else:
                dist = reference.encode(x).latent_dist
                refs = [dist.mean.numpy(), dist.std.numpy()]
        torch_s, torch_cpu = time.perf_counter() - t0, time.process_time() - c0
        sess = ort.InferenceSession(str(out / files[name]), opts, providers=["CPUExecutionProvider"])
        t0, c0 = time.perf_counter(), time.process_time()
        outs = sess.run(None, {feed_name: x.numpy()})
        ort_s, ort_cpu = time.perf_counter() - t0, time.process_time() - c0
        max_abs = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))
        scale = max(float(np.abs(r).max()) for r in refs)
        results[name] = {"frames": frames, "torch_s": round(torch_s, 1), "torch_cpu_s": round(torch_cpu, 1),
                         "ort_s": round(ort_s, 1), "ort_cpu_s": round(ort_cpu, 1),
                         "max_abs": max_abs, "max_abs_rel": max_abs / scale if scale else None,
                         "max_abs_ref": scale, "output_shapes": [list(o.shape) for o in outs]}
        del sess
    report["parity"] = results
    report["peak_rss_total_mib"] = round(peak_rss_mib())
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
