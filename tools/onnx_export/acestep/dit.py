"""DiT decoder (spec §1.6): timestep embeddings, patching, AdaLN DiT layers, output de-patching."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import AceStepConfig
from .layers import Attention, RMSNorm, SwiGLU, rope_tables


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, scale: float = 1000.0, max_period: float = 10000.0
                      ) -> torch.Tensor:
    """[B] -> [B, dim]: cos first, then sin, of (scale*t)*exp(-ln(max_period)*i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t * scale).float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, hidden: int, in_channels: int = 256):
        super().__init__()
        self.in_channels = in_channels
        self.linear_1 = nn.Linear(in_channels, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.time_proj = nn.Linear(hidden, hidden * 6)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> temb [B, H], tproj [B, 6, H]."""
        temb = self.linear_2(F.silu(self.linear_1(timestep_sinusoid(t, self.in_channels).to(t.dtype))))
        tproj = self.time_proj(F.silu(temb))
        return temb, tproj.reshape(tproj.shape[0], 6, -1)


class _Transpose12(nn.Module):
    """Parameter-free slot of the official Sequential (keeps the `.1` key index)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class DiTLayer(nn.Module):
    def __init__(self, cfg: AceStepConfig, layer_idx: int):
        super().__init__()
        h = cfg.hidden_size
        self.layer_idx = layer_idx
        self.self_attn_norm = RMSNorm(h, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.cross_attn_norm = RMSNorm(h, cfg.rms_norm_eps)
        self.cross_attn = Attention(cfg, cross=True)
        self.mlp_norm = RMSNorm(h, cfg.rms_norm_eps)
        self.mlp = SwiGLU(h, cfg.intermediate_size)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 6, h))

    def forward(self, x, tproj, rope, self_mask, enc=None, cross_kv=None, band=None):
        """enc: embedded encoder states [B, L, H], or cross_kv: their (k, v) from `cross_attn.project_kv`.
        band: self-attention restricted to |i − j| <= band (instead of an additive self_mask)."""
        m = self.scale_shift_table + tproj  # [B, 6, H]
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = m.chunk(6, dim=1)
        n = self.self_attn_norm(x) * (1 + scale_sa) + shift_sa
        x = x + self.self_attn(n, mask=self_mask, rope=rope, band=band) * gate_sa
        # no RoPE, no mask, no gate
        x = x + self.cross_attn(self.cross_attn_norm(x), context=enc, kv=cross_kv)
        n = self.mlp_norm(x) * (1 + scale_ff) + shift_ff
        return x + self.mlp(n) * gate_ff


class DiTDecoder(nn.Module):
    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        self.cfg = cfg
        h, p = cfg.hidden_size, cfg.patch_size
        self.time_embed = TimestepEmbedding(h)
        self.time_embed_r = TimestepEmbedding(h)
        self.proj_in = nn.Sequential(_Transpose12(), nn.Conv1d(cfg.in_channels, h, p, stride=p), _Transpose12())
        self.condition_embedder = nn.Linear(h, h)
        self.layers = nn.ModuleList([DiTLayer(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm_out = RMSNorm(h, cfg.rms_norm_eps)
        self.proj_out = nn.Sequential(_Transpose12(),
                                      nn.ConvTranspose1d(h, cfg.audio_acoustic_hidden_dim, p, stride=p),
                                      _Transpose12())
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 2, h))

    def cross_kv(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """enc [B, L, H] -> every layer's cross-attention k and v, [B, 2·layers, kv_heads, L, head_dim]:
        index 2i is layer i's k (k_norm applied), 2i+1 its v. They depend on the encoder states only, so
        a generation computes them once instead of at every step (spec §1.6, last paragraph)."""
        enc = self.condition_embedder(encoder_hidden_states)
        kv = []
        for layer in self.layers:
            kv.extend(layer.cross_attn.project_kv(enc))
        return torch.stack(kv, dim=1)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, timestep_r: torch.Tensor,
                context_latents: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """x_t [B,T,64], t [B], r [B], context [B,T,128], enc [B,L,H] -> v [B,T,64]."""
        return self._run(hidden_states, timestep, timestep_r, context_latents,
                         enc=self.condition_embedder(encoder_hidden_states))

    def forward_cached(self, hidden_states: torch.Tensor, timestep: torch.Tensor, timestep_r: torch.Tensor,
                       context_latents: torch.Tensor, cross_kv: torch.Tensor) -> torch.Tensor:
        """As `forward`, with the encoder side given as `cross_kv(encoder_hidden_states)`."""
        return self._run(hidden_states, timestep, timestep_r, context_latents, cross_kv=cross_kv)

    def _run(self, hidden_states, timestep, timestep_r, context_latents, enc=None, cross_kv=None):
        cfg = self.cfg
        p = cfg.patch_size
        temb_t, tproj_t = self.time_embed(timestep)
        temb_r, tproj_r = self.time_embed_r(timestep - timestep_r)
        temb = temb_t + temb_r
        tproj = tproj_t + tproj_r

        x = torch.cat([context_latents, hidden_states], dim=-1)
        t_len = x.shape[1]
        # Zero-pad p-1 frames: the stride-p conv then sees exactly ceil(T/p) patches (a trailing partial
        # window is dropped by the conv itself), identical to padding T up to a multiple of p, with no
        # length-dependent branch or slice in the graph.
        x = F.pad(x, (0, 0, 0, p - 1))
        x = self.proj_in(x)  # [B, S = ceil(T/p), H]

        rope = rope_tables(x, cfg.head_dim, cfg.rope_theta)
        # Sliding layers: the band is the DiT's only self-attention mask, computed blockwise in O(S·window)
        # (layers.band_attention); without use_sliding_window they attend fully, like the official code.
        for i, layer in enumerate(self.layers):
            sliding = cfg.use_sliding_window and cfg.layer_types[layer.layer_idx] == "sliding_attention"
            kv = None if cross_kv is None else (cross_kv[:, 2 * i], cross_kv[:, 2 * i + 1])
            x = layer(x, tproj, rope, None, enc, kv, band=cfg.sliding_window if sliding else None)

        shift, scale = (self.scale_shift_table + temb[:, None, :]).chunk(2, dim=1)
        x = self.norm_out(x) * (1 + scale) + shift
        x = self.proj_out(x)
        # crop to T; index_select instead of a slice keeps the exporter from guarding on T vs 2*ceil(T/2)
        return x.index_select(1, torch.arange(t_len, device=x.device))
