"""Write FULL-SIZE random-weight ACE-Step v1 (3.5B) checkpoints in the official on-disk layout (spec §1),
to measure the exporter and the runtime at the real dimensions without the real weights.

    python -m tools.onnx_export.v1.make_full_size --out DIR [--seed 0]

Writes DIR/ace_step_transformer/ (spec §1: 24 layers, 20×128 heads, D 2560, mlp 2.5, lyric conformer
1024/16/4096/6, SSL projectors [1024, 768]; 874 tensors, 3.306 B parameters), DIR/music_dcae_f8c8/ (the
DC-AE config of spec §1), DIR/music_vocoder/ (the class defaults of spec §1), DIR/umt5-base/ (UMT5-base:
d_model 768, 12 layers, 12 heads, d_ff 2048, vocab 256384) and DIR/lyric_tokenizer/vocab.json, in bf16
(the pipeline's dtype, spec §10; ~7.6 GB). The tokenizers are the tiny fixtures' ones (no hub downloads):
the lyric tokenizer has every official special id, the UMT5 one a small Unigram vocabulary.

Tensors are generated and written one at a time (a streaming safetensors writer), so RAM stays at about
the largest tensor (the UMT5 embedding, 0.8 GB in fp32) whatever the model size. Values come from the
tiny generator's rule (fan-in scaled, same key order), so activations stay O(1); the music is noise.
Same seed → same bytes.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import struct
import sys
import time
from pathlib import Path

import torch

from .config import (CONFIG_FILE, DCAE_DIR, DIFFUSERS_WEIGHTS, LYRIC_TOKENIZER_DIR, LYRIC_TOKENIZER_FILE,
                     TEXT_ENCODER_DIR, TRANSFORMER_DIR, VOCODER_DIR, V1Config)
from .tiny import TINY_UMT5, _init, _write_config

FULL_TRANSFORMER = {
    "_class_name": "ACEStepTransformer2DModel", "in_channels": 8, "num_layers": 24, "inner_dim": 2560,
    "attention_head_dim": 128, "num_attention_heads": 20, "mlp_ratio": 2.5, "out_channels": 8,
    "max_position": 32768, "rope_theta": 1000000.0, "speaker_embedding_dim": 512, "text_embedding_dim": 768,
    "ssl_encoder_depths": [8, 8], "ssl_names": ["mert", "m-hubert"], "ssl_latent_dims": [1024, 768],
    "patch_size": [16, 1], "max_height": 16, "max_width": 32768, "lyric_encoder_vocab_size": 6693,
    "lyric_hidden_size": 1024,
}
# UMT5-base (spec §1, the public google/umt5-base config); the rest as in the tiny config.
FULL_UMT5 = {**TINY_UMT5, "vocab_size": 256384, "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12,
             "num_heads": 12}


def full_dcae_config() -> dict:
    from .dcae import OFFICIAL_CONFIG

    return {"_class_name": "AutoencoderDC", **OFFICIAL_CONFIG}


def full_vocoder_config() -> dict:
    from .vocoder import DEFAULT_CONFIG

    return {"_class_name": "ADaMoSHiFiGANV1", **DEFAULT_CONFIG}


_ST_DTYPES = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}


def write_safetensors_streamed(path: Path, shapes: dict[str, tuple[int, ...]], make, *,
                               dtype: torch.dtype = torch.bfloat16) -> int:
    """Write a safetensors file whose tensors `make(name, shape)` produces one at a time, in sorted key
    order (the header is known from the shapes alone). Returns the number of parameters."""
    names = sorted(shapes)
    size = torch.tensor([], dtype=dtype).element_size()
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        n = math.prod(shapes[name]) * size
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shapes[name]), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data block starts 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    params = 0
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name in names:
            t = make(name, tuple(shapes[name])).to(dtype).contiguous()
            if tuple(t.shape) != tuple(shapes[name]):
                raise AssertionError(f"{name}: made {tuple(t.shape)}, header says {shapes[name]}")
            # bf16 has no numpy dtype: write the raw 16-bit words
            fh.write(t.view(torch.int16 if size == 2 else torch.int32).numpy().tobytes())
            params += t.numel()
            del t
    tmp.replace(path)
    return params


def _meta_shapes(module: torch.nn.Module, skip=()) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if k not in skip}


def write_full_size_v1(out: Path, seed: int = 0, *, log=lambda _m: None) -> dict[str, dict]:
    """Write the four full-size checkpoint folders and the lyric tokenizer under `out`."""
    from ..package import RANDOM_WEIGHTS_MARKER
    from .dcae import build_dcae
    from .mel import hann_periodic, slaney_mel_fb
    from .text_encoder import build_umt5
    from .tokenizers_tiny import write_lyric_tokenizer, write_umt5_tokenizer
    from .transformer import build_transformer
    from .vocoder import build_vocoder, vocoder_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RANDOM_WEIGHTS_MARKER).write_text(
        f"random weights (seed {seed}) written by tools.onnx_export.v1.make_full_size\n", encoding="utf-8")
    g = torch.Generator().manual_seed(int(seed))
    make = lambda name, shape: _init(name, shape, g)  # noqa: E731
    written: dict[str, dict] = {}

    def done(name: str, folder: Path, params: int, t0: float) -> None:
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        written[name] = {"dir": str(folder), "params": params, "bytes": size,
                         "seconds": round(time.perf_counter() - t0, 1)}
        log(f"{name}: {params / 1e9:.3f} B params, {size / 1e9:.2f} GB, {written[name]['seconds']} s")

    t0 = time.perf_counter()
    d = out / TRANSFORMER_DIR
    _write_config(d / CONFIG_FILE, FULL_TRANSFORMER)
    shapes = _meta_shapes(build_transformer(V1Config.from_dict(FULL_TRANSFORMER, "full size"), "meta"))
    done("transformer", d, write_safetensors_streamed(d / DIFFUSERS_WEIGHTS, shapes, make), t0)

    t0 = time.perf_counter()
    d = out / DCAE_DIR
    cfg = full_dcae_config()
    _write_config(d / CONFIG_FILE, cfg)
    with torch.device("meta"):
        shapes = _meta_shapes(build_dcae(cfg))
    done("dcae", d, write_safetensors_streamed(d / DIFFUSERS_WEIGHTS, shapes, make), t0)

    t0 = time.perf_counter()
    d = out / VOCODER_DIR
    cfg = full_vocoder_config()
    _write_config(d / CONFIG_FILE, cfg)
    shapes = _meta_shapes(build_vocoder(vocoder_config(cfg, "full size"), "meta"))
    # the mel buffers hold their real values (window, slaney filter bank), not noise
    real = {"mel_transform.spectrogram.window": torch.tensor(hann_periodic(cfg["win_length"])),
            "mel_transform.mel_scale.fb": torch.tensor(slaney_mel_fb(cfg["sampling_rate"], cfg["n_fft"], cfg["n_mels"],
                                                                     cfg["f_min"], cfg["f_max"]))}
    done("vocoder", d, write_safetensors_streamed(
        d / DIFFUSERS_WEIGHTS, shapes, lambda n, s: real[n] if n in real else make(n, s)), t0)

    t0 = time.perf_counter()
    d = out / TEXT_ENCODER_DIR
    _write_config(d / CONFIG_FILE, FULL_UMT5)
    with torch.device("meta"):
        umt5 = build_umt5(FULL_UMT5)
    # the tied embedding is stored once, as save_pretrained does
    shapes = _meta_shapes(umt5, skip=("encoder.embed_tokens.weight",))
    params = write_safetensors_streamed(d / "model.safetensors", shapes, make)
    write_umt5_tokenizer(d, FULL_UMT5["vocab_size"])
    done("text_encoder", d, params, t0)

    write_lyric_tokenizer(out / LYRIC_TOKENIZER_DIR / LYRIC_TOKENIZER_FILE)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.onnx_export.v1.make_full_size",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    log = lambda m: print(f"[v1.make_full_size] {m}", file=sys.stderr, flush=True)  # noqa: E731
    written = write_full_size_v1(a.out, a.seed, log=log)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"components": written, "peak_rss_mib": round(peak)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
