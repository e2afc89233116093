#!/usr/bin/env python3
"""Benchmark of the Python host on model packages, against the PyTorch reference in the same run (not a test).

For each backend — every `--model` package on ONNX Runtime through the Python host, and with `--torch CKPT`
the project's PyTorch reference modules (tools/parity/torch_reference.py, fp32, the checkpoints the
packages were exported from) — it reports per duration: session/model load, per-stage times (text = text
encoder + lyric embedding, condition encoder, DiT per step, VAE decode), total, peak RSS, and for the ORT
host the time inside ONNX Runtime and the host overhead. Each backend runs in its own worker process
(one after the other, so memory is freed in between). Peak RSS is per duration: the process's high-water
mark over that duration's runs (loaded weights + activations; the session-start timings before are excluded). The machine's fp32
GEMM rate is measured before each backend and the load average is printed beside every figure: the
machine is shared, and a ratio is only meaningful between figures of the same run.

    python3 scripts/bench.py [--model [NAME=]PKG ...] [--torch CKPT] [--durations 10,30] [--repeats 3]
        [--threads N] [--json FILE] [--markdown FILE] [--tables docs/performance.md]
        [--session-cache-dir DIR] [--drop-caches]

Per ORT backend it also times session start (cold and warm, --fast-start, and with DIR a session cache
filled and used). --tables writes the tables into the document between its bench markers.

Without --model it uses the tiny package (fixtures/generated/tiny-package). NAME defaults to the package's
precision (fp32, int8, fp16). Full-size runs need ~14 GiB per backend: run them under
`flock /work/bigmem.lock` on shared machines.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_machine import gemm_gflops, load_avg  # noqa: E402
from bench_memory import current_rss_mb, peak_rss_mb, reset_peak_rss  # noqa: E402

# The DiT path only: a package with an LM would otherwise plan first (thinking is on by default there).
REQUEST = {"caption": "an energetic pop track with bright synths", "lyrics": "[Verse]\nla la la", "thinking": False}
# The torch reference runs the DiT path only and takes no LM keys.
REFERENCE_REQUEST = {k: v for k, v in REQUEST.items() if k != "thinking"}
SEED = 1
WARMUP_DURATION = 10.0  # the shortest request the core accepts: allocates the arenas
STAGES = ("text", "condition", "dit_step", "vae")
COMPONENTS = ["text_encoder", "lyric_embedding", "condition_encoder", "dit_cross_kv", "dit_decoder", "vae_decoder"]


# --- workers (one process per backend) ------------------------------------------------------------------

def drop_page_cache() -> bool:
    """Asks the kernel to drop the page cache (root only; machine-wide). True when it did."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def _session_start(model: Path, threads: int | None, cache, drop: bool, prepack: bool = True) -> tuple[float, dict, bool]:
    """Opens the package and creates every session the text2music run needs; returns the seconds,
    which sessions came from the session cache, and whether the page cache was dropped first."""
    from acestep_runtime.pipeline import Pipeline

    dropped = drop_page_cache() if drop else False
    t0 = time.perf_counter()
    pipe = Pipeline.open(model, device="cpu", threads=threads, session_cache=cache, prepack=prepack)
    pipe.sessions.warm(COMPONENTS)
    seconds = time.perf_counter() - t0
    hits = dict(pipe.sessions.cache_hits)
    pipe.close()
    del pipe
    gc.collect()
    return seconds, hits, dropped


def _ort_start_worker(model: Path, threads: int | None, cache_dir: str = "off", drop_caches: bool = False) -> dict:
    """Session start, each a fresh Pipeline in this process: without the session cache twice (the first
    after dropping the page cache with --drop-caches: "cold"), without pre-packing (--fast-start), then,
    unless the cache is off, filling an empty cache (cold again when dropping) and from the filled cache
    ("warm"). A process of its own: the timed runs' peak RSS must not count what these pipelines left."""
    sys.path.insert(0, str(ROOT / "bindings" / "python"))
    import shutil
    import tempfile

    use_cache = str(cache_dir) != "off"
    cache = Path(tempfile.mkdtemp(prefix="bench-session-cache-", dir=cache_dir)) if use_cache else None
    try:
        start = {}
        start["nocache_cold_s"], _, start["nocache_cold_dropped"] = _session_start(model, threads, None, drop_caches)
        start["nocache_warm_s"], _, _ = _session_start(model, threads, None, False)
        start["fast_s"], _, _ = _session_start(model, threads, None, False, prepack=False)
        if use_cache:
            start["fill_s"], hits, start["fill_dropped"] = _session_start(model, threads, cache, drop_caches)
            assert not any(hits.values()), hits
            start["cached_s"], hits, _ = _session_start(model, threads, cache, False)
            assert all(hits.values()), hits
            start["cache_bytes"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    return {"start": start}


def _ort_worker(model: Path, durations: list[float], repeats: int, threads: int | None, fused_ops: bool = True) -> dict:
    """The timed runs, in a fresh process: open the package (pre-packed, no session cache), warm up, run."""
    sys.path.insert(0, str(ROOT / "bindings" / "python"))
    from acestep_runtime.pipeline import Pipeline

    reset_peak_rss()
    t0 = time.perf_counter()
    pipe = Pipeline.open(model, device="cpu", threads=threads, session_cache=None, fused_ops=fused_ops)
    pipe.sessions.warm(COMPONENTS)
    load_s = time.perf_counter() - t0
    rss_after_start = current_rss_mb()
    precision = pipe.package.summary().get("precision")
    result = _ort_runs(pipe, durations, repeats)
    return {"load_s": load_s, "precision": precision, "rss_after_start_mb": rss_after_start, **result}


def _ort_runs(pipe, durations: list[float], repeats: int) -> dict:
    pipe.generate({**REQUEST, "duration": WARMUP_DURATION, "seed": SEED})
    stats = pipe.sessions.stats  # wall and process-CPU seconds per component (CPU: robust to a loaded machine)
    rows = []
    for duration in durations:
        runs = []
        reset_peak_rss()
        for _ in range(repeats):
            before = (dict(stats.seconds), dict(stats.calls), dict(stats.cpu_seconds))
            cpu_start = time.process_time()
            result = pipe.generate({**REQUEST, "duration": duration, "seed": SEED})
            cpu_total = time.process_time() - cpu_start
            sec = {k: v - before[0].get(k, 0.0) for k, v in stats.seconds.items()}
            calls = {k: v - before[1].get(k, 0) for k, v in stats.calls.items()}
            cpu = {k: v - before[2].get(k, 0.0) for k, v in stats.cpu_seconds.items()}
            total = result.timings["total"]
            runs.append({
                "text": sec.get("text_encoder", 0.0) + sec.get("lyric_embedding", 0.0),
                "condition": sec.get("condition_encoder", 0.0) + sec.get("dit_cross_kv", 0.0),
                "dit_step": sec["dit_decoder"] / calls["dit_decoder"],
                "dit_steps": calls["dit_decoder"],
                "vae": sec["vae_decoder"],
                "total": total,
                "ort": result.ort_seconds,
                "overhead": total - result.ort_seconds,
                "text_cpu": cpu.get("text_encoder", 0.0) + cpu.get("lyric_embedding", 0.0),
                "condition_cpu": cpu.get("condition_encoder", 0.0) + cpu.get("dit_cross_kv", 0.0),
                "dit_step_cpu": cpu["dit_decoder"] / calls["dit_decoder"],
                "vae_cpu": cpu["vae_decoder"],
                "total_cpu": cpu_total,
                "load_avg": load_avg(),
            })
        rows.append({**_row(duration, result.frames, runs), "peak_rss_mb": peak_rss_mb()})
        _report_row(rows[-1])
    pipe.close()
    return {"rows": rows, "peak_rss_mb": max(r["peak_rss_mb"] for r in rows)}


def _torch_worker(ckpt: Path, durations: list[float], repeats: int, threads: int | None) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from tools.parity.torch_reference import load_models, run_reference

    torch.set_num_threads(threads or os.cpu_count())
    t0 = time.perf_counter()
    load_models(str(ckpt))
    load_s = time.perf_counter() - t0
    run_reference(ckpt, {**REFERENCE_REQUEST, "duration": WARMUP_DURATION}, seeds=[SEED])
    rows = []
    for duration in durations:
        runs = []
        reset_peak_rss()
        for _ in range(repeats):
            timings: dict = {}
            start, cpu_start = time.perf_counter(), time.process_time()
            out = run_reference(ckpt, {**REFERENCE_REQUEST, "duration": duration}, seeds=[SEED], timings=timings)
            total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
            runs.append({
                "text": timings["text"], "condition": timings["condition"],
                "dit_step": statistics.median(timings["dit_steps"]), "dit_steps": len(timings["dit_steps"]),
                "vae": timings["vae"], "total": total, "load_avg": load_avg(),
                "text_cpu": timings["text_cpu"], "condition_cpu": timings["condition_cpu"],
                "dit_step_cpu": statistics.median(timings["dit_steps_cpu"]), "vae_cpu": timings["vae_cpu"],
                "total_cpu": cpu_total,
            })
        rows.append({**_row(duration, out["frames"], runs), "peak_rss_mb": peak_rss_mb()})
        _report_row(rows[-1])
    return {"load_s": load_s, "precision": "fp32", "rows": rows, "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def _report_row(row: dict) -> None:
    """Prints a finished duration's row at once, so a worker killed in a later (longer) duration — the
    kernel's OOM killer at 600 s, say — still leaves the rows it finished (see run_worker)."""
    print(json.dumps({"row": row}), flush=True)


def _row(duration: float, frames: int, runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["load_avg_max"] = max(r["load_avg"] for r in runs)
    med.update(duration_s=duration, frames=frames, rtf=med["total"] / duration)
    return med


def run_worker(kind: str, target: str, args, durations: str | None = None) -> dict:
    """Runs one backend in a fresh process of this script; returns its JSON result. A worker that dies
    returns {"error": ..., "rows": the rows it finished}."""
    cmd = [sys.executable, __file__, "--_worker", kind, target, "--durations", durations or args.durations,
           "--repeats", str(args.repeats)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if kind == "ort" and getattr(args, "_unfused_worker", False):
        cmd += ["--_unfused"]
    if kind == "ort-start":
        cmd += ["--session-cache-dir", str(args.session_cache_dir)]
        if args.drop_caches:
            cmd += ["--drop-caches"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:  # e.g. -9: killed by the kernel's OOM killer; the other backends still count
        rows = [line["row"] for line in lines if "row" in line]
        return {"error": f"worker exited with status {proc.returncode}", "rows": rows}
    return lines[-1]


# --- report -------------------------------------------------------------------------------------------------

def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def print_backend(name: str, res: dict) -> None:
    print(f"  {name}: load {_seconds(res['load_s'])}, peak RSS {res['peak_rss_mb']:.0f} MB")
    for r in res["rows"]:
        extra = ""
        if "ort" in r:
            extra = f"; ORT {r['ort']:.2f} s, host overhead {r['overhead'] * 1000:.0f} ms"
        print(f"    {r['duration_s']:5.0f} s audio (T={r['frames']}): text {r['text']:.3f} s, condition "
              f"{r['condition']:.3f} s, DiT {r['dit_step']:.3f} s/step × {r['dit_steps']:.0f}, VAE {r['vae']:.3f} s, "
              f"total {r['total']:.2f} s (RTF {r['rtf']:.2f}){extra}; CPU s: DiT {r['dit_step_cpu']:.2f}/step, "
              f"VAE {r['vae_cpu']:.2f}, total {r['total_cpu']:.1f} | GEMM {res['gemm_gflops']:.0f} GFLOP/s, "
              f"load {r['load_avg_max']:.2f}")


def markdown(results: dict[str, dict], reference: str | None) -> str:
    lines = ["| backend | audio | load | text | condition | DiT / step | VAE | total | RTF | peak RSS | "
             "GEMM GFLOP/s | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for r in res["rows"]:
            lines.append(
                f"| {name} | {r['duration_s']:.0f} s | {_seconds(res['load_s'])} | {r['text']:.2f} s | "
                f"{r['condition']:.2f} s | {r['dit_step']:.2f} s | {r['vae']:.2f} s | {r['total']:.1f} s | "
                f"{r['rtf']:.2f} | {r['peak_rss_mb'] / 1024:.1f} GiB | {res['gemm_gflops']:.0f} | "
                f"{r['load_avg_max']:.1f} |")
    unfinished = [f"{name}: {res['incomplete']}" for name, res in results.items() if "incomplete" in res]
    if unfinished:
        lines += ["", "Not finished (rows above are the durations each finished): " + "; ".join(unfinished) + "."]
    starts = {name: res for name, res in results.items() if "start" in res}
    if starts:
        lines += ["", "Session start: open the package and create every session of a text2music run, each time "
                  "a fresh pipeline in the backend's worker; without the session cache (cold: first, after the page "
                  "cache was dropped where marked *dropped*; warm: again), filling an empty session cache, and "
                  "from the filled cache:", "",
                  "| backend | no cache, cold | no cache, warm | `--fast-start` (no pre-packing), warm | "
                  "fill the cache | from the cache | cache size | RSS after start |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, res in starts.items():
            st = res["start"]

            def cell(key, dropped=None):
                if key not in st:
                    return "–"
                return f"{st[key]:.1f} s" + (" *dropped*" if dropped and st.get(dropped) else "")

            size = f"{st['cache_bytes'] / 2**30:.1f} GiB" if "cache_bytes" in st else "–"
            lines.append(f"| {name} | {cell('nocache_cold_s', 'nocache_cold_dropped')} | {cell('nocache_warm_s')} | "
                         f"{cell('fast_s')} | "
                         f"{cell('fill_s', 'fill_dropped')} | {cell('cached_s')} | {size} | "
                         f"{st['rss_after_start_mb'] / 1024:.1f} GiB |")
    if reference:
        lines += ["", f"Ratios to `{reference}` (same run; < 1 is faster):", "",
                  "| backend | audio | text | condition | DiT / step | VAE | total |", "|---|---|---|---|---|---|---|"]
        ref_rows = {r["duration_s"]: r for r in results[reference]["rows"]}
        for name, res in results.items():
            if name == reference:
                continue
            for r in res["rows"]:
                ref = ref_rows.get(r["duration_s"])
                if ref is None:
                    continue
                cells = " | ".join(f"{r[k] / ref[k]:.2f}×" if ref[k] > 0 else "–" for k in (*STAGES, "total"))
                lines.append(f"| {name} | {r['duration_s']:.0f} s | {cells} |")
        lines += ["", "The same ratios in process CPU seconds (less sensitive to other jobs on the machine):", "",
                  "| backend | audio | text | condition | DiT / step | VAE | total |", "|---|---|---|---|---|---|---|"]
        for name, res in results.items():
            if name == reference:
                continue
            for r in res["rows"]:
                ref = ref_rows.get(r["duration_s"])
                if ref is None:
                    continue
                cells = " | ".join(f"{r[k + '_cpu'] / ref[k + '_cpu']:.2f}×" if ref.get(k + "_cpu") else "–"
                                   for k in (*STAGES, "total"))
                lines.append(f"| {name} | {r['duration_s']:.0f} s | {cells} |")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_between_markers(doc: Path, text: str) -> None:
    """Replaces what lies between the BEGIN and END lines of ``doc`` with ``text``; appends both
    markers when the file has neither (a file with one of them is an error, nothing is written)."""
    old = doc.read_text(encoding="utf-8") if doc.exists() else ""
    begin, end = old.find(BEGIN), old.find(END)
    if begin < 0 and end < 0:
        new = old.rstrip("\n") + ("\n\n" if old else "") + f"{BEGIN}\n{text}{END}\n"
    elif begin < 0 or end < begin:
        raise SystemExit(f"{doc}: the markers {BEGIN} / {END} are missing or out of order; fix the file by hand")
    else:
        new = old[: begin + len(BEGIN)] + "\n" + text + old[end:]
    doc.write_text(new, encoding="utf-8")


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return "not installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, metavar="[NAME=]PKG",
                        help="model package (repeatable); default: the tiny package")
    parser.add_argument("--torch", type=Path, metavar="CKPT",
                        help="also time the PyTorch reference on these checkpoints (the packages' source)")
    parser.add_argument("--durations", default="10,30")
    parser.add_argument("--torch-durations", metavar="LIST",
                        help="the durations the PyTorch reference runs (default: --durations); e.g. leave out 600 "
                             "s, which takes it about an hour on 2 cores (ratio rows need a reference row)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="ORT intra-op threads and torch threads (default: ORT's default / all CPUs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--tables", type=Path, metavar="DOC",
                        help=f"write the tables into DOC (e.g. docs/performance.md) between the lines {BEGIN} and "
                             f"{END}, keeping the rest of the file (the markers are appended when missing)")
    parser.add_argument("--session-cache-dir", default="off",
                        help="also time session starts filling and using a session cache, made in a temporary "
                             "directory under this one and removed after (default: off; a full-size fp32 "
                             "cache takes ~1.9x the package on disk)")
    parser.add_argument("--drop-caches", action="store_true",
                        help="drop the kernel page cache before each cold session start (root only; "
                             "machine-wide: other jobs reread their files)")
    parser.add_argument("--unfused", action="append", default=[], metavar="NAME",
                        help="run the --model backend NAME without the core's fused ONNX Runtime kernels (the "
                             "graphs' plain function bodies, as before they existed); e.g. --model fp32=PKG "
                             "--model fp32-unfused=PKG --unfused fp32-unfused")
    parser.add_argument("--_worker", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    parser.add_argument("--_unfused", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    durations = [float(d) for d in args.durations.split(",")]

    if args._worker:
        kind, target = args._worker
        if kind == "ort-start":
            res = _ort_start_worker(Path(target), args.threads, args.session_cache_dir, args.drop_caches)
        elif kind == "ort":
            res = _ort_worker(Path(target), durations, args.repeats, args.threads, fused_ops=not args._unfused)
        else:
            res = _torch_worker(Path(target), durations, args.repeats, args.threads)
        print(json.dumps(res))
        return 0

    backends: list[tuple[str, str, str]] = []  # (name, kind, target)
    for spec in args.model or [str(ROOT / "fixtures" / "generated" / "tiny-package")]:
        name, _, path = spec.rpartition("=")
        if not name:
            manifest = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
            name = manifest.get("precision", "ort")
        backends.append((f"ort-{name}", "ort", path))
    if args.torch:
        backends.append(("torch-fp32", "torch", str(args.torch)))
    names = [b[0] for b in backends]
    if len(set(names)) != len(names):
        parser.error(f"two backends share a name ({names}); name them with --model NAME=PKG")
    unknown = {f"ort-{n}" for n in args.unfused} - set(names)
    if unknown:
        parser.error(f"--unfused {sorted(n[4:] for n in unknown)}: no --model of that name")

    started, start_load = time.strftime("%Y-%m-%d %H:%M", time.gmtime()), load_avg()
    print(f"{os.cpu_count()} CPUs, threads {args.threads or 'default'}, durations {durations}, repeats {args.repeats}")
    results: dict[str, dict] = {}
    for name, kind, target in backends:
        gemm, load = gemm_gflops(), load_avg()
        print(f"[{name}] {target} | GEMM {gemm:.0f} GFLOP/s, load {load:.2f} before", flush=True)
        args._unfused_worker = name[4:] in args.unfused
        res = run_worker(kind, target, args, args.torch_durations if kind == "torch" else None)
        if kind == "ort" and "error" not in res:
            # Session starts in a process of their own, after the runs' (see _ort_start_worker).
            start = run_worker("ort-start", target, args)
            if "error" in start:
                print(f"  {name}: session-start worker FAILED, {start['error']}", flush=True)
            else:
                res["start"] = {**start["start"], "rss_after_start_mb": res.pop("rss_after_start_mb")}
        if "error" in res and not res.get("rows"):
            print(f"  {name}: FAILED, {res['error']}; left out of the tables", flush=True)
            continue
        if "error" in res:  # keep the durations it finished; the tables say which one it died in
            done = [r["duration_s"] for r in res["rows"]]
            res["incomplete"] = (f"{res.pop('error')} after the {', '.join(f'{d:.0f}' for d in done)} s rows, in "
                                 f"the next duration")
            print(f"  {name}: {res['incomplete']}", flush=True)
            res.setdefault("load_s", None)
            res["peak_rss_mb"] = max(r["peak_rss_mb"] for r in res["rows"])
        res.update(gemm_gflops=gemm, load_before=load, target=target)
        results[name] = res
        print_backend(name, res)
    reference = "torch-fp32" if "torch-fp32" in results else None
    table = markdown(results, reference)
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2))
    if args.markdown:
        args.markdown.write_text(table)
    if args.tables:
        header = (f"Run of {started} UTC, `python3 scripts/bench.py {' '.join(sys.argv[1:])}`; {os.cpu_count()} CPUs, "
                  f"threads {args.threads or 'default'}, repeats {args.repeats}, "
                  f"load average {start_load:.2f} at the start and {load_avg():.2f} at the end; onnxruntime "
                  f"{_ort_version()}.\n\n")
        write_between_markers(args.tables, header + table)
        print(f"tables written into {args.tables}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
