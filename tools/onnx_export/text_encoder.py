"""Text encoder (Qwen3-Embedding-0.6B as a bare `transformers` Qwen3Model): tiny writer, loader, export.

Spec §1.3, §1.4, §2.3. Graphs:
- `text_encoder.onnx`: input_ids int64 [B, L], attention_mask int64 [B, L] (1 = token, 0 = padding)
  → last_hidden_state float32 [B, L, H]. Causal self-attention; a key is attended iff j ≤ i and
  attention_mask[b, j] = 1; positions are 0..L-1 (right padding, as the official batching does).
  The official pipeline passes no mask (B = 1, all ones); with a mask the result equals transformers'
  Qwen3Model(input_ids, attention_mask).
- `lyric_embedding.onnx`: input_ids int64 [B, L] → token_embeddings float32 [B, L, H], the
  `embed_tokens` lookup only: lyrics never run through the transformer (spec §1.4).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .common import (
    DEFAULT_EXTERNAL_DATA_MIN_BYTES,
    DEFAULT_OPSET,
    CheckpointError,
    export_onnx,
    load_safetensors_fp32,
    load_state_dict_strict,
    read_json,
    require_dir,
    require_file,
    strip_key_prefix,
)

TEXT_ENCODER_DIR = "Qwen3-Embedding-0.6B"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Tokenizer files a host needs (tokenizer.json is what the Rust core loads; the rest for HF users).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")
REQUIRED_TOKENIZER_FILES = ("tokenizer.json",)

ENDOFTEXT_ID = 151643          # <|endoftext|>, also appended by the tokenizer's post-processor
CAPTION_MAX_LENGTH = 256
LYRIC_MAX_LENGTH = 2048

TINY_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "vocab_size": 151669,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000,
    "rope_scaling": None,
    "max_position_embeddings": 32768,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 2,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "torch_dtype": "bfloat16",
}


def build_text_encoder(config: dict):
    """A fp32 Qwen3Model with eager attention (the graph builds its own additive mask)."""
    from transformers import Qwen3Config, Qwen3Model

    if config.get("use_sliding_window"):
        raise CheckpointError("text encoder config has use_sliding_window=true; Qwen3-Embedding uses full "
                              "causal attention and this exporter does not build sliding masks")
    cfg = Qwen3Config(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    cfg._attn_implementation = "eager"
    return Qwen3Model(cfg).float().eval()


def write_tiny_text_encoder(ckpt_dir: Path, seed: int, tokenizer_dir: Path | None,
                            config: dict | None = None) -> None:
    """Write `config.json`, `model.safetensors` (bf16, bare Qwen3Model keys) and the tokenizer files.

    `tokenizer_dir` holds a Qwen3-Embedding-style tokenizer (appends EOS), e.g. from
    `tools.make_qwen_tokenizer.build_tokenizer(dir, audio_codes=False, append_eos=True)`.
    `config` replaces TINY_CONFIG (e.g. the official 0.6B sizes, `tools/onnx_export/make_full_size.py`).
    """
    from safetensors.torch import save_file

    config = TINY_CONFIG if config is None else config
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_text_encoder(config)
    gen = torch.Generator().manual_seed(seed + 1)
    state = {}
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("norm.weight"):
                # RMSNorm weights start at 1; perturb them so a skipped norm weight shows.
                value = 1.0 + 0.1 * torch.randn(value.shape, generator=gen)
            state[key] = value.to(torch.bfloat16).contiguous()
    del model
    (ckpt_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(state, str(ckpt_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    if tokenizer_dir is not None:
        copy_tokenizer_files(Path(tokenizer_dir), ckpt_dir)


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """Copy the known tokenizer files present in `src` to `dst`; tokenizer.json is required."""
    require_dir(src, "tokenizer directory")
    for name in REQUIRED_TOKENIZER_FILES:
        require_file(src / name, "tokenizer file")
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    return copied


def tokenizer_appends_eos(tokenizer_dir: Path) -> bool:
    """Whether `tokenizer.json` appends `<|endoftext|>` (151643) on its own, as the official pipeline's
    Qwen3-Embedding tokenizer does (spec §1.3; §9 item 3 lists it as to be checked on the real file).
    Measured by encoding a probe text, so the manifest records what the shipped file really does."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(require_file(Path(tokenizer_dir) / "tokenizer.json", "tokenizer file")))
    ids = tok.encode("probe").ids
    plain = tok.encode("probe", add_special_tokens=False).ids
    return len(ids) == len(plain) + 1 and ids[-1] == ENDOFTEXT_ID


def load_text_encoder(ckpt_dir: Path):
    """Strictly load `Qwen3-Embedding-0.6B/` (config.json + model.safetensors; bare keys or a `model.` prefix)."""
    ckpt_dir = require_dir(Path(ckpt_dir), "text encoder checkpoint directory")
    config = read_json(ckpt_dir / CONFIG_FILE, "text encoder config")
    model = build_text_encoder(config)
    weights = ckpt_dir / WEIGHTS_FILE
    state = strip_key_prefix(load_safetensors_fp32(weights, "text encoder weights"), "model.")
    # A Qwen3ForCausalLM-style file may carry lm_head.weight; the embedding model does not use it.
    state.pop("lm_head.weight", None)
    load_state_dict_strict(model, state, str(weights))
    model.checkpoint_dir = ckpt_dir
    return model


class TextEncoderGraph(torch.nn.Module):
    """Qwen3Model forward with an explicit causal + key-padding additive mask (export-friendly)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        m = self.model
        hidden = m.embed_tokens(input_ids)
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
        position_embeddings = m.rotary_emb(hidden, positions)
        q = torch.arange(length, device=input_ids.device).view(length, 1)
        k = torch.arange(length, device=input_ids.device).view(1, length)
        allowed = (k <= q).view(1, 1, length, length) & (attention_mask != 0).view(-1, 1, 1, length)
        # finfo.min, not -inf, as transformers does (spec §8 item 8): rows never become NaN.
        mask = torch.where(allowed, torch.zeros((), dtype=hidden.dtype),
                           torch.full((), torch.finfo(hidden.dtype).min, dtype=hidden.dtype))
        for layer in m.layers:
            out = layer(hidden, attention_mask=mask, position_ids=positions,
                        position_embeddings=position_embeddings)
            hidden = out[0] if isinstance(out, tuple) else out
        return m.norm(hidden)


class LyricEmbeddingGraph(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embed_tokens = model.embed_tokens

    def forward(self, input_ids):
        return self.embed_tokens(input_ids)


def export_text_encoder_graphs(model, out_dir: Path, *, opset: int = DEFAULT_OPSET,
                               external_data_min_bytes: int = DEFAULT_EXTERNAL_DATA_MIN_BYTES) -> dict[str, str]:
    """Export `text_encoder.onnx` and `lyric_embedding.onnx`; return component → file name."""
    out_dir = Path(out_dir)
    hidden = model.config.hidden_size
    batch = torch.export.Dim("batch", min=1, max=64)
    # min=2: the exporter otherwise specialises away length 1; the graphs still run at L = 1.
    text_len = torch.export.Dim("text_length", min=2, max=model.config.max_position_embeddings)
    lyric_len = torch.export.Dim("lyric_length", min=2, max=model.config.max_position_embeddings)
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 9, dtype=torch.int64)
    mask[1, 6:] = 0
    export_onnx(
        TextEncoderGraph(model), (ids, mask), out_dir / "text_encoder.onnx",
        input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
        dynamic_shapes={"input_ids": {0: batch, 1: text_len}, "attention_mask": {0: batch, 1: text_len}},
        output_shapes={"last_hidden_state": ["batch", "text_length", hidden]},
        opset=opset, external_data_min_bytes=external_data_min_bytes,
    )
    export_onnx(
        LyricEmbeddingGraph(model), (ids,), out_dir / "lyric_embedding.onnx",
        input_names=["input_ids"], output_names=["token_embeddings"],
        dynamic_shapes={"input_ids": {0: batch, 1: lyric_len}},
        output_shapes={"token_embeddings": ["batch", "lyric_length", hidden]},
        opset=opset, external_data_min_bytes=external_data_min_bytes,
    )
    return {"text_encoder": "text_encoder.onnx", "lyric_embedding": "lyric_embedding.onnx"}


def text_encoder_host_config(model) -> dict:
    cfg = model.config
    return {
        "hidden_size": int(cfg.hidden_size),
        "vocab_size": int(cfg.vocab_size),
        "causal": True,
        "eos_token_id": ENDOFTEXT_ID,
        "pad_token_id": ENDOFTEXT_ID,
        "caption_max_length": CAPTION_MAX_LENGTH,
        "lyric_max_length": LYRIC_MAX_LENGTH,
    }
