#!/usr/bin/env python3
"""Benchmark of the ACE-Step v1 graphs on ONNX Runtime against the project's torch reference modules, in
the same invocation (not a test).

Runs the package's graphs directly with inputs shaped like a real request (docs/io_contract_v1.md §3–§7):
the text encoder once (a 32-token prompt), the condition encoder (batch 1, lyric tokens ∝ duration), one
DiT decode per batch size (the driver runs one decode per condition on the request's batch, so a guided
step with the default ERG costs two such decodes), the DCAE decoder and the vocoder on the whole song
(both stereo rows in one run, as the driver does). Durations map to latent frames by spec §2:
T = floor(duration · 44100 / 512 / 8) (60 s → 645, 240 s → 2583).

Backends: `ort` (onnxruntime, the options of the Python host: ORT_ENABLE_ALL, intra-op threads) and
`torch` (the exporter's spec-faithful modules in tools/onnx_export/v1/, fp32, loaded from the checkpoints
the package was exported from). Each (backend, stage group) runs in its own worker process, one after
the other, so memory is freed in between; the peak RSS of every stage is the process's high-water mark
reset before the stage (/proc/self/clear_refs), so it includes the loaded weights. The machine's fp32
GEMM rate is measured before each worker and the load average (highest seen) is printed beside every
figure; the same inputs go to both backends and the outputs are compared (max |ORT − torch|).

    python3 scripts/bench_v1.py [--model PKG] [--torch CKPT] [--durations 60,240] [--dit-batches 1]
        [--groups encode,dit,decode] [--repeats 1] [--threads N] [--json FILE] [--markdown FILE]

Without --model/--torch it uses the tiny v1 package and checkpoints (fixtures/generated/). Full size
needs ~11 GiB per DiT worker: run under `flock /work/bigmem.lock` on shared machines.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_machine import gemm_gflops, load_avg  # noqa: E402
from bench_memory import peak_rss_mb, reset_peak_rss  # noqa: E402

TINY_PACKAGE = ROOT / "fixtures" / "generated" / "tiny-v1-package"
TINY_CHECKPOINTS = ROOT / "fixtures" / "generated" / "tiny-v1-checkpoints"
TEXT_TOKENS = 32            # a caption of ~25 words plus </s>
LYRIC_TOKENS_PER_S = 4.0    # ~1 sung word per second, [SPACE] and line tokens included: 240 at 60 s, 960 at 240 s
WARMUP_FRAMES = 16
GROUPS = {"encode": ("text_encoder", "condition_encoder"), "dit": ("dit_decoder",),
          "decode": ("dcae_decoder", "vocoder")}


def latent_frames(duration_s: float) -> int:
    return int(duration_s * 44100 / 512 / 8)  # spec §2 (truncation)


class Stage:
    """Times one call (wall and process CPU) and records the peak RSS since the call started."""

    def __init__(self):
        self.rows: list[dict] = []
        self.exact_peaks = True

    def run(self, name: str, duration: float, batch: int, fn, repeats: int, **extra):
        walls, cpus, peaks, loads = [], [], [], []
        out = None
        for _ in range(repeats):
            self.exact_peaks &= reset_peak_rss()
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            peaks.append(peak_rss_mb())
            loads.append(load_avg())
        self.rows.append({"stage": name, "duration_s": duration, "batch": batch, "seconds": statistics.median(walls),
                          "cpu_seconds": statistics.median(cpus), "peak_rss_mb": max(peaks),
                          "load_avg_max": max(loads), **extra})
        return out


# --- inputs (identical for both backends: same seed, same shapes) ------------------------------------------

def request_inputs(cfg: dict, duration: float, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(int(duration * 10) + batch)
    te, tr = cfg["text_encoder"], cfg["transformer"]
    t, lt, ll = latent_frames(duration), TEXT_TOKENS, max(2, int(LYRIC_TOKENS_PER_S * duration))
    ids = rng.integers(3, te["vocab_size"], size=(batch, lt), dtype=np.int64)
    ids[:, -1] = te["eos_token_id"]
    return {
        "input_ids": ids, "text_mask": np.ones((batch, lt), np.int64),
        "speaker": np.zeros((batch, tr["speaker_embedding_dim"]), np.float32),
        "lyric_ids": rng.integers(0, tr["lyric_vocab_size"], size=(batch, ll), dtype=np.int64),
        "lyric_mask": np.ones((batch, ll), np.int64),
        "latents": rng.standard_normal((batch, tr["latent_channels"], tr["latent_height"], t), dtype=np.float32),
        "frame_mask": np.ones((batch, t), np.int64),
        "timestep": np.full((batch,), 500.0, np.float32),
        "text_q": np.ones(te["num_layers"], np.float32), "lyric_q": np.ones(tr["lyric_encoder_layers"], np.float32),
        "dit_q": np.ones(tr["num_layers"], np.float32),
    }


# --- backends: same call signature per graph (numpy in, numpy out) ------------------------------------------

class OrtBackend:
    def __init__(self, package: Path, threads: int | None):
        import onnxruntime as ort

        self.ort, self.package, self.threads = ort, package, threads
        self.manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
        self.sessions: dict = {}
        self.load_s: dict[str, float] = {}

    def load(self, name: str) -> None:
        opts = self.ort.SessionOptions()
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        t0 = time.perf_counter()
        path = self.package / self.manifest["components"][name]["file"]
        self.sessions[name] = self.ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.load_s[name] = time.perf_counter() - t0

    def unload(self, name: str) -> None:
        self.sessions.pop(name, None)

    def __call__(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[name].run(None, feeds)


class TorchBackend:
    def __init__(self, checkpoints: Path, threads: int | None):
        import torch

        sys.path.insert(0, str(ROOT))
        torch.set_num_threads(threads or os.cpu_count())
        self.torch, self.ckpt = torch, checkpoints
        self.modules: dict = {}
        self.load_s: dict[str, float] = {}

    def load(self, name: str) -> None:
        from tools.onnx_export.v1 import config as c
        from tools.onnx_export.v1.dcae import DcaeDecoderGraph, load_dcae
        from tools.onnx_export.v1.export import ConditionEncoderGraph, DiTDecoderGraph, VocoderGraph, fold_weight_norm
        from tools.onnx_export.v1.text_encoder import TextEncoderGraph, load_umt5
        from tools.onnx_export.v1.transformer import load_transformer
        from tools.onnx_export.v1.vocoder import load_vocoder

        t0 = time.perf_counter()
        if name == "text_encoder":
            module = TextEncoderGraph(load_umt5(self.ckpt / c.TEXT_ENCODER_DIR))
        elif name in ("condition_encoder", "dit_decoder"):
            model = load_transformer(self.ckpt / c.TRANSFORMER_DIR, inference_only=True)
            module = (ConditionEncoderGraph if name == "condition_encoder" else DiTDecoderGraph)(model)
        elif name == "dcae_decoder":
            module = DcaeDecoderGraph(load_dcae(self.ckpt / c.DCAE_DIR))
        elif name == "vocoder":
            module = VocoderGraph(fold_weight_norm(load_vocoder(self.ckpt / c.VOCODER_DIR)))
        else:
            raise KeyError(name)
        self.modules[name] = module.eval()
        self.load_s[name] = time.perf_counter() - t0

    def unload(self, name: str) -> None:
        self.modules.pop(name, None)

    def __call__(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            out = self.modules[name](*[torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
        out = out if isinstance(out, tuple) else (out,)
        return [o.numpy() for o in out]


# --- the stage groups ----------------------------------------------------------------------------------------

def _feeds(name: str, x: dict, *, text_hidden=None, enc=None, enc_mask=None, latents=None, mel=None) -> dict:
    """Graph inputs in graph order (names of docs/io_contract_v1.md)."""
    if name == "text_encoder":
        return {"input_ids": x["input_ids"], "attention_mask": x["text_mask"], "erg_q_scale": x["text_q"]}
    if name == "condition_encoder":
        return {"text_hidden_states": text_hidden, "text_attention_mask": x["text_mask"], "speaker_embeds": x["speaker"],
                "lyric_token_ids": x["lyric_ids"], "lyric_attention_mask": x["lyric_mask"], "erg_q_scale": x["lyric_q"]}
    if name == "dit_decoder":
        return {"hidden_states": x["latents"], "attention_mask": x["frame_mask"], "encoder_hidden_states": enc,
                "encoder_attention_mask": enc_mask, "timestep": x["timestep"], "erg_q_scale": x["dit_q"]}
    if name == "dcae_decoder":
        return {"latents": latents}
    if name == "vocoder":
        return {"mel": mel}
    raise KeyError(name)


def run_group(backend, cfg: dict, group: str, durations: list[float], batches: list[int], repeats: int,
              out_dir: Path | None) -> dict:
    stage = Stage()
    d_model = cfg["transformer"]["hidden_size"]
    outputs: dict[str, np.ndarray] = {}
    for name in GROUPS[group]:
        stage.exact_peaks &= reset_peak_rss()
        backend.load(name)
        load_peak = peak_rss_mb()
        # warm-up on a small request: allocator arenas, lazily built kernels
        w = request_inputs(cfg, WARMUP_FRAMES * 4096 / 44100 + 0.01, 1)
        if name == "text_encoder":
            backend(name, _feeds(name, w))
        elif name == "condition_encoder":
            backend(name, _feeds(name, w, text_hidden=np.zeros((1, TEXT_TOKENS, cfg["text_encoder"]["hidden_size"]),
                                                               np.float32)))
        elif name == "dit_decoder":
            s = 1 + TEXT_TOKENS + w["lyric_ids"].shape[1]
            backend(name, _feeds(name, w, enc=np.zeros((1, s, d_model), np.float32), enc_mask=np.ones((1, s), np.int64)))
        elif name == "dcae_decoder":
            backend(name, _feeds(name, w, latents=w["latents"]))
        else:
            backend(name, _feeds(name, w, mel=np.zeros((2, 128, 8 * WARMUP_FRAMES), np.float32) - 5.0))
        for duration in durations:
            for batch in (batches if name == "dit_decoder" else [1]):
                x = request_inputs(cfg, duration, batch)
                t = latent_frames(duration)
                key = f"{name}@{duration:g}s/b{batch}"
                if name == "text_encoder":
                    if duration != durations[0]:
                        continue  # the prompt does not depend on the duration
                    (y,) = stage.run(name, duration, batch, lambda: backend(name, _feeds(name, x)), repeats)
                elif name == "condition_encoder":
                    rng = np.random.default_rng(1)
                    hidden = rng.standard_normal((batch, TEXT_TOKENS, cfg["text_encoder"]["hidden_size"]),
                                                 dtype=np.float32) * 0.2
                    y, _mask = stage.run(name, duration, batch,
                                         lambda: backend(name, _feeds(name, x, text_hidden=hidden)), repeats,
                                         lyric_tokens=x["lyric_ids"].shape[1])
                elif name == "dit_decoder":
                    s = 1 + TEXT_TOKENS + x["lyric_ids"].shape[1]
                    rng = np.random.default_rng(2)
                    enc = rng.standard_normal((batch, s, d_model), dtype=np.float32)
                    (y,) = stage.run(name, duration, batch,
                                     lambda: backend(name, _feeds(name, x, enc=enc, enc_mask=np.ones((batch, s), np.int64))),
                                     repeats, frames=t, encoder_length=s)
                elif name == "dcae_decoder":
                    (y,) = stage.run(name, duration, batch, lambda: backend(name, _feeds(name, x, latents=x["latents"])),
                                     repeats, frames=t)
                    outputs[f"mel@{duration:g}"] = y
                else:
                    mel = outputs.pop(f"mel@{duration:g}").reshape(-1, 128, 8 * t)  # [2B, 128, F]: the stereo rows
                    (y,) = stage.run(name, duration, batch, lambda: backend(name, _feeds(name, x, mel=mel)), repeats,
                                     frames=t, samples=int(y_len(mel)))
                if out_dir is not None:
                    np.save(out_dir / (key.replace("/", "_") + ".npy"), y)
                del y
        stage.rows.append({"stage": name, "load_s": backend.load_s[name], "load_peak_rss_mb": load_peak})
        backend.unload(name)
    return {"rows": stage.rows, "exact_peaks": stage.exact_peaks, "peak_rss_mb": peak_rss_mb()}


def y_len(mel: np.ndarray) -> int:
    return mel.shape[-1] * 512


def worker_main(kind: str, target: Path, package: Path, group: str, args) -> dict:
    cfg = json.loads((package / "manifest.json").read_text(encoding="utf-8"))["config"]
    backend = OrtBackend(package, args.threads) if kind == "ort" else TorchBackend(target, args.threads)
    out_dir = Path(args.outputs) if args.outputs else None
    return run_group(backend, cfg, group, _floats(args.durations), [int(b) for b in args.dit_batches.split(",")],
                     args.repeats, out_dir)


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",")]


def run_worker(kind: str, target: Path, group: str, args, out_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--_worker", kind, str(target), group, "--model", str(args.model),
           "--durations", args.durations, "--dit-batches", args.dit_batches, "--repeats", str(args.repeats),
           "--_outputs", str(out_dir)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:  # e.g. -9: killed by the kernel's OOM killer
        return {"error": f"worker exited with status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- report -----------------------------------------------------------------------------------------------------

def compare(ort_dir: Path, torch_dir: Path) -> dict[str, dict]:
    diffs = {}
    for f in sorted(ort_dir.glob("*.npy")):
        g = torch_dir / f.name
        if g.is_file():
            a, b = np.load(f), np.load(g)
            diffs[f.stem] = {"max_abs": float(np.max(np.abs(a - b))), "max_ref": float(np.max(np.abs(b)))}
    return diffs


def markdown(results: dict, diffs: dict) -> str:
    lines = ["| stage | audio | batch | backend | wall | CPU s | ORT/torch | peak RSS | load of weights | "
             "GEMM GFLOP/s | load avg |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    torch_rows = {}
    for (kind, group), res in results.items():
        if kind == "torch" and "rows" in res:
            for r in res["rows"]:
                if "seconds" in r:
                    torch_rows[(r["stage"], r["duration_s"], r["batch"])] = r
    for (kind, group), res in results.items():
        if "error" in res:
            lines.append(f"| {group} | – | – | {kind} | {res['error']} | | | | | {res.get('gemm_gflops', 0):.0f} | |")
            continue
        loads = {r["stage"]: r for r in res["rows"] if "load_s" in r}
        for r in res["rows"]:
            if "seconds" not in r:
                continue
            ref = torch_rows.get((r["stage"], r["duration_s"], r["batch"]))
            ratio = f"{r['seconds'] / ref['seconds']:.2f}×" if kind == "ort" and ref else ""
            ld = loads.get(r["stage"], {})
            lines.append(
                f"| {r['stage']} | {r['duration_s']:g} s (T={latent_frames(r['duration_s'])}) | {r['batch']} | {kind} | "
                f"{r['seconds']:.2f} s | {r['cpu_seconds']:.1f} | {ratio} | {r['peak_rss_mb'] / 1024:.2f} GiB | "
                f"{ld.get('load_s', 0):.1f} s, {ld.get('load_peak_rss_mb', 0) / 1024:.2f} GiB | "
                f"{res['gemm_gflops']:.0f} | {r['load_avg_max']:.1f} |")
    if diffs:
        lines += ["", "| output | max abs ORT − torch | max abs torch |", "|---|---|---|"]
        lines += [f"| {k} | {v['max_abs']:.2e} | {v['max_ref']:.3g} |" for k, v in diffs.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=TINY_PACKAGE, help="v1 model package (default: the tiny one)")
    ap.add_argument("--torch", type=Path, default=None,
                    help="checkpoints the package was exported from (default with the tiny package: the tiny ones)")
    ap.add_argument("--no-torch", action="store_true", help="ORT only")
    ap.add_argument("--durations", default="60,240")
    ap.add_argument("--dit-batches", default="1", help="DiT batch sizes (the request's batch; default: %(default)s)")
    ap.add_argument("--groups", default="encode,dit,decode", help="stage groups to run: encode, dit, decode")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op and torch threads")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--_worker", nargs=3, metavar=("KIND", "TARGET", "GROUP"), help=argparse.SUPPRESS)
    ap.add_argument("--_outputs", dest="outputs", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._worker:
        kind, target, group = args._worker
        print(json.dumps(worker_main(kind, Path(target), args.model, group, args)))
        return 0

    ckpt = args.torch
    if ckpt is None and not args.no_torch:
        if args.model.resolve() != TINY_PACKAGE.resolve():
            ap.error("--torch CKPT (the package's source checkpoints) or --no-torch is required for a non-tiny package")
        ckpt = TINY_CHECKPOINTS
    groups = [g for g in args.groups.split(",") if g]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        ap.error(f"unknown groups {bad}; known: {list(GROUPS)}")
    print(f"{os.cpu_count()} CPUs, threads {args.threads or 'default'}, durations {args.durations} "
          f"(T = {[latent_frames(d) for d in _floats(args.durations)]}), DiT batches {args.dit_batches}, "
          f"package {args.model}, checkpoints {ckpt}", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_v1_") as tmp:
        dirs = {"ort": Path(tmp) / "ort", "torch": Path(tmp) / "torch"}
        for d in dirs.values():
            d.mkdir()
        for group in groups:
            for kind, target in (("ort", args.model), ("torch", ckpt)):
                if target is None:
                    continue
                gemm, load = gemm_gflops(), load_avg()
                print(f"[{kind} {group}] GEMM {gemm:.0f} GFLOP/s, load {load:.2f} before", flush=True)
                res = run_worker(kind, target, group, args, dirs[kind])
                res.update(gemm_gflops=gemm, load_before=load)
                results[(kind, group)] = res
                if "error" in res:
                    print(f"  FAILED: {res['error']}", flush=True)
                    continue
                for r in res["rows"]:
                    if "seconds" in r:
                        print(f"  {r['stage']:17s} {r['duration_s']:5g} s b{r['batch']}: {r['seconds']:8.3f} s "
                              f"(CPU {r['cpu_seconds']:.1f} s), peak RSS {r['peak_rss_mb'] / 1024:.2f} GiB | "
                              f"GEMM {gemm:.0f} GFLOP/s, load {r['load_avg_max']:.2f}", flush=True)
                    else:
                        print(f"  {r['stage']:17s} load {r['load_s']:.1f} s, RSS after load "
                              f"{r['load_peak_rss_mb'] / 1024:.2f} GiB", flush=True)
                if not res.get("exact_peaks", True):
                    print("  note: /proc/self/clear_refs unavailable: peaks are process-wide", flush=True)
        diffs = compare(dirs["ort"], dirs["torch"]) if ckpt is not None else {}
    table = markdown(results, diffs)
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "durations": args.durations,
                                         "results": {f"{k}/{g}": v for (k, g), v in results.items()},
                                         "diffs": diffs}, indent=2))
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
