"""Export-first building blocks shared by every ACE-Step transformer stack (spec §1.5, §1.6, §3.4, §8).

Everything is written with explicit tensors: masks are additive [B or 1, 1, Lq, Lk] tensors holding 0 or
finfo(float32).min (never -inf), RoPE tables are computed from positions in the graph, and no Python
branch depends on tensor values, so the modules trace/export with dynamic sequence lengths.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import AceStepConfig

NEG = torch.finfo(torch.float32).min


class RMSNorm(nn.Module):
    """Qwen3 RMSNorm: variance in fp32, normalise, cast back, THEN multiply by the weight (spec §8.13)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_tables(length_like: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [L, head_dim] for positions 0..L-1 (L = length_like.shape[1]), NeoX layout (freqs duplicated).

    Computed in fp32 like transformers' default RoPE: inv_freq = theta^(-2i/d), angle = pos * inv_freq.
    """
    n = length_like.shape[1]
    pos = torch.arange(n, device=length_like.device).to(torch.float32)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim))
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, L, D]; cos/sin [L, D]."""
    return x * cos + rotate_half(x) * sin


def band_keep(lq_like: torch.Tensor, window: int) -> torch.Tensor:
    """Boolean [L, L] keep-matrix of the bidirectional band |i - j| <= window (SDPA/eager semantics)."""
    idx = torch.arange(lq_like.shape[1], device=lq_like.device)
    return (idx[:, None] - idx[None, :]).abs() <= window


def additive_mask(keep: torch.Tensor) -> torch.Tensor:
    """0 where keep, finfo(float32).min elsewhere (spec §3.4)."""
    zero = torch.zeros((), dtype=torch.float32, device=keep.device)
    neg = torch.full((), NEG, dtype=torch.float32, device=keep.device)
    return torch.where(keep, zero, neg)


def encoder_masks(x: torch.Tensor, cfg: AceStepConfig, key_padding: Optional[torch.Tensor]
                  ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(full_mask, sliding_mask) for a bidirectional encoder stack, like the official eager path.

    key_padding: [B, L] (1 = valid key) or None. Masks are combined as booleans, then turned additive.
    When `use_sliding_window` is false the official code passes NO mask at all to sliding layers.
    """
    full = None
    pad = None
    if key_padding is not None:
        pad = (key_padding != 0)[:, None, None, :]  # [B,1,1,L]
        full = additive_mask(pad)
    sliding = None
    if cfg.use_sliding_window:
        keep = band_keep(x, cfg.sliding_window)[None, None]  # [1,1,L,L]
        if pad is not None:
            keep = keep & pad
        sliding = additive_mask(keep)
    return full, sliding


_FUSED_EXPORT = False


@contextlib.contextmanager
def fused_attention_export():
    """While active, unmasked attention is traced as ONNX Runtime's `com.microsoft.MultiHeadAttention`
    (3-D query/key/value, no bias: ORT's CPU kernel then runs flash attention, O(S) memory instead of
    the [B, heads, S, L] scores). Eager torch keeps the explicit path, so torch-vs-ORT tests compare the two."""
    global _FUSED_EXPORT
    previous, _FUSED_EXPORT = _FUSED_EXPORT, True
    try:
        yield
    finally:
        _FUSED_EXPORT = previous


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v as one MultiHeadAttention node; q [B, H, S, D], k/v [B, H, L, D] -> [B, H, S, D]."""
    b, h, s, d = q.shape
    l = k.shape[2]
    q3 = q.transpose(1, 2).reshape(b, s, h * d)
    k3 = k.transpose(1, 2).reshape(b, l, h * d)
    v3 = v.transpose(1, 2).reshape(b, l, h * d)
    y = torch.onnx.ops.symbolic("com.microsoft::MultiHeadAttention", [q3, k3, v3],
                                {"num_heads": h, "scale": float(scale)}, dtype=q.dtype, shape=(b, s, h * d), version=1)
    return y.reshape(b, s, h, d).transpose(1, 2)


def band_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float) -> torch.Tensor:
    """Attention restricted to the band |i − j| <= window, block by block: queries b·w .. b·w + w − 1
    (w = window) can only reach keys b·w − w .. b·w + 2w − 1, so each block attends to those 3w keys.
    The same result as the full attention with the additive band mask (its masked weights are exactly 0),
    in O(S·3w) memory and time instead of O(S²). q/k/v [B, H, S, D] -> [B, H, S, D]."""
    b, h, s, d = q.shape
    w = window
    nb = (s + w - 1) // w
    pad = nb * w - s
    qb = F.pad(q, (0, 0, 0, pad)).reshape(b, h, nb, w, d)
    kp = F.pad(k, (0, 0, w, w + pad))  # padded row r is key r − w
    vp = F.pad(v, (0, 0, w, w + pad))
    start = torch.arange(nb, device=q.device) * w
    cols = torch.arange(3 * w, device=q.device)
    rows = (start[:, None] + cols[None, :]).reshape(-1)  # [nb·3w]
    kb = kp.index_select(2, rows).reshape(b, h, nb, 3 * w, d)
    vb = vp.index_select(2, rows).reshape(b, h, nb, 3 * w, d)
    scores = torch.matmul(qb, kb.transpose(-1, -2)) * scale  # [B, H, nb, w, 3w]
    i = start[:, None, None] + torch.arange(w, device=q.device)[None, :, None]
    j = start[:, None, None] + cols[None, None, :] - w
    keep = ((i - j).abs() <= w) & (j >= 0) & (j < s)
    probs = torch.softmax((scores + additive_mask(keep)).float(), dim=-1).to(q.dtype)
    out = torch.matmul(probs, vb).reshape(b, h, nb * w, d)
    return out.index_select(2, torch.arange(s, device=q.device))


class Attention(nn.Module):
    """Qwen3-style attention: q/k RMSNorm per head BEFORE RoPE, GQA (query head h -> kv head h // group)."""

    def __init__(self, cfg: AceStepConfig, cross: bool = False):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        self.group = self.n_heads // self.n_kv
        self.cross = cross
        self.q_proj = nn.Linear(h, self.n_heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * d, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * d, bias=False)
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.scale = d ** -0.5

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, l, _ = x.shape
        return x.reshape(b, l, n, self.head_dim).transpose(1, 2)  # [B, n, L, D]

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        # [B, kv, L, D] -> [B, kv*group, L, D] with head h reading kv head h // group
        if self.group == 1:
            return x
        b, kv, l, d = x.shape
        return x[:, :, None].expand(b, kv, self.group, l, d).reshape(b, kv * self.group, l, d)

    def project_kv(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k (k_norm applied, no RoPE) and v, [B, kv_heads, L, D] each: what cross-attention caches."""
        return self.k_norm(self._heads(self.k_proj(src), self.n_kv)), self._heads(self.v_proj(src), self.n_kv)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                context: Optional[torch.Tensor] = None,
                kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                band: Optional[int] = None) -> torch.Tensor:
        """Self-attention over x, or cross-attention over `context` — or over its precomputed
        `project_kv(context)` given as `kv`. `band`: the only mask is |i − j| <= band (computed
        blockwise, see `band_attention`; `mask` must then be None)."""
        q = self.q_norm(self._heads(self.q_proj(x), self.n_heads))
        if kv is not None:
            k, v = kv
        else:
            k, v = self.project_kv(context if self.cross else x)
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        k = self._repeat_kv(k)
        v = self._repeat_kv(v)
        if band is not None:
            if mask is not None:
                raise ValueError("band attention takes no other mask")
            out = band_attention(q, k, v, band, self.scale)
        elif mask is None and _FUSED_EXPORT:
            out = fused_attention(q, k, v, self.scale)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            if mask is not None:
                scores = scores + mask
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            out = torch.matmul(probs, v)  # [B, H, L, D]
        b, _, l, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, l, self.n_heads * self.head_dim))


class EncoderLayer(nn.Module):
    """`AceStepEncoderLayer`: pre-norm bidirectional self-attention + SwiGLU."""

    def __init__(self, cfg: AceStepConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, rope, mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), mask=mask, rope=rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class EncoderStack(nn.Module):
    """embed -> layers (own index picks the layer type) -> norm; RoPE positions restart at 0."""

    def __init__(self, cfg: AceStepConfig, n_layers: int):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([EncoderLayer(cfg, i) for i in range(n_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def run_layers(self, x: torch.Tensor, key_padding: Optional[torch.Tensor] = None,
                   limit_depth: bool = True) -> torch.Tensor:
        cfg = self.cfg
        rope = rope_tables(x, cfg.head_dim, cfg.rope_theta)
        full, sliding = encoder_masks(x, cfg, key_padding)
        depth = cfg.encoder_depth(len(self.layers)) if limit_depth else len(self.layers)
        for layer in list(self.layers)[:depth]:
            is_sliding_type = cfg.layer_types[layer.layer_idx] == "sliding_attention"
            x = layer(x, rope, sliding if is_sliding_type else full)
        return self.norm(x)
