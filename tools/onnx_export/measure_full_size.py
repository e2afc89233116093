"""Measure exports at the official (full) size with random weights. A one-off measurement for
docs/onnx_export.md, not a CI test: the VAE needs ~6 GB of RAM, ~1.5 GB of disk and minutes of CPU;
the text encoder (`--component text_encoder`) ~10 GB of RAM and ~5 GB of disk.

    python -m tools.onnx_export.measure_full_size --work DIR [--seconds 10] [--component vae|text_encoder]
    python -m tools.onnx_export.measure_full_size --component package --checkpoints CKPT --out PKG

`--component package` runs the package exporter (`--lm none`) on checkpoints written by
`tools.onnx_export.make_full_size` and reports wall time, CPU time and peak RSS per phase (each
graph's export, the loads in between, the manifest) and the package's disk size.

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


class _PhaseMonitor:
    """Wall time, CPU time and peak RSS (sampled from /proc/self/status every 0.2 s) per named phase."""

    def __init__(self):
        import threading

        self.phases: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def rss_mib() -> float:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            rss = self.rss_mib()
            with self._lock:
                if self.phases:
                    cur = self.phases[-1]
                    cur["peak_rss_mib"] = max(cur["peak_rss_mib"], round(rss))

    def start(self, name: str) -> None:
        now, cpu, rss = time.perf_counter(), time.process_time(), round(self.rss_mib())
        with self._lock:
            self._close(now, cpu, rss)
            self.phases.append({"phase": name, "_t0": now, "_c0": cpu, "rss_at_start_mib": rss,
                                "peak_rss_mib": rss})
            print(f"[measure] {name} (RSS {rss} MiB)", file=sys.stderr, flush=True)

    def _close(self, now: float, cpu: float, rss: float) -> None:
        if self.phases and "_t0" in self.phases[-1]:
            cur = self.phases[-1]
            cur["wall_s"] = round(now - cur.pop("_t0"), 1)
            cur["cpu_s"] = round(cpu - cur.pop("_c0"), 1)
            cur["peak_rss_mib"] = max(cur["peak_rss_mib"], rss)

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._close(time.perf_counter(), time.process_time(), round(self.rss_mib()))
        return self.phases


def measure_package_export(checkpoints: Path, out: Path, dit: str = "acestep-v15-turbo") -> dict:
    """Export a package without LM and time every graph export and the steps in between."""
    import contextlib

    from tools.onnx_export import text_encoder as te
    from tools.onnx_export import vae as vae_mod
    from tools.onnx_export.acestep import export as ace_export
    from tools.onnx_export.package import ExportOptions, export_package

    mon = _PhaseMonitor()
    report: dict = {"load_average_at_start": list(__import__("os").getloadavg())}

    def wrap(module, attr: str, name_of):
        original = getattr(module, attr)

        def timed(*args, **kwargs):
            name = name_of(*args, **kwargs)
            mon.start(f"export {name}")
            try:
                return original(*args, **kwargs)
            finally:
                mon.start(f"after {name}")  # loads, host config, frees until the next phase
        return original, timed

    patches = [
        (te, "export_onnx", lambda module, args, path, **kw: Path(path).stem),
        (vae_mod, "export_onnx", lambda module, args, path, **kw: Path(path).stem),
        (ace_export, "export_graph", lambda name, model, path, **kw: name),
    ]
    with contextlib.ExitStack() as stack:
        for module, attr, name_of in patches:
            original, timed = wrap(module, attr, name_of)
            setattr(module, attr, timed)
            stack.callback(setattr, module, attr, original)
        opts = ExportOptions(checkpoints=checkpoints, out=out, dit=dit, lm=None,
                             log=lambda msg: mon.start(msg.split(":")[0]))
        t0, c0 = time.perf_counter(), time.process_time()
        export_package(opts)
        report["total_wall_s"] = round(time.perf_counter() - t0, 1)
        report["total_cpu_s"] = round(time.process_time() - c0, 1)
    report["phases"] = mon.stop()
    report["peak_rss_total_mib"] = round(peak_rss_mib())
    report["files"] = {str(p.relative_to(out)): p.stat().st_size for p in sorted(Path(out).rglob("*")) if p.is_file()}
    report["package_bytes"] = sum(report["files"].values())
    return report


def main(argv=None) -> int:
    from tools.onnx_export import vae as vae_mod

    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.measure_full_size")
    ap.add_argument("--work", type=Path, help="scratch directory (checkpoint + graphs); vae / text_encoder")
    ap.add_argument("--checkpoints", type=Path, help="full-size checkpoints (make_full_size); package")
    ap.add_argument("--out", type=Path, help="package directory to create; package")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--component", choices=["vae", "text_encoder", "package"], default="vae")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.component == "package":
        if args.checkpoints is None or args.out is None:
            ap.error("--component package needs --checkpoints and --out")
        print(json.dumps(measure_package_export(args.checkpoints, args.out), indent=2))
        return 0
    if args.work is None:
        ap.error(f"--component {args.component} needs --work")
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
