"""The v1 transformer (`ace_step_transformer/`, spec §3): `encode` (conditions → encoder states) and
`decode` (one velocity evaluation), with the official state-dict key names, and its strict loader."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..common import CheckpointError, check_state_dict, require_dir, require_file
from .config import DIFFUSERS_WEIGHTS, V1Config
from .conformer import ConformerEncoder
from .layers import (NEG, FinalLayer, LinearTransformerBlock, PatchEmbed, TimestepEmbedding, rope_inv_freq, rope_table,
                     timestep_freqs, timestep_sinusoid)


class V1Transformer(nn.Module):
    def __init__(self, cfg: V1Config):
        super().__init__()
        self.config = cfg
        d = cfg.inner_dim
        le = cfg.lyric_encoder
        self.transformer_blocks = nn.ModuleList([
            LinearTransformerBlock(d, cfg.num_attention_heads, cfg.attention_head_dim, cfg.ff_hidden)
            for _ in range(cfg.num_layers)])
        self.timestep_embedder = TimestepEmbedding(256, d)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.speaker_embedder = nn.Linear(cfg.speaker_embedding_dim, d)
        self.genre_embedder = nn.Linear(cfg.text_embedding_dim, d)
        self.lyric_embs = nn.Embedding(cfg.lyric_encoder_vocab_size, cfg.lyric_hidden_size)
        self.lyric_encoder = ConformerEncoder(cfg.lyric_hidden_size, le["output_size"], le["attention_heads"],
                                              le["linear_units"], le["num_blocks"])
        self.lyric_proj = nn.Linear(cfg.lyric_hidden_size, d)
        self.proj_in = PatchEmbed(cfg.in_channels, cfg.patch_channels, d, cfg.patch_size)
        self.final_layer = FinalLayer(d, cfg.patch_size[0] * cfg.patch_size[1] * cfg.out_channels)
        # SSL training heads: in the checkpoint, unused at inference (spec §3.3)
        self.projectors = nn.ModuleList([
            nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, 2 * d), nn.SiLU(), nn.Linear(2 * d, ssl))
            for ssl in cfg.ssl_latent_dims])
        # fp32 constants computed by torch, as the official code does (not in the checkpoint)
        self.register_buffer("rope_inv_freq", rope_inv_freq(cfg.attention_head_dim, cfg.rope_theta), persistent=False)
        self.register_buffer("timestep_freqs", timestep_freqs(256), persistent=False)

    def encode(self, text_hidden_states, text_attention_mask, speaker_embeds, lyric_token_ids,
               lyric_attention_mask, lyric_q_scale):
        """→ (encoder_hidden_states [B, 1+Lt+Ll, D], encoder_attention_mask int64 [B, 1+Lt+Ll]), spec §3.1."""
        speaker = self.speaker_embedder(speaker_embeds)[:, None]
        text = self.genre_embedder(text_hidden_states)
        lyric = self.lyric_proj(self.lyric_encoder(self.lyric_embs(lyric_token_ids), lyric_attention_mask,
                                                   lyric_q_scale))
        enc = torch.cat([speaker, text, lyric], dim=1)
        ones = torch.ones_like(text_attention_mask[:, :1])
        mask = torch.cat([ones, text_attention_mask, lyric_attention_mask.to(text_attention_mask.dtype)], dim=1)
        return enc, mask

    def decode(self, hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask, timestep,
               q_scale):
        """One model evaluation (spec §3.3) → velocity [B, C, H, T]. q_scale [num_layers]: ERG factor on
        attn.to_q and cross_attn.to_q of each block (1.0 = off)."""
        cfg = self.config
        b, _, _, t = hidden_states.shape
        embedded_timestep = self.timestep_embedder(timestep_sinusoid(timestep, self.timestep_freqs).to(hidden_states.dtype))
        temb = self.t_block(embedded_timestep)
        x = self.proj_in(hidden_states)
        rope_x = rope_table(x, 1, self.rope_inv_freq)
        rope_enc = rope_table(encoder_hidden_states, 1, self.rope_inv_freq)
        keep = (attention_mask != 0)[:, :, None] & (encoder_attention_mask != 0)[:, None, :]   # [B,T,S]
        cross_mask = torch.where(keep, torch.zeros((), dtype=x.dtype), torch.full((), NEG, dtype=x.dtype))[:, None]
        for i, block in enumerate(self.transformer_blocks):
            x = block(x, temb, attention_mask, encoder_hidden_states, cross_mask, rope_x, rope_enc, q_scale[i])
        out = self.final_layer(x, embedded_timestep)                       # [B, T, ph·pw·C]
        ph, pw = cfg.patch_size
        c = cfg.out_channels
        # unpatchify: [B,T,128] -> [B,1,T,ph,pw,C] -> [B,C,1,ph,T,pw] -> [B,C,ph,T·pw]; out index = C·h + c
        out = out.reshape(b, 1, t, ph, pw, c).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, c, ph, t * pw)


def build_transformer(cfg: V1Config, device: str | torch.device = "cpu") -> V1Transformer:
    with torch.device(device):
        return V1Transformer(cfg)


def expected_state_shapes(cfg: V1Config) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_transformer(cfg, "meta").state_dict().items()}


# Parameters of the official checkpoint the inference graphs never read (spec §3.3): the cross-attention's
# add_* projections (4·D² per block) and the SSL training heads. 0.72 B of the 3.31 B parameters.
UNUSED_AT_INFERENCE = ("cross_attn.add_q_proj.", "cross_attn.add_k_proj.", "cross_attn.add_v_proj.",
                       "cross_attn.to_add_out.")
UNUSED_PREFIXES = ("projectors.",)


def is_unused_at_inference(key: str) -> bool:
    return key.startswith(UNUSED_PREFIXES) or any(part in key for part in UNUSED_AT_INFERENCE)


@contextmanager
def _skip_param_init():
    """Build modules without running torch's random initialisers: parameters stay torch.empty (pages not
    touched, so not resident) until the checkpoint's values are copied in. Computed buffers (RoPE and
    sinusoid tables) are unaffected."""
    names = ("kaiming_uniform_", "uniform_", "normal_", "ones_", "zeros_", "trunc_normal_", "xavier_uniform_",
             "constant_")
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def load_transformer(ckpt_dir: Path, *, inference_only: bool = False) -> V1Transformer:
    """Strictly load `ace_step_transformer/` (config.json + diffusion_pytorch_model.safetensors) as fp32.

    Tensors are read and widened one at a time straight into the model (peak: the fp32 model plus one
    tensor; the full-size model is 13.2 GB in fp32). `inference_only`: the keys nothing at inference reads
    (UNUSED_AT_INFERENCE) are still checked for name and shape but not read, and their modules are
    removed — the exporter's case (the full-size model then holds 2.59 B parameters, 10.4 GB)."""
    from safetensors import safe_open

    ckpt_dir = require_dir(Path(ckpt_dir), "v1 transformer checkpoint directory")
    cfg = V1Config.from_dir(ckpt_dir)
    weights = require_file(ckpt_dir / DIFFUSERS_WEIGHTS, "v1 transformer weights")
    with _skip_param_init():
        model = build_transformer(cfg)
    target = model.state_dict()
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as fh:
            header = {k: torch.empty(fh.get_slice(k).get_shape(), device="meta") for k in fh.keys()}
            check_state_dict(model, header, str(weights))
            bad = []
            with torch.no_grad():
                for key in header:
                    if inference_only and is_unused_at_inference(key):
                        continue
                    value = fh.get_tensor(key)
                    if value.is_floating_point() and not torch.isfinite(value).all():
                        bad.append(key)
                    target[key].copy_(value)
                    del value
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises several error types for corrupt files
        raise CheckpointError(f"cannot read v1 transformer weights {weights}: {exc}") from exc
    if bad:
        raise ValueError(f"{weights}: non-finite values in {', '.join(sorted(bad)[:20])}")
    del target
    if inference_only:
        model.projectors = nn.ModuleList()
        for block in model.transformer_blocks:
            for name in ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
                delattr(block.cross_attn, name)
    return model.float().eval()
