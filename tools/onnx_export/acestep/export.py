"""ONNX export of the ACE-Step DiT-side graphs and the host configuration (I/O in docs/io_contract_acestep.md).

Exporter: torch.onnx dynamo exporter (torch 2.9.1 + onnxscript), opset 18, fp32, dynamic batch / length axes.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .layers import fused_attention_export
from .model import AceStepModel

OPSET = 18
GRAPH_FILES = {
    "condition_encoder": "condition_encoder.onnx",
    "dit_cross_kv": "dit_cross_kv.onnx",
    "dit_decoder": "dit_decoder.onnx",
    "audio_detokenizer": "audio_detokenizer.onnx",
    "audio_tokenizer": "audio_tokenizer.onnx",
}
NULL_CONDITION_FILE = "null_condition_emb.npy"
# Graphs whose unmasked attention is exported as com.microsoft.MultiHeadAttention (flash attention in ORT's
# CPU kernel: memory O(S) instead of the [B, heads, S, S] scores that make long songs not fit).
FUSED_ATTENTION_GRAPHS = ("dit_decoder",)
# graphs whose fp32 weights exceed this many bytes keep them in a sidecar `<name>.onnx.data`
# (protobuf caps a single file at 2 GiB; with the 2B checkpoints: dit_decoder and condition_encoder)
EXTERNAL_DATA_BYTES = 1 << 30


class ConditionGraph(nn.Module):
    """Condition encoder + context latents (`cat([src_latents, chunk_masks], -1)`)."""

    def __init__(self, model: AceStepModel):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, text_hidden_states, text_attention_mask, lyric_hidden_states, lyric_attention_mask,
                refer_audio_packed, refer_audio_order_mask, src_latents, chunk_masks):
        enc, mask = self.encoder(text_hidden_states, text_attention_mask, lyric_hidden_states,
                                 lyric_attention_mask, refer_audio_packed, refer_audio_order_mask)
        context = torch.cat([src_latents, chunk_masks], dim=-1)
        return enc, mask, context


class CrossKVGraph(nn.Module):
    """encoder_hidden_states -> every DiT layer's cross-attention k/v (run once per generation)."""

    def __init__(self, model: AceStepModel):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, encoder_hidden_states):
        return self.decoder.cross_kv(encoder_hidden_states)


class DiTGraph(nn.Module):
    """One DiT step; the encoder side comes in as `cross_kv` (the output of CrossKVGraph)."""

    def __init__(self, model: AceStepModel):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, hidden_states, timestep, timestep_r, context_latents, cross_kv):
        return self.decoder.forward_cached(hidden_states, timestep, timestep_r, context_latents, cross_kv)


class DetokenizerGraph(nn.Module):
    """codes int64 [B, T5] -> FSQ values -> project_out -> detokenizer -> hints [B, 5*T5, 64]."""

    def __init__(self, model: AceStepModel):
        super().__init__()
        self.quantizer = model.tokenizer.quantizer
        self.detokenizer = model.detokenizer

    def forward(self, audio_codes):
        return self.detokenizer(self.quantizer.decode(audio_codes))


class TokenizerGraph(nn.Module):
    """latents [B, T, 64], T a multiple of pool_window_size -> (codes int64 [B, T/5], quantized [B, T/5, H])."""

    def __init__(self, model: AceStepModel):
        super().__init__()
        self.tokenizer = model.tokenizer

    def forward(self, latents):
        quantized, codes = self.tokenizer(latents)
        return codes, quantized


def example_inputs(model: AceStepModel, b: int = 2, t: int = 251, lt: int = 7, ll: int = 9, t5: int = 13,
                   n_ref: int | None = None, seed: int = 0) -> dict[str, tuple]:
    """Deterministic example inputs per graph (also used by the parity tests)."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    c = cfg.audio_acoustic_hidden_dim
    n_ref = b if n_ref is None else n_ref
    tm = torch.ones(b, lt, dtype=torch.int64)
    lm = torch.ones(b, ll, dtype=torch.int64)
    if b > 1:
        tm[-1, lt // 2:] = 0
        lm[-1, ll // 3:] = 0
    order = torch.arange(n_ref, dtype=torch.int64) % b
    ref = torch.randn(n_ref, cfg.timbre_fix_frame, c, generator=g)
    cond = (torch.randn(b, lt, cfg.text_hidden_dim, generator=g), tm,
            torch.randn(b, ll, cfg.text_hidden_dim, generator=g), lm, ref, order,
            torch.randn(b, t, c, generator=g), torch.ones(b, t, c))
    tt = torch.rand(b, generator=g)
    enc = torch.randn(b, ll + 1 + lt, cfg.hidden_size, generator=g)
    with torch.no_grad():
        cross_kv = model.decoder.cross_kv(enc)
    dit = (torch.randn(b, t, c, generator=g), tt, tt.clone(), torch.randn(b, t, 2 * c, generator=g), cross_kv)
    n_codes = model.tokenizer.quantizer.codebook_size
    detok = (torch.randint(0, n_codes, (b, t5), generator=g, dtype=torch.int64),)
    tok = (torch.randn(b, t5 * cfg.pool_window_size, c, generator=g),)
    return {"condition_encoder": cond, "dit_cross_kv": (enc,), "dit_decoder": dit, "audio_detokenizer": detok,
            "audio_tokenizer": tok}


IO_NAMES = {
    "condition_encoder": (
        ["text_hidden_states", "text_attention_mask", "lyric_hidden_states", "lyric_attention_mask",
         "refer_audio_packed", "refer_audio_order_mask", "src_latents", "chunk_masks"],
        ["encoder_hidden_states", "encoder_attention_mask", "context_latents"]),
    "dit_cross_kv": (["encoder_hidden_states"], ["cross_kv"]),
    "dit_decoder": (["hidden_states", "timestep", "timestep_r", "context_latents", "cross_kv"], ["velocity"]),
    "audio_detokenizer": (["audio_codes"], ["lm_hints"]),
    "audio_tokenizer": (["latents"], ["audio_codes", "quantized"]),
}


def _dynamic_shapes(name: str):
    B = torch.export.Dim("batch", min=1, max=64)
    T = torch.export.Dim("latent_frames", min=2, max=15000)
    LT = torch.export.Dim("text_len", min=2, max=4096)
    LL = torch.export.Dim("lyric_len", min=2, max=8192)
    N = torch.export.Dim("refer_clips", min=1, max=256)
    L = torch.export.Dim("encoder_len", min=2, max=16384)
    T5 = torch.export.Dim("code_frames", min=1, max=3000)
    if name == "condition_encoder":
        return ({0: B, 1: LT}, {0: B, 1: LT}, {0: B, 1: LL}, {0: B, 1: LL}, {0: N}, {0: N},
                {0: B, 1: T}, {0: B, 1: T})
    if name == "dit_decoder":
        # S = ceil(T/2) >= 2 and L >= 2 keep the exporter from specialising size-1 broadcasts
        TD = torch.export.Dim("latent_frames", min=3, max=15000)
        return ({0: B, 1: TD}, {0: B}, {0: B}, {0: B, 1: TD}, {0: B, 3: L})
    if name == "dit_cross_kv":
        return ({0: B, 1: L},)
    if name == "audio_detokenizer":
        return ({0: B, 1: T5},)
    if name == "audio_tokenizer":
        return ({0: B, 1: 5 * T5},)
    raise KeyError(name)


def _wrapper(name: str, model: AceStepModel) -> nn.Module:
    return {"condition_encoder": ConditionGraph, "dit_cross_kv": CrossKVGraph, "dit_decoder": DiTGraph,
            "audio_detokenizer": DetokenizerGraph, "audio_tokenizer": TokenizerGraph}[name](model).eval()


def export_graph(name: str, model: AceStepModel, path: Path, *, opset: int = OPSET) -> None:
    module = _wrapper(name, model)
    # T = 301: the patched length S = 151 spans two band blocks (layers.band_attention); with one block the
    # exporter would fix the block count at 1 (size-1 dimensions are specialised)
    args = example_inputs(model, t=301)[name]
    inputs, outputs = IO_NAMES[name]
    n_params = sum(p.numel() for p in module.parameters())
    with torch.no_grad(), warnings.catch_warnings():
        # "axis name X will not be used, since it shares the same shape constraints": expected, the same
        # Dim is deliberately shared by several inputs
        warnings.filterwarnings("ignore", message=r".*shares the same shape constraints.*")
        fused = fused_attention_export() if name in FUSED_ATTENTION_GRAPHS else contextlib.nullcontext()
        with fused:
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=inputs,
                                     output_names=outputs, dynamic_shapes=_dynamic_shapes(name),
                                     optimize=True, verify=False, report=False)
    prog.save(str(path), external_data=4 * n_params > EXTERNAL_DATA_BYTES)


def export_acestep_graphs(model: AceStepModel, out_dir: Path, *, opset: int = OPSET,
                          components: tuple[str, ...] | None = None) -> dict[str, str]:
    """Export condition_encoder, dit_cross_kv, dit_decoder, audio_detokenizer, audio_tokenizer; also writes
    `null_condition_emb.npy` ([1, 1, H] float32, used by base/sft CFG). Returns name -> file (relative)."""
    if opset != OPSET:
        raise ValueError(f"opset={opset}: the ACE-Step graphs are pinned to opset {OPSET}")
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    names = components or tuple(GRAPH_FILES)
    result = {}
    for name in names:
        export_graph(name, model, out / GRAPH_FILES[name], opset=opset)
        result[name] = GRAPH_FILES[name]
    np.save(out / NULL_CONDITION_FILE, model.null_condition_emb.detach().float().numpy())
    return result


def acestep_host_config(model: AceStepModel) -> dict:
    """Values the hosts and the Rust core need besides the graphs (JSON-serialisable)."""
    cfg = model.config
    levels = [int(l) for l in cfg.fsq_input_levels]
    return {
        "latent_dim": cfg.audio_acoustic_hidden_dim,
        "context_dim": 2 * cfg.audio_acoustic_hidden_dim,
        "hidden_size": cfg.hidden_size,
        "text_hidden_dim": cfg.text_hidden_dim,
        "patch_size": cfg.patch_size,
        "sliding_window": cfg.sliding_window,
        "latent_rate_hz": 25,
        "hop_length": 1920,
        "sample_rate": 48000,
        "pool_window_size": cfg.pool_window_size,
        "fsq_levels": levels,
        "fsq_codebook_size": int(torch.tensor(levels).prod().item()),
        "timbre_fix_frame": cfg.timbre_fix_frame,
        "silence_latent_frames": int(model.silence_latent.shape[1]),
        "min_latent_frames": 128,
        "is_turbo": bool(cfg.is_turbo),
        "uses_cfg": not bool(cfg.is_turbo),
        "null_condition_emb_file": NULL_CONDITION_FILE,
        "opset": OPSET,
    }


def write_host_config(model: AceStepModel, path: Path) -> None:
    Path(path).write_text(json.dumps(acestep_host_config(model), indent=2) + "\n", encoding="utf-8")
