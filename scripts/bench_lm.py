#!/usr/bin/env python3
"""Per-token cost of the LM sampling step over the real 217,204-entry vocabulary, core vs numpy.

One step = CFG of the cond/uncond logits (fp32) → constrained-decoding mask → temperature →
top-k/top-p (vLLM style) → one draw. The core runs it as one call (`ace_lm_step`, with the FSM in
the codes phase, so the mask allows the 64,000 audio codes + EOS); the numpy reference runs the
same steps with a precomputed boolean mask, a full sort for top-p and an inverse-CDF draw. Both are
timed in the same run on the same logits; the result is their ratio (target: core ≤ 0.3× numpy).

    python3 scripts/bench_lm.py [--tokens 60] [--top-k 0] [--top-p 0.9] [--temperature 0.85]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bindings" / "python")]

from acestep_runtime.fsm import LmFsm  # noqa: E402
from acestep_runtime.sampling import Sampler  # noqa: E402
from acestep_runtime.tokenizer import Tokenizer  # noqa: E402

CFG = 2.0


def lm_tokenizer() -> Tokenizer:
    path = ROOT / "fixtures" / "generated" / "qwen3_lm_tokenizer" / "tokenizer.json"
    if not path.exists():
        from tools import make_qwen_tokenizer as mk

        mk.build_tokenizer(path.parent, audio_codes=True, append_eos=False)
    return Tokenizer.from_file(path)


def numpy_step(cond, uncond, allowed, temperature, top_k, top_p, rng) -> int:
    logits = uncond + np.float32(CFG) * (cond - uncond)
    logits = np.where(allowed, logits, np.float32(-np.inf))
    if temperature == 0:
        return int(np.argmax(logits))
    logits = logits / np.float32(temperature)
    if top_k > 0:
        kth = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits >= kth, logits, np.float32(-np.inf))
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(probs)
        cum = np.cumsum(probs[order])
        drop = cum <= 1 - top_p
        drop[-1] = False
        probs[order[drop]] = 0
    cdf = np.cumsum(probs, dtype=np.float64)
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--temperature", type=float, default=0.85)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=0.9)
    args = ap.parse_args()

    tok = lm_tokenizer()
    vocab = tok.vocab_size
    code0 = tok.token_to_id("<|audio_code_0|>")
    eos = tok.token_to_id("<|im_end|>")
    allowed = np.zeros(vocab, dtype=bool)
    allowed[code0:code0 + 64000] = True
    allowed[eos] = True

    rng = np.random.default_rng(0)
    # LM-like logits: a few strong candidates over a wide, low floor.
    rows = [(rng.standard_normal(vocab) * 3).astype(np.float32) for _ in range(2 * args.tokens)]
    pairs = list(zip(rows[0::2], rows[1::2]))

    sampler = Sampler(1, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                      cfg_scale=CFG, vocab_size=vocab)
    fsm = LmFsm(tok, {"phase": "codes"})
    think_end = [tok.token_to_id("</think>")]
    fsm.reset(think_end)

    def core_step(step, c, u):
        if fsm.completed:
            fsm.reset(think_end)
        return sampler.step_with_fsm(fsm, c, u, step)

    def time_it(fn):
        times = []
        for step, (c, u) in enumerate(pairs):
            t0 = time.perf_counter()
            fn(step, c, u)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    np_rng = np.random.default_rng(1)
    numpy_fn = lambda step, c, u: numpy_step(c, u, allowed, args.temperature, args.top_k, args.top_p, np_rng)  # noqa: E731
    sampler_only = lambda step, c, u: sampler.sample(c, u, step)  # noqa: E731
    for fn in (core_step, numpy_fn):  # warm-up
        fn(0, *pairs[0])
    core = time_it(core_step)
    ref = time_it(numpy_fn)
    bare = time_it(sampler_only)
    print(f"vocab {vocab}, T={args.temperature}, top_k={args.top_k}, top_p={args.top_p}, cfg={CFG}, "
          f"{len(pairs)} tokens (median per token)")
    print(f"  core  ace_lm_step (CFG + FSM mask + sample + accept): {core * 1e3:8.3f} ms")
    print(f"  core  ace_sampler_sample (CFG + sample, no mask):     {bare * 1e3:8.3f} ms")
    print(f"  numpy CFG + mask + sample:                            {ref * 1e3:8.3f} ms")
    print(f"  ratio core/numpy: {core / ref:.3f}  (target <= 0.3)")


if __name__ == "__main__":
    main()
