"""ONNX export of the v1 graphs (I/O contract: docs/io_contract_v1.md) and the host configuration."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..common import DEFAULT_EXTERNAL_DATA_MIN_BYTES, DEFAULT_OPSET, export_onnx
from .config import (DCAE_SCALE, DCAE_SHIFT, ERG_DIT_LAYERS, ERG_LYRIC_LAYERS, ERG_TAU, ERG_TEXT_LAYERS,
                     MEL_FRAMES_PER_LATENT, MEL_MAX, MEL_MIN, NUM_TRAIN_TIMESTEPS, OFFICIAL_DEPTHS, OUTPUT_SAMPLE_RATE,
                     SCHEDULER_SHIFT, TEXT_MAX_LENGTH, erg_layers)
from .dcae import DcaeDecoderGraph, DcaeEncoderGraph
from .mel import LogMel
from .text_encoder import TextEncoderGraph
from .transformer import V1Transformer
from .vocoder import V1Vocoder

GRAPH_FILES = {
    "text_encoder": "text_encoder.onnx",
    "condition_encoder": "condition_encoder.onnx",
    "dit_decoder": "dit_decoder.onnx",
    "dcae_decoder": "dcae_decoder.onnx",
    "dcae_encoder": "dcae_encoder.onnx",
    "vocoder": "vocoder.onnx",
    "mel_frontend": "mel_frontend.onnx",
}

IO_NAMES = {
    "text_encoder": (["input_ids", "attention_mask", "erg_q_scale"], ["last_hidden_state"]),
    "condition_encoder": (["text_hidden_states", "text_attention_mask", "speaker_embeds", "lyric_token_ids",
                           "lyric_attention_mask", "erg_q_scale"], ["encoder_hidden_states", "encoder_attention_mask"]),
    "dit_decoder": (["hidden_states", "attention_mask", "encoder_hidden_states", "encoder_attention_mask", "timestep",
                     "erg_q_scale"], ["velocity"]),
    "dcae_decoder": (["latents"], ["mel"]),
    "dcae_encoder": (["mel"], ["latents"]),
    "vocoder": (["mel"], ["audio"]),
    "mel_frontend": (["audio"], ["mel"]),
}


class ConditionEncoderGraph(nn.Module):
    def __init__(self, model: V1Transformer):
        super().__init__()
        self.model = model

    def forward(self, text_hidden_states, text_attention_mask, speaker_embeds, lyric_token_ids, lyric_attention_mask,
                erg_q_scale):
        return self.model.encode(text_hidden_states, text_attention_mask, speaker_embeds, lyric_token_ids,
                                 lyric_attention_mask, erg_q_scale)


class DiTDecoderGraph(nn.Module):
    def __init__(self, model: V1Transformer):
        super().__init__()
        self.model = model

    def forward(self, hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask, timestep,
                erg_q_scale):
        return self.model.decode(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask,
                                 timestep, erg_q_scale)


class VocoderGraph(nn.Module):
    def __init__(self, vocoder: V1Vocoder):
        super().__init__()
        self.vocoder = vocoder

    def forward(self, mel):
        return self.vocoder(mel)


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Replace every old-style weight norm (weight_g, weight_v) by the plain weight g·v/‖v‖, in place."""
    from torch.nn.utils import remove_weight_norm

    for module in model.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            remove_weight_norm(module)
    if any(n.endswith(("weight_g", "weight_v")) for n, _ in model.named_parameters()):
        raise RuntimeError("weight norm left unfolded parameters behind")
    return model


def example_inputs(models: dict, *, b: int = 2, t: int = 13, lt: int = 6, ll: int = 9, seed: int = 0,
                   erg: bool = False, pad: bool = True) -> dict[str, tuple]:
    """Deterministic inputs per graph (export and parity tests). `pad`: the last item has padded text, lyric
    and latent frames; `erg`: ERG scales at the configured layers instead of ones."""
    g = torch.Generator().manual_seed(seed)
    te, tr = models.get("text_encoder"), models.get("transformer")
    out: dict[str, tuple] = {}

    def mask(n: int, keep: int) -> torch.Tensor:
        m = torch.ones(b, n, dtype=torch.int64)
        if pad and b > 1:
            m[-1, keep:] = 0
        return m

    text_mask, lyric_mask, frame_mask = mask(lt, max(1, lt // 2)), mask(ll, max(1, ll // 3)), mask(t, max(2, t - 3))
    if te is not None:
        n = te.config.num_layers
        scale = erg_scale(n, erg_layers(ERG_TEXT_LAYERS, OFFICIAL_DEPTHS["text"], n) if erg else [])
        ids = torch.randint(2, te.config.vocab_size, (b, lt), generator=g)
        out["text_encoder"] = (ids * text_mask, text_mask, scale)
    if tr is not None:
        cfg = tr.config
        n_lyr = cfg.lyric_encoder["num_blocks"]
        lyr_scale = erg_scale(n_lyr, erg_layers(ERG_LYRIC_LAYERS, OFFICIAL_DEPTHS["lyric"], n_lyr) if erg else [])
        ids = torch.randint(0, cfg.lyric_encoder_vocab_size, (b, ll), generator=g)
        out["condition_encoder"] = (torch.randn(b, lt, cfg.text_embedding_dim, generator=g), text_mask,
                                    torch.randn(b, cfg.speaker_embedding_dim, generator=g) * 0.1, ids * lyric_mask,
                                    lyric_mask, lyr_scale)
        s = 1 + lt + ll
        dit_scale = erg_scale(cfg.num_layers, erg_layers(ERG_DIT_LAYERS, OFFICIAL_DEPTHS["dit"], cfg.num_layers)
                              if erg else [])
        out["dit_decoder"] = (torch.randn(b, cfg.in_channels, cfg.max_height, t, generator=g), frame_mask,
                              torch.randn(b, s, cfg.inner_dim, generator=g),
                              torch.cat([torch.ones(b, 1, dtype=torch.int64), text_mask, lyric_mask], 1),
                              torch.rand(b, generator=g) * 1000, dit_scale)
    if "dcae" in models:
        out["dcae_decoder"] = (torch.randn(b, 8, 16, t, generator=g),)
        out["dcae_encoder"] = (torch.rand(b, 2, 128, 8 * t, generator=g) * 14 + MEL_MIN,)
    if "vocoder" in models:
        out["vocoder"] = (torch.rand(b, 128, t, generator=g) * 10 - 9,)
        out["mel_frontend"] = (torch.randn(b, 4096 * max(1, t // 4), generator=g) * 0.1,)
    return out


def erg_scale(n: int, layers, tau: float = ERG_TAU) -> torch.Tensor:
    s = torch.ones(n)
    for i in layers:
        s[i] = tau
    return s


def graph_modules(models: dict) -> dict[str, nn.Module]:
    """name → export wrapper. Wrapping modifies the UMT5 model (its q projections become scaled) and folds
    the vocoder's weight norm."""
    out = {}
    if "text_encoder" in models:
        out["text_encoder"] = TextEncoderGraph(models["text_encoder"]).eval()
    if "transformer" in models:
        out["condition_encoder"] = ConditionEncoderGraph(models["transformer"]).eval()
        out["dit_decoder"] = DiTDecoderGraph(models["transformer"]).eval()
    if "dcae" in models:
        out["dcae_decoder"] = DcaeDecoderGraph(models["dcae"]).eval()
        out["dcae_encoder"] = DcaeEncoderGraph(models["dcae"]).eval()
    if "vocoder" in models:
        voc = models["vocoder"]
        out["vocoder"] = VocoderGraph(fold_weight_norm(voc)).eval()
        c = voc.config
        out["mel_frontend"] = LogMel(c["sampling_rate"], c["n_fft"], c["hop_length"], c["n_mels"], float(c["f_min"]),
                                     float(c["f_max"])).eval()
    return out


DCAE_MAX_FRAMES = 8191


def _dims():
    D = torch.export.Dim
    return {"batch": D("batch", min=1, max=64), "text": D("text_length", min=2, max=4096),
            "lyric": D("lyric_length", min=2, max=8192), "frames": D("frames", min=2, max=16384),
            "enc": D("encoder_length", min=3, max=16384), "n": D("n", min=1, max=128),
            "mel": D("mel_frames", min=2, max=131072),
            "chunks": D("chunks", min=1, max=4096),
            # DCAE: diffusers picks linear attention iff 16·frames > attention_head_dim (32): frames >= 3.
            # At most 8191: torch's nearest-upsample kernel indexes with int32, and at the official widths
            # (256 channels × 128 × 8 per latent frame = 262144 values) tracing guards 262144·frames < 2^31;
            # a larger bound fails the export of the full-size DCAE (8191 frames = 760 s of audio).
            "dcae_frames": D("frames", min=3, max=DCAE_MAX_FRAMES), "mel8": D("mel_frames_8", min=3, max=DCAE_MAX_FRAMES)}


def _spec(name: str, models: dict):
    """(dynamic_shapes, output_shapes) per graph; dims as in the contract."""
    d = _dims()
    B = d["batch"]
    if name == "text_encoder":
        te = models["text_encoder"].config
        return ({"input_ids": {0: B, 1: d["text"]}, "attention_mask": {0: B, 1: d["text"]}, "erg_q_scale": {}},
                {"last_hidden_state": ["batch", "text_length", te.d_model]})
    cfg = models["transformer"].config if "transformer" in models else None
    if name == "condition_encoder":
        return ({"text_hidden_states": {0: B, 1: d["text"]}, "text_attention_mask": {0: B, 1: d["text"]},
                 "speaker_embeds": {0: B}, "lyric_token_ids": {0: B, 1: d["lyric"]},
                 "lyric_attention_mask": {0: B, 1: d["lyric"]}, "erg_q_scale": {}},
                {"encoder_hidden_states": ["batch", "encoder_length", cfg.inner_dim],
                 "encoder_attention_mask": ["batch", "encoder_length"]})
    if name == "dit_decoder":
        return ({"hidden_states": {0: B, 3: d["frames"]}, "attention_mask": {0: B, 1: d["frames"]},
                 "encoder_hidden_states": {0: B, 1: d["enc"]}, "encoder_attention_mask": {0: B, 1: d["enc"]},
                 "timestep": {0: B}, "erg_q_scale": {}},
                {"velocity": ["batch", cfg.out_channels, cfg.max_height, "frames"]})
    if name == "dcae_decoder":
        return ({"latents": {0: B, 3: d["dcae_frames"]}}, {"mel": ["batch", 2, 128, "8*frames"]})
    if name == "dcae_encoder":
        return ({"mel": {0: B, 3: 8 * d["mel8"]}}, {"latents": ["batch", 8, 16, "mel_frames_8"]})
    if name == "vocoder":
        hop = models["vocoder"].hop
        return ({"mel": {0: d["n"], 2: d["mel"]}}, {"audio": ["n", f"{hop}*mel_frames"]})
    if name == "mel_frontend":
        return ({"audio": {0: d["n"], 1: 4096 * d["chunks"]}}, {"mel": ["n", 128, "8*chunks"]})
    raise KeyError(name)


def export_v1_graphs(models: dict, out_dir: Path, *, opset: int = DEFAULT_OPSET,
                     external_data_min_bytes: int = DEFAULT_EXTERNAL_DATA_MIN_BYTES,
                     names: tuple[str, ...] | None = None, log=lambda _m: None) -> dict[str, str]:
    """Export every graph the given models allow (models: text_encoder, transformer, dcae, vocoder);
    return component → file name."""
    if opset != DEFAULT_OPSET:
        raise ValueError(f"opset={opset}: the v1 graphs are pinned to opset {DEFAULT_OPSET}")
    out_dir = Path(out_dir)
    wrappers = graph_modules(models)
    args = example_inputs(models, b=2, t=13)
    files = {}
    for name, module in wrappers.items():
        if names is not None and name not in names:
            continue
        log(f"exporting {name}")
        dyn, out_shapes = _spec(name, models)
        inputs, outputs = IO_NAMES[name]
        export_onnx(module, args[name], out_dir / GRAPH_FILES[name], input_names=inputs, output_names=outputs,
                    dynamic_shapes=dyn, output_shapes=out_shapes, opset=opset,
                    external_data_min_bytes=external_data_min_bytes)
        files[name] = GRAPH_FILES[name]
    return files


def v1_host_config(models: dict, lyric_tokenizer: dict) -> dict:
    """The manifest's `config` (docs/io_contract_v1.md §9)."""
    te, tr, voc = models["text_encoder"].config, models["transformer"].config, models["vocoder"].config
    n_lyr = tr.lyric_encoder["num_blocks"]
    return {
        "text_encoder": {"hidden_size": int(te.d_model), "num_layers": int(te.num_layers),
                         "vocab_size": int(te.vocab_size), "max_length": TEXT_MAX_LENGTH,
                         "pad_token_id": int(te.pad_token_id), "eos_token_id": int(te.eos_token_id)},
        "lyric_tokenizer": lyric_tokenizer,
        "transformer": {"hidden_size": tr.inner_dim, "num_layers": tr.num_layers, "latent_channels": tr.in_channels,
                        "latent_height": tr.max_height, "speaker_embedding_dim": tr.speaker_embedding_dim,
                        "text_embedding_dim": tr.text_embedding_dim, "lyric_encoder_layers": n_lyr,
                        "lyric_hidden_size": tr.lyric_hidden_size, "lyric_vocab_size": tr.lyric_encoder_vocab_size},
        "erg": {"tau": ERG_TAU,
                "text_encoder_layers": erg_layers(ERG_TEXT_LAYERS, OFFICIAL_DEPTHS["text"], te.num_layers),
                "lyric_encoder_layers": erg_layers(ERG_LYRIC_LAYERS, OFFICIAL_DEPTHS["lyric"], n_lyr),
                "dit_layers": erg_layers(ERG_DIT_LAYERS, OFFICIAL_DEPTHS["dit"], tr.num_layers)},
        "audio": {"vocoder_sample_rate": int(voc["sampling_rate"]), "output_sample_rate": OUTPUT_SAMPLE_RATE,
                  "audio_channels": 2, "hop_length": int(voc["hop_length"]), "mel_bins": int(voc["n_mels"]),
                  "mel_frames_per_latent": MEL_FRAMES_PER_LATENT,
                  "samples_per_latent": MEL_FRAMES_PER_LATENT * int(voc["hop_length"]),
                  "latent_frames_formula": "floor(duration_s * 44100 / 512 / 8)", "max_duration_s": 240.0,
                  "n_fft": int(voc["n_fft"]), "win_length": int(voc["win_length"]), "f_min": float(voc["f_min"]),
                  "f_max": float(voc["f_max"])},
        "dcae": {"scale_factor": DCAE_SCALE, "shift_factor": DCAE_SHIFT, "mel_min": MEL_MIN, "mel_max": MEL_MAX,
                 "scaling_in_graphs": True},
        "scheduler": {"num_train_timesteps": NUM_TRAIN_TIMESTEPS, "shift": SCHEDULER_SHIFT, "sigma_max": 1.0,
                      "sigma_min": float(torch.tensor(SCHEDULER_SHIFT * 0.001 / (1 + (SCHEDULER_SHIFT - 1) * 0.001),
                                                      dtype=torch.float32)),
                      "timestep_scale": float(NUM_TRAIN_TIMESTEPS)},
        "defaults": {"infer_steps": 60, "guidance_scale": 15.0, "scheduler_type": "euler", "cfg_type": "apg",
                     "omega_scale": 10.0, "guidance_interval": 0.5, "guidance_interval_decay": 0.0,
                     "min_guidance_scale": 3.0, "use_erg_tag": True, "use_erg_lyric": True, "use_erg_diffusion": True,
                     "guidance_scale_text": 0.0, "guidance_scale_lyric": 0.0, "audio_duration": 60.0,
                     "apg_momentum": -0.75, "apg_norm_threshold": 2.5, "cfg_zero_steps": 1},
    }


