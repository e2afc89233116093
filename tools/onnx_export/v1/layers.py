"""Building blocks of the v1 transformer (spec §3.3), written from the fact sheet for export.

No Python branch depends on tensor values; masks and RoPE tables are computed in the graph from the
input shapes, so every module exports with dynamic batch and lengths.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NEG = torch.finfo(torch.float32).min
LINEAR_ATTN_EPS = 1e-15


# 2π split for Cody-Waite reduction: k·C1 and k·C2 are exact in fp32 for |k| < 4096 (C1 has 8, C2 12
# significant bits), so arg − 2πk keeps the accuracy of the fp32 argument itself.
_TWO_PI = (6.28125, 0.0019354820251464844, -1.7484555314695172e-07)


def sin_cos(arg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sin/cos of large fp32 arguments (timesteps up to 1000 rad, positions up to thousands), reduced to
    [-π, π] first: ONNX Runtime's Sin/Cos lose ~1e-4 absolute at |x| ~ 1000, torch's do not."""
    k = torch.round(arg * (1.0 / (2 * math.pi)))
    r = ((arg - k * _TWO_PI[0]) - k * _TWO_PI[1]) - k * _TWO_PI[2]
    return torch.sin(r), torch.cos(r)


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """diffusers RMSNorm without affine: statistics in fp32 (spec §3.3)."""
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """inv_freq_j = theta^(-2j/head_dim), j < head_dim/2, computed by torch in fp32 like the official code.
    Kept as a buffer: a constant folded by the exporter can differ from torch's by an ulp, which at
    position ~1000 is ~1e-4 rad."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim))


def rope_table(length_like: torch.Tensor, dim: int, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-style cos/sin [S, head_dim] for positions 0..S-1 (S = length_like.shape[dim]); the table is
    cat(freqs, freqs) (the half-split layout)."""
    n = length_like.shape[dim]
    pos = torch.arange(n, device=length_like.device).to(torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    sin, cos = sin_cos(emb)
    return cos, sin


def apply_rope_v1(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The v1 quirk (spec §3.3, §12.1): x read as pairs (x0,x1),(x2,x3)…, rot = (-x1, x0, -x3, x2, …),
    out = x·cos + rot·sin with the *half-split* tables — element 2i uses angle θ_{2i mod d/2}.
    x: [B, H, S, D]; cos/sin: [S, D]. Computed in fp32."""
    dtype = x.dtype
    xf = x.float()
    pairs = xf.reshape(*xf.shape[:-1], xf.shape[-1] // 2, 2)
    rot = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).reshape(xf.shape)
    return (xf * cos + rot * sin).to(dtype)


class LinearSelfAttention(nn.Module):
    """ReLU linear attention with RoPE (CustomLiteLAProcessor2_0, spec §3.3): no softmax, no 1/sqrt(d)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        # A buffer, not a Python float: onnxscript's optimizer drops `x + 1e-15` written as a literal
        # (treats it as adding zero), which turns 0/0 on masked frames into NaN.
        self.register_buffer("eps", torch.tensor([LINEAR_ATTN_EPS]), persistent=False)

    def forward(self, x, frame_mask, rope, q_scale):
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731 [B,H,T,d]
        q = split(self.to_q(x) * q_scale)
        k = split(self.to_k(x))
        v = split(self.to_v(x))
        q = apply_rope_v1(q, *rope)
        k = apply_rope_v1(k, *rope)
        m = frame_mask[:, None, :, None].to(x.dtype)  # [B,1,T,1]
        q, k, v = F.relu(q * m).float(), F.relu(k * m).float(), (v * m).float()
        # Σ_s v_s φ(k_s)ᵀ with a ones row appended to v: its product gives the normaliser Σ_s φ(k_s)ᵀ
        v_pad = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)           # [B,H,T,d+1]
        vk = torch.matmul(v_pad.transpose(-1, -2), k)                         # [B,H,d+1,d]
        out = torch.matmul(vk, q.transpose(-1, -2))                           # [B,H,d+1,T]
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)             # [B,H,d,T]
        out = out.permute(0, 3, 1, 2).reshape(b, t, self.heads * self.head_dim).to(x.dtype)
        return self.to_out[0](out)


class CrossAttention(nn.Module):
    """Softmax cross-attention with RoPE on q (latent positions) and k (encoder positions), spec §3.3.
    The add_* projections exist in the checkpoint but are never used at inference."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            setattr(self, name, nn.Linear(dim, dim))
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x, enc, additive_mask, rope_q, rope_k, q_scale):
        b, t, _ = x.shape
        s = enc.shape[1]
        q = (self.to_q(x) * q_scale).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(enc).reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(enc).reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        q = apply_rope_v1(q, *rope_q)
        k = apply_rope_v1(k, *rope_k)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim)) + additive_mask
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class _Conv(nn.Module):
    """Holds a Conv1d under `.conv` (official key layout `ff.<name>.conv.*`)."""

    def __init__(self, cin, cout, k, groups=1, bias=True):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, padding=k // 2, groups=groups, bias=bias)

    def forward(self, x):
        return self.conv(x)


class GLUMBConv(nn.Module):
    """1×1 conv → SiLU → depthwise k3 conv → value·SiLU(gate) → 1×1 conv; along time (spec §3.3)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.inverted_conv = _Conv(dim, 2 * hidden, 1)
        self.depth_conv = _Conv(2 * hidden, 2 * hidden, 3, groups=2 * hidden)
        self.point_conv = _Conv(hidden, dim, 1, bias=False)

    def forward(self, x):  # [B, T, D]
        h = F.silu(self.inverted_conv(x.transpose(1, 2)))
        h = self.depth_conv(h)
        value, gate = h.chunk(2, dim=1)
        return self.point_conv(value * F.silu(gate)).transpose(1, 2)


class LinearTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, ff_hidden: int):
        super().__init__()
        self.scale_shift_table = nn.Parameter(torch.zeros(6, dim))
        self.attn = LinearSelfAttention(dim, heads, head_dim)
        self.cross_attn = CrossAttention(dim, heads, head_dim)
        self.ff = GLUMBConv(dim, ff_hidden)

    def forward(self, x, temb, frame_mask, enc, cross_mask, rope_x, rope_enc, q_scale):
        b = x.shape[0]
        mod = self.scale_shift_table[None] + temb.reshape(b, 6, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        h = rms_norm(x) * (1 + scale_msa) + shift_msa
        x = x + gate_msa * self.attn(h, frame_mask, rope_x, q_scale)
        # cross-attention on the un-normalised stream, no gate, no modulation (spec §12.3)
        x = x + self.cross_attn(x, enc, cross_mask, rope_x, rope_enc, q_scale)
        h = rms_norm(x) * (1 + scale_mlp) + shift_mlp
        return x + gate_mlp * self.ff(h)


def timestep_freqs(dim: int = 256) -> torch.Tensor:
    """f_i = exp(-ln(10000)·i/half), i < half (diffusers get_timestep_embedding, shift 0), by torch in fp32."""
    half = dim // 2
    return torch.exp(-math.log(10000.0) * torch.arange(0, half, dtype=torch.float32) / half)


def timestep_sinusoid(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """diffusers Timesteps(256, flip_sin_to_cos=True, shift=0): [cos(t·f), sin(t·f)]."""
    arg = t.float()[:, None] * freqs[None, :]
    sin, cos = sin_cos(arg)
    return torch.cat([cos, sin], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """Conv2d(8 → 2048, kernel = patch) → GroupNorm(32, eps 1e-6) → Conv2d(2048 → D, 1×1) → tokens [B, T, D]."""

    def __init__(self, cin: int, mid: int, dim: int, patch: tuple[int, int]):
        super().__init__()
        self.early_conv_layers = nn.Sequential(
            nn.Conv2d(cin, mid, kernel_size=patch, stride=patch),
            nn.GroupNorm(32, mid, eps=1e-6, affine=True),
            nn.Conv2d(mid, dim, kernel_size=1),
        )

    def forward(self, x):  # [B, 8, 16, T]
        return self.early_conv_layers(x).flatten(2).transpose(1, 2)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_features: int):
        super().__init__()
        self.scale_shift_table = nn.Parameter(torch.zeros(2, dim))
        self.linear = nn.Linear(dim, out_features)

    def forward(self, x, embedded_timestep):
        # modulated by embedded_timestep (D), not temb (6D) — spec §12.9
        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        return self.linear(rms_norm(x) * (1 + scale) + shift)
