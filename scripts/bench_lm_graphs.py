#!/usr/bin/env python3
"""Compare the 5 Hz LM graph makers on this CPU: build cost, prefill and decode speed, parity with
`transformers`. A measurement, not a test (docs/lm_graphs.md quotes its output).

Graph makers:
  gqa, gqa-int8, gqa-int4  tools/onnx_export/lm_gqa.py (what the package ships; int8/int4 = weight-only
                           MatMulNBits profiles), the contract of docs/io_contract_lm.md
  torch                    tools/onnx_export/lm.py export_lm_graphs (torch dynamo export of an explicit-KV
                           forward), the same contract
  genai, genai-int8, genai-int4
                           onnxruntime-genai's model builder (`pip install onnxruntime-genai`), run as
                           its CLI with `prune_lm_head=true`; its own I/O (one graph, no position_ids,
                           positions from the mask), driven here through an adapter, batch 1 for parity

    python3 scripts/bench_lm_graphs.py --ckpt CKPT_DIR --work WORK_DIR [--makers gqa,torch,genai]
        [--prefill 300,1000] [--past 300,1500] [--threads 2] [--steps 5] [--repeats 2]

CKPT_DIR is an `acestep-5Hz-lm-*` directory (the tiny one of fixtures/generated/tiny-checkpoints, or a
full-size random one from `python -m tools.onnx_export.make_full_size --out DIR --lm 0.6B`). Each build
and each measurement runs in its own process (peak RSS per step); the transformers reference logits are
computed once, in their own process. Full sizes: run under `flock /work/bigmem.lock`.
Parity: a CFG pair of prompts (40 and 23 tokens, left padded) + 8 decode steps carrying the cache, vs
each sequence alone in `Qwen3ForCausalLM` (genai: the 40-token prompt alone, batch 1).
Speed: batch 2; prefill of L tokens (both rows full), and one decode step after a P-token cache
(random K/V), median of --steps steps, the cache carried as OrtValues (never copied through numpy).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench_machine import machine_line  # noqa: E402

PAD = 151643
PARITY_LENGTHS = (40, 23)
PARITY_STEPS = 8
GENAI_RUNNER = """
import runpy, sys, transformers
# The builder imports multimodal classes only newer transformers have (none is used for Qwen3) and
# expects rope_scaling to be a dict (transformers 4.57 gives None for plain RoPE).
known = set(dir(transformers))
for name in ["Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration",
             "Qwen3VLForConditionalGeneration", "Lfm2VlForConditionalGeneration",
             "Mistral3ForConditionalGeneration", "Gemma3ForConditionalGeneration",
             "Qwen2_5_VLForConditionalGeneration"]:
    if name not in known:
        setattr(transformers, name, type(name, (), {}))
import onnxruntime_genai.models  # puts the builder's folder on sys.path
import builders.base as base
_orig = base.Model.make_config_init
def make_config_init(self, config):
    if getattr(config, "rope_scaling", 0) is None:
        config.rope_scaling = {}
    return _orig(self, config)
base.Model.make_config_init = make_config_init
sys.argv[0] = "builder"
runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")
"""


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dir_gb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e9, 3)


# ------------------------------------------------------------------------------------------------
# Steps run in child processes
# ------------------------------------------------------------------------------------------------


def build(maker: str, ckpt: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    if maker.startswith("gqa"):
        from tools.onnx_export import lm_gqa

        lm_gqa.write_lm_graphs(ckpt, out, weights=maker.partition("-")[2] or "fp32")
    elif maker == "torch":
        from tools.onnx_export import lm

        lm.export_lm_graphs(lm.load_lm_checkpoint(ckpt), out)
    elif maker.startswith("genai"):
        precision = maker.partition("-")[2] or "fp32"
        script = out.parent / "genai_builder.py"
        script.write_text(GENAI_RUNNER)
        cmd = [sys.executable, str(script), "-m", str(ckpt), "-i", str(ckpt), "-o", str(out), "-p", precision,
               "-e", "cpu", "-c", str(out.parent / "genai_cache"), "--extra_options", "prune_lm_head=true"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"onnxruntime-genai builder failed:\n{r.stderr[-3000:]}")
        # The builder's own peak is a grandchild's: read it from the children's rusage.
        return {"build_s": round(time.perf_counter() - t0, 1), "disk_gb": dir_gb(out),
                "build_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}
    else:
        raise ValueError(f"unknown maker {maker!r}")
    return {"build_s": round(time.perf_counter() - t0, 1), "disk_gb": dir_gb(out), "build_peak_rss_mib": round(peak_rss_mib())}


def left_pad(seqs):
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), PAD, np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = s
        mask[r, width - len(s):] = 1
    return ids, mask, np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def parity_tokens(vocab: int):
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, vocab, n) for n in PARITY_LENGTHS]
    return prompts, rng.integers(0, vocab, PARITY_STEPS)


def reference(ckpt: Path, out: Path) -> dict:
    """transformers' logits for each parity sequence alone: rows [prompt_len - 1, ...] of the full forward."""
    import torch
    from transformers import Qwen3ForCausalLM

    t0 = time.perf_counter()
    model = Qwen3ForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    prompts, appended = parity_tokens(model.config.vocab_size)
    refs = {}
    with torch.no_grad():
        for r, p in enumerate(prompts):
            full = torch.from_numpy(np.concatenate([p, appended])[None])
            refs[f"row{r}"] = model(full).logits[0, len(p) - 1:].numpy()
    np.savez(out, **refs)
    return {"reference_s": round(time.perf_counter() - t0, 1), "reference_peak_rss_mib": round(peak_rss_mib())}


class Runner:
    """One maker's graphs behind the contract's calls, with OrtValues in and out."""

    def __init__(self, maker: str, out: Path, threads: int):
        import onnx
        import onnxruntime as ort

        self.ort = ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.genai = maker.startswith("genai")
        if self.genai:
            self.pre = self.dec = ort.InferenceSession(str(out / "model.onnx"), opts, providers=["CPUExecutionProvider"])
            cfg = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
            self.n_layers, self.kv, self.hd = cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_size"]
            self.past_names = [f"past_key_values.{i}.{w}" for i in range(self.n_layers) for w in ("key", "value")]
            self.present_names = [f"present.{i}.{w}" for i in range(self.n_layers) for w in ("key", "value")]
        else:
            self.pre = ort.InferenceSession(str(out / "lm_prefill.onnx"), opts, providers=["CPUExecutionProvider"])
            self.dec = ort.InferenceSession(str(out / "lm_decode.onnx"), opts, providers=["CPUExecutionProvider"])
            m = onnx.load(str(out / "lm_decode.onnx"), load_external_data=False)
            shape = [d.dim_value for d in m.graph.input[3].type.tensor_type.shape.dim]
            self.n_layers, self.kv, self.hd = (len(m.graph.input) - 3) // 2, shape[1], shape[3]
            self.past_names = [f"past_{w}_{i}" for i in range(self.n_layers) for w in ("key", "value")]
            self.present_names = [f"present_{w}_{i}" for i in range(self.n_layers) for w in ("key", "value")]

    def _ov(self, a):
        return self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a))

    def prefill(self, ids, mask, pos):
        feeds = {"input_ids": self._ov(ids), "attention_mask": self._ov(mask)}
        if self.genai:
            empty = np.zeros((ids.shape[0], self.kv, 0, self.hd), np.float32)
            feeds |= {n: self._ov(empty) for n in self.past_names}
        else:
            feeds["position_ids"] = self._ov(pos)
        outs = self.pre.run_with_ort_values(["logits", *self.present_names], feeds)
        return outs[0].numpy().reshape(ids.shape[0], -1), outs[1:]

    def decode(self, tok, mask, pos, kv):
        feeds = {"input_ids": self._ov(tok), "attention_mask": self._ov(mask)} | dict(zip(self.past_names, kv))
        if not self.genai:
            feeds["position_ids"] = self._ov(pos)
        outs = self.dec.run_with_ort_values(["logits", *self.present_names], feeds)
        return outs[0].numpy().reshape(tok.shape[0], -1), outs[1:]


def measure(maker: str, out: Path, ref_file: Path, prefill_lens, past_lens, steps: int, threads: int, repeats: int) -> dict:
    res: dict = {}
    t0 = time.perf_counter()
    run = Runner(maker, out, threads)
    res["load_s"] = round(time.perf_counter() - t0, 1)
    res["rss_after_load_mib"] = round(peak_rss_mib())
    refs = np.load(ref_file)
    vocab = refs["row0"].shape[1]
    prompts, appended = parity_tokens(vocab)
    if run.genai:
        prompts = prompts[:1]  # its positions come from the mask: left padding would shift them
    ids, mask, pos = left_pad(prompts)
    logits, kv = run.prefill(ids, mask, pos)
    rows = [[logits[r]] for r in range(len(prompts))]
    nxt = pos[:, -1:] + 1
    for tok in appended:
        mask = np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], axis=1)
        logits, kv = run.decode(np.full((len(prompts), 1), tok, np.int64), mask, nxt, kv)
        for r in range(len(prompts)):
            rows[r].append(logits[r])
        nxt = nxt + 1
    res["parity_max_abs"] = float(max(np.abs(np.stack(rows[r]) - refs[f"row{r}"]).max() for r in range(len(prompts))))
    res["parity_greedy_same"] = bool(all((np.stack(rows[r]).argmax(-1) == refs[f"row{r}"].argmax(-1)).all() for r in range(len(prompts))))
    res["parity_batch"] = len(prompts)
    rng = np.random.default_rng(1)
    for n in prefill_lens:
        ids = rng.integers(0, vocab, (2, n))
        mask = np.ones((2, n), np.int64)
        pos = np.broadcast_to(np.arange(n), (2, n)).copy()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            run.prefill(ids, mask, pos)
            best = min(best, time.perf_counter() - t)
        res[f"prefill_{n}_s"] = round(best, 3)
    for p in past_lens:
        kv = [run._ov(rng.standard_normal((2, run.kv, p, run.hd), dtype=np.float32)) for _ in run.past_names]
        mask = np.ones((2, p), np.int64)
        times = []
        for s in range(steps + 1):
            mask = np.ones((2, p + s + 1), np.int64)
            t = time.perf_counter()
            _, kv = run.decode(np.full((2, 1), 5, np.int64), mask, np.full((2, 1), p + s, np.int64), kv)
            times.append(time.perf_counter() - t)
        res[f"decode_ms_per_token_at_{p}"] = round(1000 * float(np.median(times[1:])), 1)
        del kv
    res["peak_rss_mib"] = round(peak_rss_mib())
    res["machine"] = machine_line()
    return res


# ------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------


def child(args: list[str]) -> dict:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}",
                "stderr_tail": r.stderr[-2000:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--makers", default="gqa,gqa-int8,gqa-int4,torch,genai,genai-int8,genai-int4")
    ap.add_argument("--prefill", default="300,1000")
    ap.add_argument("--past", default="300,1500")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="prefill runs per length, the best is kept")
    ap.add_argument("--keep", action="store_true", help="keep the built graphs (default: delete each after use)")
    ap.add_argument("--_step", help=argparse.SUPPRESS)
    ap.add_argument("--_maker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = args.work / (args._maker or "x")
    ref_file = args.work / "reference.npz"
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731

    if args._step == "build":
        print(json.dumps(build(args._maker, args.ckpt, out)))
        return 0
    if args._step == "reference":
        print(json.dumps(reference(args.ckpt, ref_file)))
        return 0
    if args._step == "measure":
        print(json.dumps(measure(args._maker, out, ref_file, ints(args.prefill), ints(args.past), args.steps, args.threads, args.repeats)))
        return 0

    import shutil

    args.work.mkdir(parents=True, exist_ok=True)
    common = ["--ckpt", str(args.ckpt), "--work", str(args.work), "--prefill", args.prefill, "--past", args.past,
              "--steps", str(args.steps), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    print(machine_line(), flush=True)
    report = {"ckpt": str(args.ckpt), "threads": args.threads, "reference": child([*common, "--_step", "reference"])}
    print(f"reference: {report['reference']}", flush=True)
    for maker in args.makers.split(","):
        entry = child([*common, "--_step", "build", "--_maker", maker])
        if "error" not in entry:
            entry |= child([*common, "--_step", "measure", "--_maker", maker])
        report[maker] = entry
        print(f"{maker}: {json.dumps(entry)}", flush=True)
        if not args.keep:
            shutil.rmtree(args.work / maker, ignore_errors=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
