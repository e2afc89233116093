"""Write tiny random-weight checkpoints in the official on-disk layout (spec §1.1), for tests.

    python -m tools.onnx_export.make_tiny --out DIR [--seed 0] [--dit acestep-v15-turbo|none]
        [--lm acestep-5Hz-lm-0.6B|none]

Creates DIR/acestep-v15-turbo/, DIR/vae/, DIR/Qwen3-Embedding-0.6B/ and DIR/acestep-5Hz-lm-0.6B/ with the
official file names, key names and dtypes (bf16), so the exporter runs the same loaders as for real
checkpoints. The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .text_encoder import TEXT_ENCODER_DIR, TINY_CONFIG as TINY_TEXT_CONFIG, write_tiny_text_encoder
from .vae import VAE_DIR, write_tiny_vae

DEFAULT_DIT = "acestep-v15-turbo"
DEFAULT_LM = "acestep-5Hz-lm-0.6B"


def write_tiny_checkpoints(out: Path, seed: int = 0, *, dit: str | None = DEFAULT_DIT,
                           lm: str | None = DEFAULT_LM) -> dict[str, Path]:
    """Write every tiny checkpoint folder under `out`; return component → folder."""
    from tools.make_qwen_tokenizer import build_tokenizer

    from .package import RANDOM_WEIGHTS_MARKER

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RANDOM_WEIGHTS_MARKER).write_text(f"random weights (seed {seed}) written by tools.onnx_export.make_tiny\n")
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="tiny_tok_") as tmp:
        text_tok = Path(tmp) / "text"
        build_tokenizer(text_tok, audio_codes=False, append_eos=True)
        write_tiny_text_encoder(out / TEXT_ENCODER_DIR, seed, text_tok)
        written["text_encoder"] = out / TEXT_ENCODER_DIR

        write_tiny_vae(out / VAE_DIR, seed)
        written["vae"] = out / VAE_DIR

        if dit:
            variant = "turbo"
            for name in ("base", "sft"):
                if name in dit and "turbo" not in dit:
                    variant = name
            from .acestep import write_tiny_acestep

            write_tiny_acestep(out / dit, seed, text_hidden_dim=TINY_TEXT_CONFIG["hidden_size"], variant=variant)
            written["acestep"] = out / dit
        if lm:
            from .lm import write_tiny_lm

            lm_tok = Path(tmp) / "lm"
            build_tokenizer(lm_tok, audio_codes=True, append_eos=False)
            write_tiny_lm(out / lm, seed, lm_tok)
            written["lm"] = out / lm
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.make_tiny", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dit", default=DEFAULT_DIT, help="DiT folder name, or 'none'")
    ap.add_argument("--lm", default=DEFAULT_LM, help="LM folder name, or 'none'")
    args = ap.parse_args(argv)
    dit = None if args.dit.lower() == "none" else args.dit
    lm = None if args.lm.lower() == "none" else args.lm
    for name, path in write_tiny_checkpoints(args.out, args.seed, dit=dit, lm=lm).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
