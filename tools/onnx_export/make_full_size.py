"""Write FULL-SIZE random-weight checkpoints in the official on-disk layout (spec §1.1), to measure the
exporter and the hosts at the real dimensions without the real weights.

    python -m tools.onnx_export.make_full_size --out DIR [--seed 0] [--variant turbo|base|sft]

Creates DIR/acestep-v15-<variant>/ (spec §1.2: hidden 2048, 24 layers, 16/8 heads, head_dim 128,
intermediate 6144, lyric encoder 8 layers, timbre encoder 4, pooler/detokenizer 2, fsq_dim 2048,
text_hidden_dim 1024), DIR/vae/ (spec §1.8: the official Oobleck config) and DIR/Qwen3-Embedding-0.6B/
(spec §1.3: 28 layers, hidden 1024, intermediate 3072, 16/8 heads, head_dim 128, vocab 151669), with the
official file names, key names and dtype (bf16). There is no 5 Hz LM: export with `--lm none`.

The weights are random and small (fan-in scaled), so activations stay O(1); the music is noise. The
checkpoints are written one component at a time and each is freed before the next. Disk: ~4.8 GB (DiT)
+ ~1.2 GB (text encoder) + ~0.34 GB (VAE). Peak RAM: ~10 GB (the DiT's bf16 tensors plus their
serialised bytes). The same seed gives the same weights.

    python -m tools.onnx_export.make_full_size --out DIR --lm 0.6B|1.7B

writes only a full-size 5 Hz LM, DIR/acestep-5Hz-lm-<size>/ (spec §5.1 widths, official layout, the LM
tokenizer), for the LM graph measurements (`scripts/bench_lm_graphs.py`).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from .text_encoder import TEXT_ENCODER_DIR, TINY_CONFIG as TINY_TEXT_CONFIG, write_tiny_text_encoder
from .vae import OFFICIAL_CONFIG as OFFICIAL_VAE_CONFIG, VAE_DIR, write_random_vae

# Qwen3-Embedding-0.6B (spec §1.3); the remaining keys (vocab, rope, eps, ...) are already the official ones.
TEXT_ENCODER_SIZES = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_window_layers": 28,
}

# acestep-v15-* 2B (spec §1.2); keys not listed (latent dim 64, patch 2, window 128, FSQ levels, ...) are
# the same in the tiny config.
DIT_LAYERS = 24
DIT_SIZES = {
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": DIT_LAYERS,
    "num_audio_decoder_hidden_layers": DIT_LAYERS,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "layer_types": ["sliding_attention", "full_attention"] * (DIT_LAYERS // 2),
    "num_lyric_encoder_hidden_layers": 8,
    "num_timbre_encoder_hidden_layers": 4,
    "num_attention_pooler_hidden_layers": 2,
    "fsq_dim": 2048,
}


def text_encoder_config() -> dict:
    return {**TINY_TEXT_CONFIG, **TEXT_ENCODER_SIZES}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write_full_size_checkpoints(out: Path, seed: int = 0, *, variant: str = "turbo",
                                log=lambda msg: None) -> dict[str, dict]:
    """Write the three full-size checkpoint folders under `out`; return component → {dir, bytes, seconds}."""
    from tools.make_qwen_tokenizer import build_tokenizer

    from .acestep import write_tiny_acestep

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .package import RANDOM_WEIGHTS_MARKER

    (out / RANDOM_WEIGHTS_MARKER).write_text(f"random weights (seed {seed}) written by tools.onnx_export.make_full_size\n")
    written: dict[str, dict] = {}

    def record(name: str, path: Path, t0: float) -> None:
        written[name] = {"dir": str(path), "bytes": _dir_bytes(path), "seconds": round(time.perf_counter() - t0, 1),
                         "peak_rss_mib_so_far": round(_peak_rss_mib())}
        log(f"{name}: {path} ({written[name]['bytes'] / 1e9:.2f} GB, {written[name]['seconds']} s)")
        gc.collect()

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fullsize_tok_") as tmp:
        text_tok = Path(tmp) / "text"
        build_tokenizer(text_tok, audio_codes=False, append_eos=True)
        write_tiny_text_encoder(out / TEXT_ENCODER_DIR, seed, text_tok, config=text_encoder_config())
    record("text_encoder", out / TEXT_ENCODER_DIR, t0)

    t0 = time.perf_counter()
    write_random_vae(out / VAE_DIR, seed, OFFICIAL_VAE_CONFIG)
    record("vae", out / VAE_DIR, t0)

    t0 = time.perf_counter()
    dit_dir = out / f"acestep-v15-{variant}"
    write_tiny_acestep(dit_dir, seed, text_hidden_dim=TEXT_ENCODER_SIZES["hidden_size"], variant=variant,
                       sizes=DIT_SIZES)
    record("acestep", dit_dir, t0)
    return written


def write_full_size_lm(out: Path, size: str, seed: int = 0, *, log=lambda msg: None) -> dict:
    """Write DIR/acestep-5Hz-lm-<size>/ (random weights, official layout and widths, LM tokenizer)."""
    from tools.make_qwen_tokenizer import build_tokenizer

    from .lm import write_tiny_lm
    from .package import RANDOM_WEIGHTS_MARKER

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RANDOM_WEIGHTS_MARKER).write_text(f"random weights (seed {seed}) written by tools.onnx_export.make_full_size\n")
    t0 = time.perf_counter()
    ckpt = out / f"acestep-5Hz-lm-{size}"
    with tempfile.TemporaryDirectory(prefix="fullsize_lm_tok_") as tmp:
        build_tokenizer(Path(tmp), audio_codes=True, append_eos=False)
        write_tiny_lm(ckpt, seed, Path(tmp), size=size)
    info = {"dir": str(ckpt), "bytes": _dir_bytes(ckpt), "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mib_so_far": round(_peak_rss_mib())}
    log(f"lm {size}: {ckpt} ({info['bytes'] / 1e9:.2f} GB, {info['seconds']} s)")
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.make_full_size",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", default="turbo", choices=["turbo", "base", "sft"])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    ap.add_argument("--lm", choices=["0.6B", "1.7B"], help="write ONLY a 5 Hz LM of this size (spec §5.1): "
                    "DIR/acestep-5Hz-lm-SIZE/ with the LM tokenizer (0.6B: ~1.5 GB, 1.7B: ~4 GB of bf16; "
                    "peak RAM ~2.2x that)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    log = lambda m: print(f"[make_full_size] {m}", file=sys.stderr, flush=True)  # noqa: E731
    if args.lm:
        written = {"lm": write_full_size_lm(args.out, args.lm, args.seed, log=log)}
    else:
        written = write_full_size_checkpoints(args.out, args.seed, variant=args.variant, log=log)
    print(json.dumps({"components": written, "peak_rss_mib": round(_peak_rss_mib())}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
