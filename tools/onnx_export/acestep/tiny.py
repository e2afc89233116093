"""Tiny `acestep-v15-*` checkpoint writer: official file names, key names and dtypes, small widths."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .config import AceStepConfig
from .model import CONFIG_FILE, SILENCE_FILE, WEIGHTS_FILE, expected_state_shapes

VARIANTS = ("turbo", "base", "sft")
SILENCE_FRAMES = 15000


def tiny_config_dict(text_hidden_dim: int, variant: str = "turbo") -> dict:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {VARIANTS}")
    n_layers = 4
    return {
        "architectures": ["AceStepConditionGenerationModel"],
        "model_type": "acestep",
        "dtype": "bfloat16",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": n_layers,
        "num_audio_decoder_hidden_layers": n_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "max_position_embeddings": 32768,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "use_sliding_window": True,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * (n_layers // 2),
        "in_channels": 192,
        "audio_acoustic_hidden_dim": 64,
        "patch_size": 2,
        "text_hidden_dim": int(text_hidden_dim),
        "timbre_hidden_dim": 64,
        "timbre_fix_frame": 750,
        "num_lyric_encoder_hidden_layers": 2,
        "num_timbre_encoder_hidden_layers": 2,
        "num_attention_pooler_hidden_layers": 2,
        "pool_window_size": 5,
        "fsq_dim": 128,
        "fsq_input_levels": [8, 8, 8, 5, 5, 5],
        "fsq_input_num_quantizers": 1,
        "is_turbo": variant == "turbo",
        "timestep_mu": -0.4,
        "timestep_sigma": 1.0,
        "data_proportion": 0.5,
    }


def _init_tensor(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Deterministic weights that keep activations O(1) through the tiny stacks."""
    randn = lambda s=1.0: torch.randn(shape, generator=g) * s  # noqa: E731
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("norm.weight") or name.endswith("layernorm.weight") or name.endswith("norm_out.weight"):
        return 1.0 + randn(0.1)
    if leaf == "scale_shift_table":
        return randn(0.2)
    if leaf in ("special_token", "special_tokens", "null_condition_emb"):
        return randn(0.5)
    if leaf == "bias":
        return randn(0.05)
    if leaf == "weight":
        # Linear [out, in]; Conv1d [out, in, k]; ConvTranspose1d [in, out, k]
        if len(shape) == 3:
            fan_in = shape[0] if name.startswith("decoder.proj_out") else shape[1] * shape[2]
        else:
            fan_in = shape[1]
        return randn(1.0 / math.sqrt(fan_in))
    raise ValueError(f"no init rule for {name}")


def write_tiny_acestep(ckpt_dir: Path, seed: int, *, text_hidden_dim: int, variant: str = "turbo",
                       sizes: dict | None = None) -> None:
    """Write config.json, model.safetensors (bf16, official keys, no prefix) and silence_latent.pt
    (float32 [1, 64, 15000]) into ckpt_dir.

    `sizes` overrides keys of the tiny config (e.g. the official widths and depths, see
    `tools/onnx_export/make_full_size.py`); the weights are drawn tensor by tensor and only the bf16 copy
    is kept, so the peak is about the bf16 checkpoint plus its serialised bytes."""
    from safetensors.torch import save_file

    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    cfg_dict = {**tiny_config_dict(text_hidden_dim, variant), **(sizes or {})}
    cfg = AceStepConfig.from_dict(cfg_dict, "tiny config" if sizes is None else "config with sizes overridden")
    g = torch.Generator().manual_seed(int(seed))
    tensors = {}
    for name, shape in sorted(expected_state_shapes(cfg).items()):
        tensors[name] = _init_tensor(name, shape, g).to(torch.bfloat16).contiguous()
    save_file(tensors, str(d / WEIGHTS_FILE), metadata={"format": "pt"})
    (d / CONFIG_FILE).write_text(json.dumps(cfg_dict, indent=2) + "\n", encoding="utf-8")
    # smooth, channel-dependent, time-varying "silence" so the timbre path sees non-constant frames
    t = torch.arange(SILENCE_FRAMES, dtype=torch.float32)
    ch = torch.randn(64, 1, generator=g)
    phase = torch.rand(64, 1, generator=g) * 6.283
    silence = 0.5 * ch + 0.3 * torch.sin(t[None, :] * 0.05 * (1 + torch.rand(64, 1, generator=g)) + phase) \
        + 0.05 * torch.randn(64, SILENCE_FRAMES, generator=g)
    torch.save(silence[None].contiguous(), str(d / SILENCE_FILE))
