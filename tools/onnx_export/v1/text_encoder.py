"""UMT5-base encoder (`umt5-base/`, transformers `UMT5EncoderModel`, spec §5) with the ERG "tag" q scale as
a graph input: `erg_q_scale[i]` multiplies the output of `encoder.block[i].layer[0].SelfAttention.q`."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from ..common import CheckpointError, load_safetensors_fp32, load_state_dict_strict, read_json, require_dir, require_file
from .config import CONFIG_FILE

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model")
# The embedding is stored once: save_pretrained drops one of the tied copies.
_TIED = ("shared.weight", "encoder.embed_tokens.weight")


def build_umt5(config: dict):
    from transformers import UMT5Config, UMT5EncoderModel

    if config.get("model_type", "umt5") != "umt5":
        raise CheckpointError(f"text encoder config has model_type {config.get('model_type')!r}, expected 'umt5'")
    cfg = UMT5Config(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    cfg.dropout_rate = 0.0
    cfg._attn_implementation = "eager"
    return UMT5EncoderModel(cfg).float().eval()


def load_umt5(ckpt_dir: Path):
    """Strictly load `umt5-base/` (config.json + model.safetensors, encoder weights) as fp32.

    The token embedding may be stored as `shared.weight`, `encoder.embed_tokens.weight` or both (tied);
    every other missing, unexpected or mis-shaped key is an error. Decoder weights are unexpected keys."""
    ckpt_dir = require_dir(Path(ckpt_dir), "UMT5 checkpoint directory")
    model = build_umt5(read_json(ckpt_dir / CONFIG_FILE, "UMT5 config"))
    weights = require_file(ckpt_dir / WEIGHTS_FILE, "UMT5 weights")
    state = load_safetensors_fp32(weights, "UMT5 weights")
    present = [k for k in _TIED if k in state]
    if len(present) == 1:
        state[_TIED[1 - _TIED.index(present[0])]] = state[present[0]]
    elif len(present) == 2 and not torch.equal(state[_TIED[0]], state[_TIED[1]]):
        raise CheckpointError(f"{weights}: shared.weight and encoder.embed_tokens.weight differ (they are tied)")
    load_state_dict_strict(model, state, str(weights))
    model.checkpoint_dir = ckpt_dir
    return model


class _ScaledQ(nn.Module):
    """Wraps a block's `q` projection: output × scale[layer] (the ERG hook of spec §5 as a graph input)."""

    def __init__(self, linear: nn.Linear, holder: "TextEncoderGraph", layer: int):
        super().__init__()
        self.linear = linear
        self.layer = layer
        object.__setattr__(self, "_holder", holder)  # not a submodule (avoids a reference cycle in modules())

    def forward(self, x):
        return self.linear(x) * self._holder.q_scale[self.layer]


class TextEncoderGraph(nn.Module):
    """(input_ids, attention_mask, erg_q_scale [layers]) → last_hidden_state. Wraps (and modifies) `model`:
    each block's q projection is replaced by a scaled one; use a fresh model for hook-based references."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.q_scale = None
        for i, block in enumerate(model.encoder.block):
            attn = block.layer[0].SelfAttention
            if not isinstance(attn.q, _ScaledQ):
                attn.q = _ScaledQ(attn.q, self, i)

    def forward(self, input_ids, attention_mask, erg_q_scale):
        self.q_scale = erg_q_scale
        try:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            self.q_scale = None


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    require_file(Path(src) / "tokenizer.json", "UMT5 tokenizer file")
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, dst / name)
            copied.append(name)
    return copied


def tokenizer_appends_eos(tokenizer_dir: Path, eos_id: int) -> bool:
    """Whether tokenizer.json appends `</s>` itself, as the official T5 tokenizer does (measured)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    ids = tok.encode("probe").ids
    plain = tok.encode("probe", add_special_tokens=False).ids
    return len(ids) == len(plain) + 1 and ids[-1] == eos_id
