"""Audio tokenizer / detokenizer with the FSQ math of vector-quantize-pytorch 1.27.15 (spec §1.7, §8.15).

ResidualFSQ with one quantizer, `preserve_symmetry=True`, `bound_hard_clamp=True`:
  encode: x -> project_in -> soft clamp c*tanh(x/c), c = 1 + 1/(L-1) -> clamp [-1, 1]
          -> l = floor((L-1)(u+1)/2 + 0.5) -> z = 2l/(L-1) - 1 -> index = sum(l * basis)
  decode: index -> l_d = (index // basis_d) mod L_d -> z -> project_out.
Written here directly (no vector_quantize_pytorch dependency); level grids are rebuilt in code because the
checkpoint stores no FSQ buffers.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import AceStepConfig
from .layers import EncoderStack


def fsq_basis(levels: list[int]) -> list[int]:
    """Mixed-radix basis, first level least significant: [1, L0, L0*L1, ...]."""
    basis, acc = [], 1
    for l in levels:
        basis.append(acc)
        acc *= int(l)
    return basis


class FSQ(nn.Module):
    """`tokenizer.quantizer`: only project_in / project_out carry weights."""

    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        self.levels = [int(l) for l in cfg.fsq_input_levels]
        self.basis = fsq_basis(self.levels)
        self.codebook_size = self.basis[-1] * self.levels[-1]
        n = len(self.levels)
        self.project_in = nn.Linear(cfg.fsq_dim, n)
        self.project_out = nn.Linear(n, cfg.fsq_dim)

    def _consts(self, ref: torch.Tensor):
        levels = torch.tensor(self.levels, dtype=torch.float32, device=ref.device)
        basis = torch.tensor(self.basis, dtype=torch.int64, device=ref.device)
        return levels, basis

    def quantize_levels(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n] (after project_in) -> integer level indices l [..., n] (int64). fp32 throughout."""
        levels, _ = self._consts(x)
        x = x.float()
        c = 1.0 + 1.0 / (levels - 1.0)
        x = torch.tanh(x / c) * c
        u = x.clamp(-1.0, 1.0)
        return torch.floor((levels - 1.0) * (u + 1.0) / 2.0 + 0.5).to(torch.int64)

    def levels_to_values(self, l: torch.Tensor) -> torch.Tensor:
        levels, _ = self._consts(l)
        return l.to(torch.float32) * (2.0 / (levels - 1.0)) - 1.0

    def levels_to_indices(self, l: torch.Tensor) -> torch.Tensor:
        _, basis = self._consts(l)
        return (l * basis).sum(dim=-1)

    def indices_to_levels(self, idx: torch.Tensor) -> torch.Tensor:
        levels, basis = self._consts(idx)
        return torch.remainder(torch.div(idx[..., None], basis, rounding_mode="floor"), levels.to(torch.int64))

    def indices_to_values(self, idx: torch.Tensor) -> torch.Tensor:
        return self.levels_to_values(self.indices_to_levels(idx))

    def decode(self, idx: torch.Tensor) -> torch.Tensor:
        """codes [B, T5] int64 -> project_out(values) [B, T5, fsq_dim]."""
        return self.project_out(self.indices_to_values(idx))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T5, fsq_dim] -> (quantized [B, T5, fsq_dim], indices [B, T5] int64)."""
        l = self.quantize_levels(self.project_in(x))
        return self.project_out(self.levels_to_values(l)), self.levels_to_indices(l)


class AttentionPooler(EncoderStack):
    def __init__(self, cfg: AceStepConfig):
        super().__init__(cfg, cfg.num_attention_pooler_hidden_layers)
        self.embed_tokens = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.special_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T5, P, H] -> [B, T5, H]: prepend special token, layers over P+1 positions, take position 0."""
        b, t5, p, h = x.shape
        x = self.embed_tokens(x)
        special = self.special_token.reshape(1, 1, 1, h).expand(b, t5, 1, h)
        x = torch.cat([special, x], dim=2).reshape(b * t5, p + 1, h)
        x = self.run_layers(x, key_padding=None, limit_depth=False)
        return x[:, 0, :].reshape(b, t5, h)


class AudioTokenizer(nn.Module):
    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        self.pool = cfg.pool_window_size
        self.audio_acoustic_proj = nn.Linear(cfg.audio_acoustic_hidden_dim, cfg.hidden_size)
        self.attention_pooler = AttentionPooler(cfg)
        self.quantizer = FSQ(cfg)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents [B, T, 64] with T a multiple of pool_window_size (the host pads with silence_latent)
        -> (quantized [B, T/5, fsq_dim], codes [B, T/5] int64)."""
        b, t, c = latents.shape
        x = latents.reshape(b, t // self.pool, self.pool, c)
        x = self.attention_pooler(self.audio_acoustic_proj(x))
        return self.quantizer(x)


class AudioDetokenizer(EncoderStack):
    """`detokenizer`: [B, T5, H] -> [B, T5*P, 64] (repeat x P + special_tokens, layers over P positions)."""

    def __init__(self, cfg: AceStepConfig):
        super().__init__(cfg, cfg.num_attention_pooler_hidden_layers)
        h = cfg.hidden_size
        self.pool = cfg.pool_window_size
        self.embed_tokens = nn.Linear(h, h)
        self.special_tokens = nn.Parameter(torch.zeros(1, self.pool, h))
        self.proj_out = nn.Linear(h, cfg.audio_acoustic_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t5, h = x.shape
        x = self.embed_tokens(x)[:, :, None, :].expand(b, t5, self.pool, h) + self.special_tokens[:, None]
        x = x.reshape(b * t5, self.pool, h)
        x = self.proj_out(self.run_layers(x, key_padding=None, limit_depth=False))
        return x.reshape(b, t5 * self.pool, x.shape[-1])
