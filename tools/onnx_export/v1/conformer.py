"""The lyric conformer (spec §3.2): linear embed + LayerNorm + ×sqrt(d), ESPnet relative-position
self-attention, SiLU FFN, pre-norm blocks, no macaron FFN, no convolution module, final LayerNorm."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import sin_cos

NEG = torch.finfo(torch.float32).min
LN_EPS = 1e-5


def rel_pos_div(d_model: int) -> torch.Tensor:
    """w_i = exp(-(2i)·ln(10000)/d), computed by torch in fp32 (a buffer, see layers.rope_inv_freq)."""
    return torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))


def rel_pos_table(length_like: torch.Tensor, div: torch.Tensor) -> torch.Tensor:
    """[2L-1, d] for relative positions L-1, L-2, …, -(L-1): even channels sin(p·w_i), odd cos(p·w_i),
    w_i = exp(-(2i)·ln(10000)/d) (EspnetRelPositionalEncoding, spec §3.2)."""
    n = length_like.shape[1]
    pos = torch.arange(n - 1, -n, -1, device=length_like.device).to(torch.float32)  # L-1 … -(L-1)
    sin, cos = sin_cos(pos[:, None] * div[None, :])
    return torch.stack([sin, cos], dim=-1).reshape(2 * n - 1, 2 * div.shape[0])


def rel_shift_index(length_like: torch.Tensor) -> torch.Tensor:
    """idx[i, j] = (L-1) - i + j: the column of the [L, 2L-1] position scores that holds relative
    position i - j — what the Transformer-XL pad/reshape shift selects (spec §3.2), as a gather index."""
    n = length_like.shape[1]
    ar = torch.arange(n, device=length_like.device)
    return (n - 1) - ar[:, None] + ar[None, :]


class RelPositionMultiHeadedAttention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.h, self.d_k = heads, d_model // heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def forward(self, x, pos_emb, keep, q_scale):
        """x [B, L, d]; pos_emb [2L-1, d]; keep bool [B, 1, 1, L] (valid keys); q_scale: ERG factor on linear_q."""
        b, n, _ = x.shape
        q = (self.linear_q(x) * q_scale).reshape(b, n, self.h, self.d_k)           # [B,L,H,dk]
        k = self.linear_k(x).reshape(b, n, self.h, self.d_k).transpose(1, 2)       # [B,H,L,dk]
        v = self.linear_v(x).reshape(b, n, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).reshape(-1, self.h, self.d_k).transpose(0, 1)  # [H,2L-1,dk]
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        ac = torch.matmul(q_u, k.transpose(-1, -2))                                 # [B,H,L,L]
        bd = torch.matmul(q_v, p.transpose(-1, -2))                                 # [B,H,L,2L-1]
        idx = rel_shift_index(x)[None, None].expand(b, self.h, n, n)
        bd = torch.gather(bd, -1, idx)
        scores = (ac + bd) / math.sqrt(self.d_k)
        # masked keys -> -inf before softmax and probabilities re-zeroed after it: an all-masked row gives
        # zeros. finfo.min instead of -inf gives the same values and no NaN in the intermediate.
        scores = torch.where(keep, scores, torch.full((), NEG, dtype=scores.dtype))
        probs = torch.where(keep, torch.softmax(scores, dim=-1), torch.zeros((), dtype=scores.dtype))
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, n, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, units: int):
        super().__init__()
        self.w_1 = nn.Linear(d_model, units)
        self.w_2 = nn.Linear(units, d_model)

    def forward(self, x):
        return self.w_2(F.silu(self.w_1(x)))


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, units: int):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(d_model, heads)
        self.feed_forward = PositionwiseFeedForward(d_model, units)
        self.norm_mha = nn.LayerNorm(d_model, eps=LN_EPS)
        self.norm_ff = nn.LayerNorm(d_model, eps=LN_EPS)

    def forward(self, x, pos_emb, keep, q_scale):
        x = x + self.self_attn(self.norm_mha(x), pos_emb, keep, q_scale)
        return x + self.feed_forward(self.norm_ff(x))


class _Embed(nn.Module):
    def __init__(self, d_in: int, d_model: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(d_in, d_model), nn.LayerNorm(d_model, eps=LN_EPS))


class ConformerEncoder(nn.Module):
    def __init__(self, d_in: int, d_model: int, heads: int, units: int, blocks: int):
        super().__init__()
        self.d_model = d_model
        self.embed = _Embed(d_in, d_model)
        self.encoders = nn.ModuleList([ConformerBlock(d_model, heads, units) for _ in range(blocks)])
        self.after_norm = nn.LayerNorm(d_model, eps=LN_EPS)
        self.register_buffer("pos_div", rel_pos_div(d_model), persistent=False)

    def forward(self, x, mask, q_scale):
        """x [B, L, d_in]; mask [B, L] (1 = valid); q_scale [blocks] (ERG, 1.0 = off) -> [B, L, d]."""
        x = self.embed.out(x) * math.sqrt(self.d_model)
        pos_emb = rel_pos_table(x, self.pos_div)
        keep = (mask != 0)[:, None, None, :]
        for i, block in enumerate(self.encoders):
            x = block(x, pos_emb, keep, q_scale[i])
        return self.after_norm(x)
