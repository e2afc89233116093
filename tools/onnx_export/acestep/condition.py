"""Condition encoder (spec §1.5): text projector, lyric encoder, timbre encoder, packing.

The official code unpacks timbre clips with bincount/argsort and packs with a stable argsort; here the
same permutations are computed with one-hot comparisons, cumsum ranks and scatter so the graph exports
to plain ONNX ops (spec §8.24). The number of timbre slots per item (max clips per item) is data-
dependent in the official code, so it is too here (obtained through `nonzero`, i.e. ONNX NonZero).
"""
from __future__ import annotations

import torch
from torch import nn

from .config import AceStepConfig
from .layers import EncoderStack


def pack_sequences(h1: torch.Tensor, h2: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """cat along time, then move valid rows (mask != 0) to the front keeping their order, padding after.

    Equivalent to the official stable descending argsort of the mask (for 0/1 masks). Returns the packed
    states and an int64 mask `arange(L) < n_valid`.
    """
    h = torch.cat([h1, h2], dim=1)
    valid = torch.cat([m1 != 0, m2 != 0], dim=1)  # [B, L] bool
    vi = valid.to(torch.int64)
    n_valid = vi.sum(dim=1, keepdim=True)  # [B, 1]
    rank_valid = torch.cumsum(vi, dim=1) - 1
    rank_pad = torch.cumsum(1 - vi, dim=1) - 1 + n_valid
    dest = torch.where(valid, rank_valid, rank_pad)  # destination row of each source row
    out = torch.zeros_like(h).scatter(1, dest.unsqueeze(-1).expand_as(h), h)
    pos = torch.arange(h.shape[1], device=h.device)
    new_mask = (pos[None, :] < n_valid).to(torch.int64)
    return out, new_mask


def unpack_timbre(emb: torch.Tensor, order: torch.Tensor, batch_like: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter per-clip vectors emb [N, D] to [B, M, D] (M = max clips per item) with an int64 mask.

    Clip n goes to item order[n], slot = number of earlier clips of that item (official order).
    B is taken from batch_like.shape[0]. One-hot matmul, so the copy is exact.
    """
    n, d = emb.shape
    b = batch_like.shape[0]
    items = torch.arange(b, device=emb.device)
    onehot_b = (order[:, None] == items[None, :]).to(torch.int64)  # [N, B]
    slot = (torch.cumsum(onehot_b, dim=0) * onehot_b).sum(dim=1) - 1  # [N]
    max_count = onehot_b.sum(dim=0).max()
    slots = torch.nonzero(torch.arange(n, device=emb.device) < max_count)[:, 0]  # [M], data-dependent
    onehot_s = slot[:, None] == slots[None, :]  # [N, M]
    sel = (onehot_b.to(torch.bool)[:, :, None] & onehot_s[:, None, :])  # [N, B, M]
    m = slots.shape[0]
    flat = sel.reshape(n, b * m).to(emb.dtype)
    unpacked = torch.matmul(flat.transpose(0, 1), emb).reshape(b, m, d)
    mask = sel.any(dim=0).to(torch.int64)
    return unpacked, mask


class LyricEncoder(EncoderStack):
    def __init__(self, cfg: AceStepConfig):
        super().__init__(cfg, cfg.num_lyric_encoder_hidden_layers)
        self.embed_tokens = nn.Linear(cfg.text_hidden_dim, cfg.hidden_size)

    def forward(self, lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor) -> torch.Tensor:
        return self.run_layers(self.embed_tokens(lyric_hidden_states), key_padding=lyric_attention_mask)


class TimbreEncoder(EncoderStack):
    def __init__(self, cfg: AceStepConfig):
        super().__init__(cfg, cfg.num_timbre_encoder_hidden_layers)
        self.embed_tokens = nn.Linear(cfg.timbre_hidden_dim, cfg.hidden_size)
        # present in the checkpoint, unused by the 2B models (no CLS prepend, spec §1.5)
        self.special_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))

    def encode_clips(self, packed: torch.Tensor) -> torch.Tensor:
        """[N, T_ref, 64] -> [N, H]: no padding mask, band on sliding layers, take frame 0."""
        return self.run_layers(self.embed_tokens(packed), key_padding=None)[:, 0, :]

    def forward(self, packed: torch.Tensor, order: torch.Tensor, batch_like: torch.Tensor):
        return unpack_timbre(self.encode_clips(packed), order, batch_like)


class ConditionEncoder(nn.Module):
    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        self.text_projector = nn.Linear(cfg.text_hidden_dim, cfg.hidden_size, bias=False)
        self.lyric_encoder = LyricEncoder(cfg)
        self.timbre_encoder = TimbreEncoder(cfg)

    def forward(self, text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor,
                refer_audio_packed: torch.Tensor, refer_audio_order_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.text_projector(text_hidden_states)
        lyric = self.lyric_encoder(lyric_hidden_states, lyric_attention_mask)
        timbre, timbre_mask = self.timbre_encoder(refer_audio_packed, refer_audio_order_mask, text)
        enc, mask = pack_sequences(lyric, timbre, lyric_attention_mask, timbre_mask)
        return pack_sequences(enc, text, mask, text_attention_mask)
