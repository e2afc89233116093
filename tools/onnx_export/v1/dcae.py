"""The mel DCAE (`music_dcae_f8c8/`, diffusers `AutoencoderDC`, spec §1, §9) with the pipeline's latent
scaling and mel normalisation folded into the exported graphs."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..common import CheckpointError, load_safetensors_fp32, load_state_dict_strict, read_json, require_dir, require_file
from .config import CONFIG_FILE, DCAE_SCALE, DCAE_SHIFT, DIFFUSERS_WEIGHTS, MEL_MAX, MEL_MIN

# The official values (spec §1, "[unverified] but identical to the DC-AE defaults ComfyUI uses for ACE").
OFFICIAL_CONFIG = {
    "in_channels": 2, "latent_channels": 8, "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [128, 256, 512, 1024], "decoder_block_out_channels": [128, 256, 512, 1024],
    "encoder_layers_per_block": [2, 2, 3, 3], "decoder_layers_per_block": [3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [5], [5]], "decoder_qkv_multiscales": [[], [], [5], [5]],
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv", "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu", "scaling_factor": 0.41407,
}
_MEL_SPAN = MEL_MAX - MEL_MIN  # 14


def build_dcae(config: dict, source: str = "DCAE config"):
    from diffusers import AutoencoderDC
    import inspect

    cls = config.get("_class_name", "AutoencoderDC")
    if cls != "AutoencoderDC":
        raise CheckpointError(f"{source}: _class_name is {cls!r}, expected 'AutoencoderDC'")
    accepted = set(inspect.signature(AutoencoderDC.__init__).parameters) - {"self"}
    unknown = sorted(k for k in config if k not in accepted and not k.startswith("_"))
    if unknown:
        raise CheckpointError(f"{source}: keys AutoencoderDC does not take: {unknown}")
    kwargs = {k: v for k, v in config.items() if k in accepted}
    for key, want in (("in_channels", 2), ("latent_channels", 8)):
        if kwargs.get(key) != want:
            raise CheckpointError(f"{source}: {key} = {kwargs.get(key)}, the v1 pipeline needs {want}")
    if len(kwargs.get("decoder_block_out_channels", [])) != 4 or len(kwargs.get("encoder_block_out_channels", [])) != 4:
        raise CheckpointError(f"{source}: 4 stages expected (an ×8 reduction: 128 mel bins → height 16)")
    return AutoencoderDC(**kwargs).float().eval()


def pin_attention_eps(dcae) -> None:
    """The EfficientViT linear attention divides by (Σ φ(k)ᵀφ(q) + 1e-15) with a Python float eps, which
    onnxscript's optimizer drops as "adding zero" — an all-zero φ(q) then gives 0/0 = NaN in the graph
    instead of 0. A tensor buffer survives export."""
    from diffusers.models.attention_processor import SanaMultiscaleLinearAttention

    for module in dcae.modules():
        if isinstance(module, SanaMultiscaleLinearAttention) and not isinstance(module.eps, torch.Tensor):
            eps = float(module.eps)
            del module.eps
            module.register_buffer("eps", torch.tensor([eps], dtype=torch.float32), persistent=False)


class _ContiguousConv2d(nn.Conv2d):
    """Conv2d on a contiguous input. The EfficientViT blocks feed convs with permuted (channels-last
    strided) tensors; for those, torch's fake conv kernel picks a memory format by asking `batch > 1`,
    a guard that breaks the ONNX export with a symbolic batch (torch 2.9). Same arithmetic."""

    def forward(self, x):
        return super().forward(x.contiguous())


def contiguous_conv_inputs(dcae) -> int:
    """Make every Conv2d of the DCAE a `_ContiguousConv2d` (same parameters and keys); return how many."""
    n = 0
    for module in dcae.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = _ContiguousConv2d
            n += 1
    return n


def load_dcae(ckpt_dir: Path):
    ckpt_dir = require_dir(Path(ckpt_dir), "v1 DCAE checkpoint directory")
    path = ckpt_dir / CONFIG_FILE
    model = build_dcae(read_json(path, "v1 DCAE config"), str(path))
    weights = require_file(ckpt_dir / DIFFUSERS_WEIGHTS, "v1 DCAE weights")
    load_state_dict_strict(model, load_safetensors_fp32(weights, "v1 DCAE weights"), str(weights))
    pin_attention_eps(model)
    return model


class DcaeDecoderGraph(nn.Module):
    """latents [B, 8, 16, T] → log-mel [B, 2, 128, 8T]: z/0.1786 − 1.9091 → decoder → (y·0.5+0.5)·14 − 11."""

    def __init__(self, dcae):
        super().__init__()
        contiguous_conv_inputs(dcae)
        self.decoder = dcae.decoder

    def forward(self, latents):
        y = self.decoder(latents / DCAE_SCALE + DCAE_SHIFT)
        return (y * 0.5 + 0.5) * _MEL_SPAN + MEL_MIN


class DcaeEncoderGraph(nn.Module):
    """log-mel [B, 2, 128, F] → latents [B, 8, 16, F/8]: ((mel+11)/14 − 0.5)/0.5 → encoder → (z + 1.9091)·0.1786."""

    def __init__(self, dcae):
        super().__init__()
        contiguous_conv_inputs(dcae)
        self.encoder = dcae.encoder

    def forward(self, mel):
        x = ((mel - MEL_MIN) / _MEL_SPAN - 0.5) / 0.5
        return (self.encoder(x) - DCAE_SHIFT) * DCAE_SCALE
