"""The ADaMoS HiFi-GAN vocoder (`music_vocoder/`, spec §9): ConvNeXt backbone + HiFi-GAN head, weight-normed
head convs stored as weight_g/weight_v (folded for export), mel buffers kept for the key layout."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..common import CheckpointError, load_safetensors_fp32, load_state_dict_strict, read_json, require_dir, require_file
from .config import CONFIG_FILE, DIFFUSERS_WEIGHTS

# Class defaults of the official vocoder (spec §1); config.json values override them.
DEFAULT_CONFIG = {
    "input_channels": 128, "depths": [3, 3, 9, 3], "dims": [128, 256, 384, 512], "kernel_sizes": [7],
    "upsample_rates": [4, 4, 2, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11, 13], "resblock_dilation_sizes": [[1, 3, 5]] * 4, "num_mels": 512,
    "upsample_initial_channel": 1024, "use_template": False, "pre_conv_kernel_size": 13,
    "post_conv_kernel_size": 13, "sampling_rate": 44100, "n_fft": 2048, "win_length": 2048, "hop_length": 512,
    "f_min": 40, "f_max": 16000, "n_mels": 128,
}
_IGNORED = ("drop_path_rate",)


def _wn(module: nn.Module) -> nn.Module:
    # the old-style hook keeps the official `weight_g` / `weight_v` parameter names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T] (ConvNeXt `channels_first`)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight, self.bias, self.eps).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = self.dwconv(x).transpose(1, 2)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class ConvNeXtEncoder(nn.Module):
    def __init__(self, cin: int, depths, dims, kernel: int):
        super().__init__()
        stem = nn.Conv1d(cin, dims[0], kernel, padding=kernel // 2, padding_mode="replicate")
        self.channel_layers = nn.ModuleList([nn.Sequential(stem, ChannelsFirstLayerNorm(dims[0]))])
        for i in range(1, len(dims)):
            self.channel_layers.append(nn.Sequential(ChannelsFirstLayerNorm(dims[i - 1]),
                                                     nn.Conv1d(dims[i - 1], dims[i], 1)))
        self.stages = nn.ModuleList([nn.Sequential(*[ConvNeXtBlock(dims[i], kernel) for _ in range(depths[i])])
                                     for i in range(len(dims))])
        self.norm = ChannelsFirstLayerNorm(dims[-1])

    def forward(self, x):
        for channel_layer, stage in zip(self.channel_layers, self.stages):
            x = stage(channel_layer(x))
        return self.norm(x)


class ResBlock1(nn.Module):
    def __init__(self, ch: int, kernel: int, dilations):
        super().__init__()
        self.convs1 = nn.ModuleList([_wn(nn.Conv1d(ch, ch, kernel, dilation=d, padding=(kernel * d - d) // 2))
                                     for d in dilations])
        self.convs2 = nn.ModuleList([_wn(nn.Conv1d(ch, ch, kernel, padding=(kernel - 1) // 2))
                                     for _ in dilations])

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.silu(c1(F.silu(x))))
        return x


class HiFiGANHead(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        ch = cfg["upsample_initial_channel"]
        k_pre, k_post = cfg["pre_conv_kernel_size"], cfg["post_conv_kernel_size"]
        self.conv_pre = _wn(nn.Conv1d(cfg["num_mels"], ch, k_pre, padding=(k_pre - 1) // 2))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (r, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"])):
            cin, cout = ch // 2 ** i, ch // 2 ** (i + 1)
            self.ups.append(_wn(nn.ConvTranspose1d(cin, cout, k, stride=r, padding=(k - r) // 2)))
            for kr, dil in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]):
                self.resblocks.append(ResBlock1(cout, kr, dil))
        self.conv_post = _wn(nn.Conv1d(ch // 2 ** len(self.ups), 1, k_post, padding=(k_post - 1) // 2))
        self.num_kernels = len(cfg["resblock_kernel_sizes"])

    def forward(self, x):
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.silu(x))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        return torch.tanh(self.conv_post(F.silu(x)))


class _MelBuffers(nn.Module):
    """Only the two persistent buffers of the official mel transform (`spectrogram.window`, `mel_scale.fb`)."""

    def __init__(self, win_length: int, n_freqs: int, n_mels: int):
        super().__init__()
        self.spectrogram = nn.Module()
        self.spectrogram.register_buffer("window", torch.zeros(win_length))
        self.mel_scale = nn.Module()
        self.mel_scale.register_buffer("fb", torch.zeros(n_freqs, n_mels))


class V1Vocoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.config = cfg
        self.backbone = ConvNeXtEncoder(cfg["input_channels"], cfg["depths"], cfg["dims"], cfg["kernel_sizes"][0])
        self.head = HiFiGANHead(cfg)
        self.mel_transform = _MelBuffers(cfg["win_length"], cfg["n_fft"] // 2 + 1, cfg["n_mels"])

    @property
    def hop(self) -> int:
        return int(math.prod(self.config["upsample_rates"]))

    def forward(self, mel):
        """mel [N, 128, F] → audio [N, hop·F] (spec §9: vocoder.decode per channel)."""
        return self.head(self.backbone(mel))[:, 0]


def vocoder_config(raw: dict, source: str) -> dict:
    unknown = sorted(k for k in raw if k not in DEFAULT_CONFIG and k not in _IGNORED and not k.startswith("_"))
    if unknown:
        raise CheckpointError(f"{source}: unknown vocoder config keys {unknown}")
    cfg = {**DEFAULT_CONFIG, **{k: v for k, v in raw.items() if k in DEFAULT_CONFIG}}
    if cfg["use_template"]:
        raise CheckpointError(f"{source}: use_template=true is not supported (the official checkpoint has false)")
    if len(cfg["kernel_sizes"]) != 1:
        raise CheckpointError(f"{source}: kernel_sizes {cfg['kernel_sizes']}: one ConvNeXt kernel size expected")
    if cfg["num_mels"] != cfg["dims"][-1]:
        raise CheckpointError(f"{source}: num_mels {cfg['num_mels']} must equal dims[-1] {cfg['dims'][-1]}")
    if math.prod(cfg["upsample_rates"]) != cfg["hop_length"]:
        raise CheckpointError(f"{source}: upsample_rates multiply to {math.prod(cfg['upsample_rates'])}, "
                              f"hop_length is {cfg['hop_length']}")
    return cfg


def build_vocoder(cfg: dict, device: str | torch.device = "cpu") -> V1Vocoder:
    with torch.device(device):
        return V1Vocoder(cfg)


def load_vocoder(ckpt_dir: Path) -> V1Vocoder:
    """Strictly load `music_vocoder/` as fp32, weight norm NOT folded (see fold_weight_norm)."""
    ckpt_dir = require_dir(Path(ckpt_dir), "v1 vocoder checkpoint directory")
    path = ckpt_dir / CONFIG_FILE
    cfg = vocoder_config(read_json(path, "v1 vocoder config"), str(path))
    weights = require_file(ckpt_dir / DIFFUSERS_WEIGHTS, "v1 vocoder weights")
    model = build_vocoder(cfg)
    load_state_dict_strict(model, load_safetensors_fp32(weights, "v1 vocoder weights"), str(weights))
    return model.float().eval()
