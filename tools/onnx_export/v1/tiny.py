"""Tiny random-weight v1 checkpoints in the official layout (spec §1): `ace_step_transformer/`,
`music_dcae_f8c8/`, `music_vocoder/`, `umt5-base/`, plus `lyric_tokenizer/vocab.json` (the repository's
lyric BPE file, which the HF checkpoint does not carry) and the `RANDOM_WEIGHTS` marker.

Narrow widths and few layers; everything that fixes shapes and rates is official (8×16 latents, 128 mel
bins, hop 512, 6693 lyric ids, 512-d speaker input). Same seed → byte-identical files (bf16 safetensors).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .config import (CONFIG_FILE, DCAE_DIR, DIFFUSERS_WEIGHTS, LYRIC_TOKENIZER_DIR, LYRIC_TOKENIZER_FILE,
                     TEXT_ENCODER_DIR, TRANSFORMER_DIR, VOCODER_DIR, V1Config)

TINY_UMT5 = {
    "architectures": ["UMT5EncoderModel"], "model_type": "umt5", "vocab_size": 512, "d_model": 32, "d_kv": 8,
    "d_ff": 64, "num_layers": 4, "num_heads": 4, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
    "initializer_factor": 1.0, "feed_forward_proj": "gated-gelu", "is_encoder_decoder": True,
    "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
    "torch_dtype": "float32",
}
TINY_TRANSFORMER = {
    "_class_name": "ACEStepTransformer2DModel", "in_channels": 8, "num_layers": 4, "inner_dim": 64,
    "attention_head_dim": 16, "num_attention_heads": 4, "mlp_ratio": 2.5, "out_channels": 8,
    "max_position": 32768, "rope_theta": 1000000.0, "speaker_embedding_dim": 512, "text_embedding_dim": 32,
    "ssl_encoder_depths": [1, 1], "ssl_names": ["mert", "m-hubert"], "ssl_latent_dims": [48, 40],
    "patch_size": [16, 1], "max_height": 16, "max_width": 32768, "lyric_encoder_vocab_size": 6693,
    "lyric_hidden_size": 32,
    # exporter extension (tiny only): the official conformer sizes are hard-coded in its class
    "lyric_encoder_config": {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2},
}
TINY_DCAE = {
    "_class_name": "AutoencoderDC", "in_channels": 2, "latent_channels": 8, "attention_head_dim": 8,
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_block_out_channels": [16, 16, 32, 32], "decoder_block_out_channels": [16, 16, 32, 32],
    "encoder_layers_per_block": [1, 1, 1, 1], "decoder_layers_per_block": [1, 1, 1, 1],
    "encoder_qkv_multiscales": [[], [], [5], [5]], "decoder_qkv_multiscales": [[], [], [5], [5]],
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv", "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu", "scaling_factor": 0.41407,
}
TINY_VOCODER = {
    "_class_name": "ADaMoSHiFiGANV1", "input_channels": 128, "depths": [1, 1, 2, 1], "dims": [16, 16, 24, 32],
    "kernel_sizes": [7], "upsample_rates": [4, 4, 2, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11, 13], "resblock_dilation_sizes": [[1, 3, 5]] * 4, "num_mels": 32,
    "upsample_initial_channel": 128, "use_template": False, "pre_conv_kernel_size": 13,
    "post_conv_kernel_size": 13, "sampling_rate": 44100, "n_fft": 2048, "win_length": 2048, "hop_length": 512,
    "f_min": 40, "f_max": 16000, "n_mels": 128,
}


def _init(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Deterministic values that keep activations O(1) through the tiny stacks."""
    randn = lambda s: torch.randn(shape, generator=g) * s  # noqa: E731
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("scale_shift_table", "pos_bias_u", "pos_bias_v"):
        return randn(0.2)
    if leaf == "gamma":
        return 0.5 + randn(0.1)
    if leaf == "weight_g":
        # conv_post: a larger gain so the tiny vocoder's tanh output is not near zero
        return (8.0 if name.startswith("head.conv_post") else 0.5) + torch.rand(shape, generator=g)
    if leaf == "bias":
        return randn(0.05)
    if len(shape) == 1:  # norm weights
        return 1.0 + randn(0.1)
    if "embed" in name and len(shape) == 2 and ("lyric_embs" in name or "shared" in name):
        return randn(1.0)
    if leaf == "relative_attention_bias.weight" or name.endswith("relative_attention_bias.weight"):
        return randn(0.5)
    fan_in = math.prod(shape[1:])
    return randn(1.0 / math.sqrt(max(fan_in, 1)))


def _save(module: torch.nn.Module, path: Path, g: torch.Generator, skip=()) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name, value in sorted(module.state_dict().items()):
        if name in skip:
            continue
        tensors[name] = _init(name, tuple(value.shape), g).to(torch.bfloat16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})


def _write_config(path: Path, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def write_tiny_v1(out: Path, seed: int = 0) -> dict[str, Path]:
    """Write the tiny v1 checkpoint folders under `out`; return component → folder."""
    from ..package import RANDOM_WEIGHTS_MARKER
    from .dcae import build_dcae
    from .mel import hann_periodic, slaney_mel_fb
    from .text_encoder import build_umt5
    from .tokenizers_tiny import write_lyric_tokenizer, write_umt5_tokenizer
    from .transformer import build_transformer
    from .vocoder import build_vocoder, vocoder_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RANDOM_WEIGHTS_MARKER).write_text(
        f"random weights (seed {seed}) written by tools.onnx_export.v1.make_tiny\n", encoding="utf-8")
    g = torch.Generator().manual_seed(int(seed))

    d = out / TRANSFORMER_DIR
    _write_config(d / CONFIG_FILE, TINY_TRANSFORMER)
    _save(build_transformer(V1Config.from_dict(TINY_TRANSFORMER, "tiny"), "meta"), d / DIFFUSERS_WEIGHTS, g)

    d = out / DCAE_DIR
    _write_config(d / CONFIG_FILE, TINY_DCAE)
    with torch.device("meta"):
        dcae = build_dcae(TINY_DCAE)
    _save(dcae, d / DIFFUSERS_WEIGHTS, g)

    d = out / VOCODER_DIR
    _write_config(d / CONFIG_FILE, TINY_VOCODER)
    voc = build_vocoder(vocoder_config(TINY_VOCODER, "tiny"), "meta")
    _save(voc, d / DIFFUSERS_WEIGHTS, g)
    # the mel buffers hold their real values (window, slaney filter bank), not noise
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / DIFFUSERS_WEIGHTS))
    c = TINY_VOCODER
    state["mel_transform.spectrogram.window"] = torch.tensor(hann_periodic(c["win_length"]), dtype=torch.bfloat16)
    state["mel_transform.mel_scale.fb"] = torch.tensor(
        slaney_mel_fb(c["sampling_rate"], c["n_fft"], c["n_mels"], c["f_min"], c["f_max"]), dtype=torch.bfloat16)
    save_file(dict(sorted(state.items())), str(d / DIFFUSERS_WEIGHTS), metadata={"format": "pt"})

    d = out / TEXT_ENCODER_DIR
    _write_config(d / CONFIG_FILE, TINY_UMT5)
    with torch.device("meta"):
        umt5 = build_umt5(TINY_UMT5)
    _save(umt5, d / "model.safetensors", g, skip=("encoder.embed_tokens.weight",))  # tied copy, as save_pretrained
    write_umt5_tokenizer(d, TINY_UMT5["vocab_size"])

    write_lyric_tokenizer(out / LYRIC_TOKENIZER_DIR / LYRIC_TOKENIZER_FILE)
    return {"transformer": out / TRANSFORMER_DIR, "dcae": out / DCAE_DIR, "vocoder": out / VOCODER_DIR,
            "text_encoder": out / TEXT_ENCODER_DIR, "lyric_tokenizer": out / LYRIC_TOKENIZER_DIR}
