"""The v1 gotchas (spec §12) checked against direct numpy computations written from the spec formulas,
and the module layout against the sizes the spec measured on the official code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tools.onnx_export.v1.config import V1Config, erg_layers
from tools.onnx_export.v1.conformer import RelPositionMultiHeadedAttention, rel_pos_div, rel_pos_table, rel_shift_index
from tools.onnx_export.v1.layers import (CrossAttention, FinalLayer, LinearSelfAttention, apply_rope_v1,
                                         rope_inv_freq, rope_table, sin_cos, timestep_freqs, timestep_sinusoid)

OFFICIAL = {"in_channels": 8, "num_layers": 24, "inner_dim": 2560, "attention_head_dim": 128, "num_attention_heads": 20,
            "mlp_ratio": 2.5, "out_channels": 8, "max_position": 32768, "rope_theta": 1e6, "speaker_embedding_dim": 512,
            "text_embedding_dim": 768, "ssl_encoder_depths": [8, 8], "ssl_names": ["mert", "m-hubert"],
            "ssl_latent_dims": [1024, 768], "patch_size": [16, 1], "max_height": 16, "max_width": 32768,
            "lyric_encoder_vocab_size": 6693, "lyric_hidden_size": 1024}


def _np_rope_v1(x: np.ndarray, theta: float) -> np.ndarray:
    """Spec §3.3 literally: pair (2i, 2i+1) with angles p·θ_{2i mod d/2}, p·θ_{(2i+1) mod d/2}."""
    d = x.shape[-1]
    th = theta ** (-2.0 * np.arange(d // 2) / d)
    out = np.empty_like(x)
    for p in range(x.shape[-2]):
        for i in range(d // 2):
            a0, a1 = p * th[(2 * i) % (d // 2)], p * th[(2 * i + 1) % (d // 2)]
            x0, x1 = x[..., p, 2 * i], x[..., p, 2 * i + 1]
            out[..., p, 2 * i] = x0 * math.cos(a0) - x1 * math.sin(a0)
            out[..., p, 2 * i + 1] = x1 * math.cos(a1) + x0 * math.sin(a1)
    return out


def _np_rope_standard(x: np.ndarray, theta: float) -> np.ndarray:
    d = x.shape[-1]
    th = theta ** (-2.0 * np.arange(d // 2) / d)
    out = np.empty_like(x)
    for p in range(x.shape[-2]):
        a = p * th
        x0, x1 = x[..., p, 0::2], x[..., p, 1::2]
        out[..., p, 0::2] = x0 * np.cos(a) - x1 * np.sin(a)
        out[..., p, 1::2] = x1 * np.cos(a) + x0 * np.sin(a)
    return out


def test_rope_table_layout_matches_spec_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 40, 16, generator=g)
    theta = 1e6
    got = apply_rope_v1(x, *rope_table(x, 2, rope_inv_freq(16, theta))).numpy()
    want = _np_rope_v1(x.double().numpy(), theta)
    assert np.abs(got - want).max() <= 1e-5
    # a standard interleaved RoPE is a different function (gotcha 1): it must not pass
    assert np.abs(got - _np_rope_standard(x.double().numpy(), theta)).max() > 0.1


def _np_linear_attention(x, w, mask, heads, d, scale):
    """out_i = Σ_s v_s (φk_s·φq_i) / (Σ_s φk_s·φq_i + 1e-15), φ = ReLU, then to_out (spec §3.3)."""
    b, t, _ = x.shape
    lin = lambda name, y: y @ w[name + ".weight"].T + w[name + ".bias"]  # noqa: E731
    q = (lin("to_q", x) * scale).reshape(b, t, heads, d).transpose(0, 2, 1, 3)
    k = lin("to_k", x).reshape(b, t, heads, d).transpose(0, 2, 1, 3)
    v = lin("to_v", x).reshape(b, t, heads, d).transpose(0, 2, 1, 3)
    q, k = _np_rope_v1(q, 1e6), _np_rope_v1(k, 1e6)
    m = mask[:, None, :, None]
    q, k, v = np.maximum(q * m, 0), np.maximum(k * m, 0), v * m
    out = np.zeros_like(q)
    for i in range(t):
        sim = np.einsum("bhsd,bhd->bhs", k, q[:, :, i])           # φk_s·φq_i
        out[:, :, i] = np.einsum("bhs,bhsd->bhd", sim, v) / (sim.sum(-1)[..., None] + 1e-15)
    return lin("to_out.0", out.transpose(0, 2, 1, 3).reshape(b, t, heads * d))


def test_linear_attention_matches_direct_numpy():
    torch.manual_seed(1)
    heads, d = 4, 16
    att = LinearSelfAttention(heads * d, heads, d).eval()
    x = torch.randn(2, 11, heads * d)
    mask = torch.ones(2, 11, dtype=torch.int64)
    mask[1, 8:] = 0
    rope = rope_table(x, 1, rope_inv_freq(d, 1e6))
    w = {k: v.double().numpy() for k, v in att.state_dict().items()}
    with torch.no_grad():
        got = att(x, mask, rope, torch.tensor(1.0)).numpy()
        got_erg = att(x, mask, rope, torch.tensor(0.01)).numpy()
    want = _np_linear_attention(x.double().numpy(), w, mask.double().numpy(), heads, d, 1.0)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    # masked frames: zero numerator and denominator -> 0 (not NaN) -> to_out bias
    np.testing.assert_allclose(got[1, 8:], np.broadcast_to(w["to_out.0.bias"], (3, heads * d)), atol=1e-6)
    # ERG q x 0.01 cancels in the ReLU linear attention (spec §7: measured max diff 2e-6)
    assert np.abs(got_erg - got).max() <= 2e-5


def test_cross_attention_matches_numpy_softmax_with_rope_and_mask():
    torch.manual_seed(2)
    heads, d = 2, 8
    ca = CrossAttention(heads * d, heads, d).eval()
    x, enc = torch.randn(1, 5, heads * d), torch.randn(1, 7, heads * d)
    keep = torch.tensor([[1, 1, 1, 0, 1, 0, 0]], dtype=torch.bool)
    add = torch.where(keep, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
    inv = rope_inv_freq(d, 1e6)
    with torch.no_grad():
        got = ca(x, enc, add, rope_table(x, 1, inv), rope_table(enc, 1, inv), torch.tensor(1.0)).numpy()
    w = {k: v.double().numpy() for k, v in ca.state_dict().items()}
    lin = lambda n, y: y @ w[n + ".weight"].T + w[n + ".bias"]  # noqa: E731
    q = _np_rope_v1(lin("to_q", x.double().numpy()).reshape(1, 5, heads, d).transpose(0, 2, 1, 3), 1e6)
    k = _np_rope_v1(lin("to_k", enc.double().numpy()).reshape(1, 7, heads, d).transpose(0, 2, 1, 3), 1e6)
    v = lin("to_v", enc.double().numpy()).reshape(1, 7, heads, d).transpose(0, 2, 1, 3)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    s = np.where(keep.numpy()[:, None, None, :], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = lin("to_out.0", (p @ v).transpose(0, 2, 1, 3).reshape(1, 5, heads * d))
    assert np.abs(got - want).max() <= 1e-5


def test_rel_shift_gather_equals_transformer_xl_shift():
    n = 6
    x = np.random.default_rng(0).standard_normal((2, 3, n, 2 * n - 1))
    # Transformer-XL: pad a zero column, view as [2L, L], drop the first row, view back, keep L columns
    padded = np.concatenate([np.zeros((2, 3, n, 1)), x], axis=-1)
    shifted = padded.reshape(2, 3, 2 * n, n)[:, :, 1:].reshape(2, 3, n, 2 * n - 1)[..., :n]
    idx = rel_shift_index(torch.zeros(1, n)).numpy()
    np.testing.assert_array_equal(np.take_along_axis(x, np.broadcast_to(idx, (2, 3, n, n)), -1), shifted)


def test_rel_pos_table_formula():
    d, n = 16, 5
    table = rel_pos_table(torch.zeros(1, n), rel_pos_div(d)).double().numpy()
    pos = np.arange(n - 1, -n, -1, dtype=np.float64)
    w = np.exp(-np.arange(0, d, 2) * math.log(10000.0) / d)
    want = np.empty((2 * n - 1, d))
    want[:, 0::2], want[:, 1::2] = np.sin(pos[:, None] * w), np.cos(pos[:, None] * w)
    assert np.abs(table - want).max() <= 1e-6


def test_conformer_attention_all_masked_row_is_zero_not_nan():
    torch.manual_seed(3)
    att = RelPositionMultiHeadedAttention(16, 2).eval()
    x = torch.randn(2, 4, 16)
    keep = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)[:, None, None, :]
    with torch.no_grad():
        out = att(x, rel_pos_table(x, rel_pos_div(16)), keep, torch.tensor(1.0))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], att.linear_out.bias.expand(4, 16), rtol=0, atol=1e-6)


def test_sin_cos_and_timestep_sinusoid_accuracy():
    arg = torch.tensor(np.linspace(-3e4, 3e4, 20001), dtype=torch.float32)
    s, c = sin_cos(arg)
    a64 = arg.double().numpy()
    assert np.abs(s.numpy() - np.sin(a64)).max() <= 2e-6 and np.abs(c.numpy() - np.cos(a64)).max() <= 2e-6
    t = torch.tensor([0.0, 8.9286, 500.0, 999.0, 1000.0])
    emb = timestep_sinusoid(t, timestep_freqs(256)).double().numpy()
    f = np.exp(-math.log(10000.0) * np.arange(128) / 128)
    arg32 = (t.numpy()[:, None].astype(np.float32) * f.astype(np.float32)).astype(np.float64)
    want = np.concatenate([np.cos(arg32), np.sin(arg32)], axis=1)   # flip_sin_to_cos: cos first
    # fp32 frequencies may differ from numpy's by an ulp (torch's exp), i.e. up to 6e-8·t in the angle
    tol = 2e-6 + 1e-7 * t.numpy()[:, None]
    assert (np.abs(emb - want) <= tol).all()


def test_final_layer_modulation_uses_embedded_timestep():
    torch.manual_seed(4)
    fl = FinalLayer(12, 128).eval()
    fl.scale_shift_table.data.normal_()
    x, emb = torch.randn(2, 3, 12), torch.randn(2, 12)
    with torch.no_grad():
        got = fl(x, emb).double().numpy()
    xn = x.double().numpy()
    xn = xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + 1e-6)
    table = fl.scale_shift_table.detach().double().numpy()
    shift, scale = table[0] + emb.double().numpy(), table[1] + emb.double().numpy()
    want = (xn * (1 + scale[:, None]) + shift[:, None]) @ fl.linear.weight.detach().double().numpy().T \
        + fl.linear.bias.detach().double().numpy()
    assert np.abs(got - want).max() <= 1e-5


def test_unpatchify_channel_is_fastest_axis():
    """out[b, c, h, t] = final_linear[b, t, 8h + c] (spec §3.3 step 5)."""
    from tools.onnx_export.v1.tiny import TINY_TRANSFORMER
    from tools.onnx_export.v1.transformer import build_transformer

    torch.manual_seed(5)
    model = build_transformer(V1Config.from_dict(TINY_TRANSFORMER, "tiny")).eval()
    model.final_layer.linear.weight.data.zero_()
    model.final_layer.linear.bias.data.copy_(torch.arange(128, dtype=torch.float32))
    b, t, s = 1, 3, 4
    with torch.no_grad():
        v = model.decode(torch.randn(b, 8, 16, t), torch.ones(b, t, dtype=torch.int64), torch.randn(b, s, 64),
                         torch.ones(b, s, dtype=torch.int64), torch.tensor([10.0]), torch.ones(4))
    h, c = np.meshgrid(np.arange(16), np.arange(8))
    np.testing.assert_array_equal(v[0, :, :, 1].numpy(), (8 * h + c).astype(np.float32))


def test_official_layout_sizes_match_the_spec_measurements():
    """Spec §1 measured on the official classes: 874 tensors / 3,305,659,264 params (transformer),
    192 / 156.8 M (DCAE), 713 / 103.1 M (vocoder)."""
    from tools.onnx_export.v1.dcae import OFFICIAL_CONFIG, build_dcae
    from tools.onnx_export.v1.transformer import build_transformer
    from tools.onnx_export.v1.vocoder import DEFAULT_CONFIG, build_vocoder

    sd = build_transformer(V1Config.from_dict(OFFICIAL, "official"), "meta").state_dict()
    assert len(sd) == 874 and sum(v.numel() for v in sd.values()) == 3_305_659_264
    assert tuple(sd["transformer_blocks.0.ff.inverted_conv.conv.weight"].shape) == (12800, 2560, 1)
    assert tuple(sd["transformer_blocks.0.ff.point_conv.conv.weight"].shape) == (2560, 6400, 1)
    assert tuple(sd["proj_in.early_conv_layers.0.weight"].shape) == (2048, 8, 16, 1)
    assert tuple(sd["lyric_encoder.encoders.5.self_attn.pos_bias_u"].shape) == (16, 64)
    assert tuple(sd["t_block.1.weight"].shape) == (15360, 2560)
    with torch.device("meta"):
        dcae = build_dcae(OFFICIAL_CONFIG).state_dict()
    assert len(dcae) == 192 and round(sum(v.numel() for v in dcae.values()) / 1e5) == 1568
    voc = build_vocoder(DEFAULT_CONFIG, "meta").state_dict()
    assert len(voc) == 713 and round(sum(v.numel() for v in voc.values()) / 1e5) == 1031
    assert tuple(voc["mel_transform.mel_scale.fb"].shape) == (1025, 128)


def test_erg_layers_and_sigma_min():
    assert erg_layers((8, 9), 12, 12) == [8, 9] and erg_layers((15, 16, 17, 18, 19), 24, 24) == [15, 16, 17, 18, 19]
    assert erg_layers((8, 9), 12, 4) == [2, 3] and erg_layers((4, 5), 6, 2) == [1]
    from tools.onnx_export.v1.export import v1_host_config  # noqa: F401  (sigma_min is checked in test_v1_onnx)


@pytest.mark.parametrize("bad", [{"patch_size": [8, 2]}, {"surprise": 1}, {"lyric_encoder_config": {"heads": 3}}])
def test_config_errors_name_the_problem(bad):
    from tools.onnx_export.common import CheckpointError

    with pytest.raises(CheckpointError, match=next(iter(bad)) if "lyric" not in next(iter(bad)) else "heads"):
        V1Config.from_dict({**OFFICIAL, **bad}, "cfg")
