"""VAE (diffusers `AutoencoderOobleck`, checkpoint dir `vae/`): tiny writer, strict loader, ONNX export.

Spec §1.8 / §2.2: every convolution is weight-normed and the checkpoint stores `weight_g` / `weight_v`;
the exported graphs use the folded weight w = g · v / ‖v‖ (norm over every dim except 0; for the
decoder's ConvTranspose1d dim 0 is in_channels, so g is [in, 1, 1]).

Graphs:
- `vae_decoder.onnx`: latents float32 [B, 64, T] → audio float32 [B, 2, 1920·T];
- `vae_encoder.onnx`: audio float32 [B, 2, 1920·T] → latent_mean, latent_std float32 [B, 64, T]
  (the diagonal-Gaussian posterior: mean, and std = softplus(scale) + 1e-4). The official code samples
  mean + std·ε from the global RNG; acestep.cpp uses the mean. Exporting both lets a host do either.
"""

from __future__ import annotations

import math
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
)
from .snake_op import fuse_snakes_in_file

VAE_DIR = "vae"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

# Official values (spec §1.8); the tiny model keeps everything that fixes shapes and rates.
OFFICIAL_CONFIG = {
    "encoder_hidden_size": 128,
    "downsampling_ratios": [2, 4, 4, 6, 10],
    "channel_multiples": [1, 2, 4, 8, 16],
    "decoder_channels": 128,
    "decoder_input_channels": 64,
    "audio_channels": 2,
    "sampling_rate": 48000,
}
# Tiny: same latent dim 64, same hop 1920 (downsampling_ratios), same sample rate and channels.
# encoder_hidden_size must stay 128 because diffusers splits the encoder output (encoder_hidden_size
# channels) into mean and scale of the 64-d latent. With the official channel_multiples that would make
# the encoder 85 M parameters, so the tiny model uses [1, 1, 1, 1, 2]: the last stage still changes
# width, which keeps in != out for one ConvTranspose (the [in, 1, 1] weight_g case of spec §2.2).
TINY_CONFIG = {
    "encoder_hidden_size": 128,
    "downsampling_ratios": [2, 4, 4, 6, 10],
    "channel_multiples": [1, 1, 1, 1, 2],
    "decoder_channels": 16,
    "decoder_input_channels": 64,
    "audio_channels": 2,
    "sampling_rate": 48000,
}


def _config_kwargs(config: dict) -> dict:
    return {k: config[k] for k in OFFICIAL_CONFIG if k in config}


def build_vae(config: dict):
    """An AutoencoderOobleck (weight-normed, as in the checkpoint) from a diffusers config dict."""
    from diffusers import AutoencoderOobleck

    missing = [k for k in OFFICIAL_CONFIG if k not in config]
    if missing:
        raise CheckpointError(f"VAE config lacks keys {missing}")
    cls = config.get("_class_name", "AutoencoderOobleck")
    if cls != "AutoencoderOobleck":
        raise CheckpointError(f"VAE config _class_name is {cls!r}, expected 'AutoencoderOobleck'")
    if config["encoder_hidden_size"] != 2 * config["decoder_input_channels"]:
        raise CheckpointError(
            f"VAE config: encoder_hidden_size {config['encoder_hidden_size']} must be 2 × decoder_input_channels "
            f"{config['decoder_input_channels']} (the encoder output splits into mean and scale)")
    return AutoencoderOobleck(**_config_kwargs(config)).float().eval()


def write_tiny_vae(ckpt_dir: Path, seed: int) -> None:
    """Write `config.json` + `diffusion_pytorch_model.safetensors` (bf16, official key names, weight_g/weight_v)."""
    write_random_vae(ckpt_dir, seed, TINY_CONFIG)


def write_random_vae(ckpt_dir: Path, seed: int, config: dict) -> None:
    """A random-weight VAE checkpoint in the official layout for `config` (tiny, or OFFICIAL_CONFIG to measure)."""
    from safetensors.torch import save_file

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_vae(config)
    gen = torch.Generator().manual_seed(seed + 1)
    state = {}
    with torch.no_grad():
        for key, value in model.state_dict().items():
            value = value.clone()
            if key.endswith(".weight_g"):
                # g differs from ‖v‖ so that a loader ignoring weight_g gives a visibly different result.
                value = value * (0.5 + torch.rand(value.shape, generator=gen))
            elif key.endswith((".alpha", ".beta")):
                value = 0.3 * torch.randn(value.shape, generator=gen)
            elif key.endswith(".bias"):
                value = 0.05 * torch.randn(value.shape, generator=gen)
            state[key] = value.to(torch.bfloat16).contiguous()
    config = {"_class_name": "AutoencoderOobleck", "_diffusers_version": "0.35.2", **_config_kwargs(config)}
    import json

    (ckpt_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(state, str(ckpt_dir / WEIGHTS_FILE), metadata={"format": "pt"})


def load_vae(ckpt_dir: Path):
    """Strictly load `vae/` (config.json + diffusion_pytorch_model.safetensors) as fp32, weight norm NOT folded."""
    ckpt_dir = require_dir(Path(ckpt_dir), "VAE checkpoint directory")
    config = read_json(ckpt_dir / CONFIG_FILE, "VAE config")
    model = build_vae(config)
    weights = ckpt_dir / WEIGHTS_FILE
    load_state_dict_strict(model, load_safetensors_fp32(weights, "VAE weights"), str(weights))
    return model


def fold_weight_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every weight-norm parametrisation (weight_g, weight_v) by the plain weight g·v/‖v‖, in place."""
    from torch.nn.utils import remove_weight_norm

    folded = 0
    for module in model.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            remove_weight_norm(module)
            folded += 1
    if any(name.endswith(("weight_g", "weight_v")) for name, _ in model.named_parameters()):
        raise RuntimeError("weight norm left unfolded parameters behind")
    return model


class FoldedSnake(torch.nn.Module):
    """Snake1d with its per-channel constants precomputed, in the cheaper form the graphs use.

    diffusers: x + 1/(exp(β) + 1e-9) · sin²(exp(α)·x), i.e. Mul, Sin, Pow, Mul, Add over the full tensor
    (plus Exp/Reciprocal of the parameters). Here sin²(u) = (1 − cos 2u)/2 gives
    y = x + c − c·cos(a·x) with a = 2·exp(α) and c = 0.5/(exp(β) + 1e-9), both [1, C, 1] constants: the
    trigonometric pass — by far the slowest (ONNX Runtime's Sin/Cos are not vectorised) — stays one, and
    Pow (a generic power kernel) and the parameter ops go. The absolute error is ≤ ~c·2⁻²³, the same
    order as the original form's.
    """

    def __init__(self, snake):
        super().__init__()
        if not getattr(snake, "logscale", True):
            raise ValueError("FoldedSnake expects diffusers' log-scale Snake1d parameters")
        with torch.no_grad():
            alpha = snake.alpha.detach().double()
            beta = snake.beta.detach().double()
            self.register_buffer("scale", (2.0 * torch.exp(alpha)).float())
            self.register_buffer("half_inv_beta", (0.5 / (torch.exp(beta) + 1e-9)).float())

    def forward(self, x):
        c = self.half_inv_beta
        return (x + c) - c * torch.cos(self.scale * x)


def fold_snakes(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every diffusers Snake1d by FoldedSnake, in place; returns the model."""
    from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d

    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Snake1d):
                setattr(module, name, FoldedSnake(child))
                replaced += 1
    if any(isinstance(m, Snake1d) for m in model.modules()):
        raise RuntimeError("fold_snakes left a Snake1d behind")
    if replaced == 0:
        raise RuntimeError("fold_snakes found no Snake1d: not a diffusers AutoencoderOobleck?")
    return model


class VaeDecoderGraph(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.decoder = vae.decoder

    def forward(self, latents):
        return self.decoder(latents)


class VaeEncoderGraph(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.encoder = vae.encoder

    def forward(self, audio):
        h = self.encoder(audio)
        mean, scale = h.chunk(2, dim=1)
        return mean, torch.nn.functional.softplus(scale) + 1e-4


def hop_length(model) -> int:
    return int(math.prod(model.config.downsampling_ratios))


def export_vae_graphs(model, out_dir: Path, *, opset: int = DEFAULT_OPSET,
                      external_data_min_bytes: int = DEFAULT_EXTERNAL_DATA_MIN_BYTES) -> dict[str, str]:
    """Fold weight norm and export `vae_decoder.onnx` and `vae_encoder.onnx`; return component → file name."""
    out_dir = Path(out_dir)
    fold_weight_norm(model)
    fold_snakes(model)
    cfg = model.config
    hop = hop_length(model)
    latent = cfg.decoder_input_channels
    channels = cfg.audio_channels
    batch = torch.export.Dim("batch", min=1, max=64)
    frames = torch.export.Dim("frames", min=1, max=15000 * 4)
    export_onnx(
        VaeDecoderGraph(model), (torch.randn(2, latent, 7),), out_dir / "vae_decoder.onnx",
        input_names=["latents"], output_names=["audio"],
        dynamic_shapes={"latents": {0: batch, 2: frames}},
        output_shapes={"audio": ["batch", channels, f"{hop}*frames"]},
        opset=opset, external_data_min_bytes=external_data_min_bytes,
    )
    export_onnx(
        VaeEncoderGraph(model), (torch.randn(2, channels, hop * 7),), out_dir / "vae_encoder.onnx",
        input_names=["audio"], output_names=["latent_mean", "latent_std"],
        dynamic_shapes={"audio": {0: batch, 2: hop * frames}},
        output_shapes={"latent_mean": ["batch", latent, "frames"], "latent_std": ["batch", latent, "frames"]},
        opset=opset, external_data_min_bytes=external_data_min_bytes,
    )
    for name in ("vae_decoder.onnx", "vae_encoder.onnx"):
        if fuse_snakes_in_file(out_dir / name) == 0:
            raise RuntimeError(f"{name}: no FoldedSnake node group found to fuse; did torch export Snake differently?")
    return {"vae_decoder": "vae_decoder.onnx", "vae_encoder": "vae_encoder.onnx"}


def vae_host_config(model) -> dict:
    cfg = model.config
    return {
        "sample_rate": int(cfg.sampling_rate),
        "audio_channels": int(cfg.audio_channels),
        "latent_channels": int(cfg.decoder_input_channels),
        "hop_length": hop_length(model),
        "latent_rate_hz": cfg.sampling_rate / hop_length(model),
        "encoder_outputs": ["latent_mean", "latent_std"],
    }
