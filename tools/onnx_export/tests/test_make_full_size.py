"""make_full_size: the configs it writes have the official dimensions (spec §1.2, §1.3, §1.8), checked on the
meta device (no weights); the size overrides it relies on reach the written checkpoints (tiny sizes)."""
from __future__ import annotations

import json
import re

import torch

from tools.onnx_export.acestep.config import AceStepConfig
from tools.onnx_export.acestep.model import expected_state_shapes, load_acestep_checkpoint
from tools.onnx_export.acestep.tiny import tiny_config_dict, write_tiny_acestep
from tools.onnx_export.make_full_size import DIT_SIZES, text_encoder_config
from tools.onnx_export.text_encoder import load_text_encoder, write_tiny_text_encoder
from tools.onnx_export.vae import OFFICIAL_CONFIG


def _layer_count(shapes: dict, prefix: str) -> int:
    idx = {int(m.group(1)) for k in shapes for m in [re.match(re.escape(prefix) + r"\.layers\.(\d+)\.", k)] if m}
    return max(idx) + 1 if idx else 0


def test_dit_sizes_are_the_spec_values():
    cfg = AceStepConfig.from_dict({**tiny_config_dict(1024), **DIT_SIZES})
    shapes = expected_state_shapes(cfg)
    # spec §1.2 table
    assert _layer_count(shapes, "decoder") == 24
    assert _layer_count(shapes, "encoder.lyric_encoder") == 8
    assert _layer_count(shapes, "encoder.timbre_encoder") == 4
    assert _layer_count(shapes, "tokenizer.attention_pooler") == 2
    assert _layer_count(shapes, "detokenizer") == 2
    assert shapes["decoder.layers.0.self_attn.q_proj.weight"] == (16 * 128, 2048)
    assert shapes["decoder.layers.0.self_attn.k_proj.weight"] == (8 * 128, 2048)
    assert shapes["decoder.layers.0.self_attn.q_norm.weight"] == (128,)
    assert shapes["decoder.layers.23.mlp.gate_proj.weight"] == (6144, 2048)
    assert shapes["decoder.proj_in.1.weight"] == (2048, 192, 2)           # in_channels 192, patch 2
    assert shapes["encoder.text_projector.weight"] == (2048, 1024)       # text_hidden_dim 1024 → 2048
    assert shapes["encoder.timbre_encoder.embed_tokens.weight"] == (2048, 64)
    assert shapes["tokenizer.quantizer.project_in.weight"] == (6, 2048)  # fsq_dim 2048 → 6 levels
    assert cfg.layer_types[:2] == ["sliding_attention", "full_attention"] and len(cfg.layer_types) == 24
    assert cfg.sliding_window == 128 and cfg.pool_window_size == 5 and cfg.timbre_fix_frame == 750


def test_text_encoder_and_vae_sizes_are_the_spec_values():
    from transformers import Qwen3Config, Qwen3Model

    config = text_encoder_config()
    with torch.device("meta"):
        model = Qwen3Model(Qwen3Config(**{k: v for k, v in config.items() if k != "architectures"}))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # spec §1.3: 28 layers, hidden 1024, intermediate 3072, 16 / 8 heads of 128, vocab 151669
    assert _layer_count({f"m.{k}": v for k, v in shapes.items()}, "m") == 28
    assert shapes["embed_tokens.weight"] == (151669, 1024)
    assert shapes["layers.0.self_attn.q_proj.weight"] == (16 * 128, 1024)
    assert shapes["layers.0.self_attn.k_proj.weight"] == (8 * 128, 1024)
    assert shapes["layers.27.mlp.up_proj.weight"] == (3072, 1024)
    # spec §1.8
    assert OFFICIAL_CONFIG["encoder_hidden_size"] == 128 and OFFICIAL_CONFIG["decoder_channels"] == 128
    assert OFFICIAL_CONFIG["channel_multiples"] == [1, 2, 4, 8, 16]
    assert OFFICIAL_CONFIG["downsampling_ratios"] == [2, 4, 4, 6, 10]


def test_size_overrides_reach_the_written_checkpoints(tmp_path):
    # DiT: tiny widths, one override; the strict loader must build the overridden model from config.json
    write_tiny_acestep(tmp_path / "dit", 0, text_hidden_dim=64, sizes={"num_lyric_encoder_hidden_layers": 4,
                                                                       "intermediate_size": 192})
    model = load_acestep_checkpoint(tmp_path / "dit")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert _layer_count(shapes, "encoder.lyric_encoder") == 4
    assert shapes["decoder.layers.0.mlp.gate_proj.weight"] == (192, 128)
    assert json.loads((tmp_path / "dit" / "config.json").read_text())["intermediate_size"] == 192
    # text encoder: a config other than TINY_CONFIG is written and loads strictly
    from tools.onnx_export.text_encoder import TINY_CONFIG

    write_tiny_text_encoder(tmp_path / "te", 0, None, config={**TINY_CONFIG, "num_hidden_layers": 3,
                                                              "max_window_layers": 3})
    te = load_text_encoder(tmp_path / "te")
    assert len(te.layers) == 3
    assert te.layers[2].self_attn.q_proj.weight.dtype == torch.float32
