"""Strict loader and tiny writer for the official `acestep-v15-*` layout (spec §1.1, §1.2, §1.9, §2.1)."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tools.onnx_export.acestep import AceStepConfig, load_acestep_checkpoint, write_tiny_acestep
from tools.onnx_export.acestep.model import expected_state_shapes
from tools.onnx_export.acestep.tiny import tiny_config_dict

CONFIG_2B = {  # spec §1.2
    "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "rope_theta": 1000000, "max_position_embeddings": 32768, "attention_bias": False,
    "use_sliding_window": True, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 12, "in_channels": 192,
    "audio_acoustic_hidden_dim": 64, "patch_size": 2, "text_hidden_dim": 1024, "timbre_hidden_dim": 64,
    "timbre_fix_frame": 750, "num_lyric_encoder_hidden_layers": 8, "num_timbre_encoder_hidden_layers": 4,
    "num_attention_pooler_hidden_layers": 2, "pool_window_size": 5, "fsq_dim": 2048,
    "fsq_input_levels": [8, 8, 8, 5, 5, 5], "fsq_input_num_quantizers": 1, "is_turbo": True,
    "timestep_mu": -0.4, "timestep_sigma": 1.0, "data_proportion": 0.5, "some_future_key": 1,
}


def spec_keys_2b() -> dict[str, tuple]:
    """The §2.1 table, written out independently of the modules."""
    H, I, KV, D = 2048, 6144, 1024, 128
    k: dict[str, tuple] = {}
    for te in ("time_embed", "time_embed_r"):
        k.update({f"decoder.{te}.linear_1.weight": (H, 256), f"decoder.{te}.linear_1.bias": (H,),
                  f"decoder.{te}.linear_2.weight": (H, H), f"decoder.{te}.linear_2.bias": (H,),
                  f"decoder.{te}.time_proj.weight": (6 * H, H), f"decoder.{te}.time_proj.bias": (6 * H,)})
    k.update({"decoder.proj_in.1.weight": (H, 192, 2), "decoder.proj_in.1.bias": (H,),
              "decoder.condition_embedder.weight": (H, H), "decoder.condition_embedder.bias": (H,),
              "decoder.norm_out.weight": (H,), "decoder.scale_shift_table": (1, 2, H),
              "decoder.proj_out.1.weight": (H, 64, 2), "decoder.proj_out.1.bias": (64,)})

    def attn(p):
        return {p + "q_proj.weight": (H, H), p + "k_proj.weight": (KV, H), p + "v_proj.weight": (KV, H),
                p + "o_proj.weight": (H, H), p + "q_norm.weight": (D,), p + "k_norm.weight": (D,)}

    def mlp(p):
        return {p + "gate_proj.weight": (I, H), p + "up_proj.weight": (I, H), p + "down_proj.weight": (H, I)}

    for i in range(24):
        p = f"decoder.layers.{i}."
        k.update({p + "self_attn_norm.weight": (H,), p + "cross_attn_norm.weight": (H,),
                  p + "mlp_norm.weight": (H,), p + "scale_shift_table": (1, 6, H)})
        k.update(attn(p + "self_attn."))
        k.update(attn(p + "cross_attn."))
        k.update(mlp(p + "mlp."))

    def enc_layers(p, n):
        for i in range(n):
            q = f"{p}layers.{i}."
            k.update({q + "input_layernorm.weight": (H,), q + "post_attention_layernorm.weight": (H,)})
            k.update(attn(q + "self_attn."))
            k.update(mlp(q + "mlp."))

    k["encoder.text_projector.weight"] = (H, 1024)
    k.update({"encoder.lyric_encoder.embed_tokens.weight": (H, 1024), "encoder.lyric_encoder.embed_tokens.bias": (H,),
              "encoder.lyric_encoder.norm.weight": (H,)})
    enc_layers("encoder.lyric_encoder.", 8)
    k.update({"encoder.timbre_encoder.embed_tokens.weight": (H, 64), "encoder.timbre_encoder.embed_tokens.bias": (H,),
              "encoder.timbre_encoder.special_token": (1, 1, H), "encoder.timbre_encoder.norm.weight": (H,)})
    enc_layers("encoder.timbre_encoder.", 4)
    k.update({"tokenizer.audio_acoustic_proj.weight": (H, 64), "tokenizer.audio_acoustic_proj.bias": (H,),
              "tokenizer.attention_pooler.embed_tokens.weight": (H, H),
              "tokenizer.attention_pooler.embed_tokens.bias": (H,),
              "tokenizer.attention_pooler.special_token": (1, 1, H), "tokenizer.attention_pooler.norm.weight": (H,),
              "tokenizer.quantizer.project_in.weight": (6, H), "tokenizer.quantizer.project_in.bias": (6,),
              "tokenizer.quantizer.project_out.weight": (H, 6), "tokenizer.quantizer.project_out.bias": (H,)})
    enc_layers("tokenizer.attention_pooler.", 2)
    k.update({"detokenizer.embed_tokens.weight": (H, H), "detokenizer.embed_tokens.bias": (H,),
              "detokenizer.special_tokens": (1, 5, H), "detokenizer.norm.weight": (H,),
              "detokenizer.proj_out.weight": (64, H), "detokenizer.proj_out.bias": (64,)})
    enc_layers("detokenizer.", 2)
    k["null_condition_emb"] = (1, 1, H)
    return k


def test_2b_key_set_matches_spec_table():
    spec = spec_keys_2b()
    assert len(spec) == 677
    got = expected_state_shapes(AceStepConfig.from_dict(CONFIG_2B))
    assert got == spec
    counts = {p: sum(1 for n in spec if n.startswith(p)) for p in ("decoder.", "encoder.", "tokenizer.", "detokenizer.")}
    assert counts == {"decoder.": 476, "encoder.": 140, "tokenizer.": 32, "detokenizer.": 28}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ace_tiny")
    write_tiny_acestep(d, seed=7, text_hidden_dim=64)
    return d


def _layerless(names):
    return {re.sub(r"\.layers\.\d+\.", ".layers.N.", n) for n in names}


def test_tiny_checkpoint_layout(tiny_dir):
    assert sorted(p.name for p in tiny_dir.iterdir()) == ["config.json", "model.safetensors", "silence_latent.pt"]
    with safe_open(str(tiny_dir / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        assert all(f.get_tensor(n).dtype == torch.bfloat16 for n in names)
    assert _layerless(names) == _layerless(spec_keys_2b())
    assert not any(n.startswith("model.") for n in names)
    sil = torch.load(str(tiny_dir / "silence_latent.pt"), weights_only=True)
    assert sil.dtype == torch.float32 and tuple(sil.shape) == (1, 64, 15000)
    assert sil[0, :, :750].std(dim=1).min() > 0.01  # not constant over time
    cfg = json.loads((tiny_dir / "config.json").read_text())
    for key in CONFIG_2B:
        if key != "some_future_key":
            assert key in cfg, key
    # deterministic
    d2 = tiny_dir.parent / "ace_tiny_again"
    write_tiny_acestep(d2, seed=7, text_hidden_dim=64)
    a, b = load_file(str(tiny_dir / "model.safetensors")), load_file(str(d2 / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loader_converts_and_transposes(tiny_dir):
    m = load_acestep_checkpoint(tiny_dir)
    raw = load_file(str(tiny_dir / "model.safetensors"))
    sd = m.state_dict()
    assert all(sd[k].dtype == torch.float32 and torch.equal(sd[k], raw[k].float()) for k in raw)
    sil = torch.load(str(tiny_dir / "silence_latent.pt"), weights_only=True)
    assert m.silence_latent.shape == (1, 15000, 64) and torch.equal(m.silence_latent[0], sil[0].T)
    assert m.config.is_turbo is True
    assert m.null_condition_emb.shape == (1, 1, 128)


def _copy(tiny_dir, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, d)
    return d


def test_loader_accepts_model_prefix(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    raw = load_file(str(d / "model.safetensors"))
    save_file({"model." + k: v for k, v in raw.items()}, str(d / "model.safetensors"))
    a, b = load_acestep_checkpoint(tiny_dir).state_dict(), load_acestep_checkpoint(d).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_names_renamed_key(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    raw = load_file(str(d / "model.safetensors"))
    raw["decoder.layers.2.mlp.gate_projX.weight"] = raw.pop("decoder.layers.2.mlp.gate_proj.weight")
    save_file(raw, str(d / "model.safetensors"))
    with pytest.raises(ValueError) as e:
        load_acestep_checkpoint(d)
    assert "missing key(s): decoder.layers.2.mlp.gate_proj.weight" in str(e.value)
    assert "unexpected key(s): decoder.layers.2.mlp.gate_projX.weight" in str(e.value)


def test_loader_names_wrong_shape(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    raw = load_file(str(d / "model.safetensors"))
    raw["encoder.text_projector.weight"] = raw["encoder.text_projector.weight"][:, :32].contiguous()
    save_file(raw, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"encoder\.text_projector\.weight: expected \[128, 64\], got \[128, 32\]"):
        load_acestep_checkpoint(d)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "silence_latent.pt"])
def test_loader_names_missing_file(tiny_dir, tmp_path, missing):
    d = _copy(tiny_dir, tmp_path)
    (d / missing).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(d / missing))):
        load_acestep_checkpoint(d)


def test_loader_rejects_bad_silence_and_config(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    torch.save(torch.zeros(1, 15000, 64), str(d / "silence_latent.pt"))
    with pytest.raises(ValueError, match=r"silence_latent shape \[1, 15000, 64\]"):
        load_acestep_checkpoint(d)
    cfg = json.loads((tiny_dir / "config.json").read_text())
    del cfg["sliding_window"]
    with pytest.raises(ValueError, match="sliding_window"):
        AceStepConfig.from_dict(cfg)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        AceStepConfig.from_dict({**tiny_config_dict(64), "num_key_value_heads": 3})


@pytest.mark.parametrize("variant", ["base", "sft"])
def test_base_and_sft_variants_share_the_layout(tmp_path, variant, tiny_dir):
    write_tiny_acestep(tmp_path, seed=7, text_hidden_dim=64, variant=variant)
    m = load_acestep_checkpoint(tmp_path)
    assert m.config.is_turbo is False
    assert m.state_dict().keys() == load_acestep_checkpoint(tiny_dir).state_dict().keys()
    with pytest.raises(ValueError, match="variant"):
        write_tiny_acestep(tmp_path / "x", seed=1, text_hidden_dim=64, variant="xl")
