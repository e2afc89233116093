"""VAE export: torch (diffusers, weight-normed as in the checkpoint) vs ONNX Runtime, weight-norm folding
vs an independent numpy computation of spec §2.2, and the official layout's key names and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools.onnx_export import vae as vae_mod

TOL = 1e-5  # graphs (folded weight norm, rewritten Snake) vs the diffusers model as stored


@pytest.fixture(scope="module")
def torch_vae(tiny_checkpoints):
    """The diffusers model as loaded from the checkpoint, weight norm NOT folded (the reference)."""
    return vae_mod.load_vae(tiny_checkpoints / "vae")


def _component(manifest, tiny_package, name):
    return tiny_package / manifest["components"][name]["file"]


FUSED = pytest.mark.parametrize("fused_ops", [False, True], ids=["function-bodies", "fused-kernel"])


@FUSED
@pytest.mark.parametrize("batch,frames", [(1, 1), (1, 8), (2, 13)])
def test_decoder_matches_torch(torch_vae, manifest, tiny_package, ort_session, batch, frames, fused_ops):
    latents = torch.randn(batch, 64, frames, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        ref = torch_vae.decode(latents).sample.numpy()
    sess = ort_session(_component(manifest, tiny_package, "vae_decoder"), fused_ops)
    (audio,) = sess.run(None, {"latents": latents.numpy()})
    assert audio.shape == (batch, 2, 1920 * frames)  # decoded length is exactly hop · T (spec §1.8)
    assert np.abs(ref).max() > 1e-3, "reference output is ~0; the comparison would be vacuous"
    assert np.abs(audio - ref).max() <= TOL


@FUSED
@pytest.mark.parametrize("batch,frames", [(1, 5), (2, 12)])
def test_encoder_matches_torch(torch_vae, manifest, tiny_package, ort_session, batch, frames, fused_ops):
    audio = 0.5 * torch.randn(batch, 2, 1920 * frames, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        dist = torch_vae.encode(audio).latent_dist
        ref_mean, ref_std = dist.mean.numpy(), dist.std.numpy()
    sess = ort_session(_component(manifest, tiny_package, "vae_encoder"), fused_ops)
    mean, std = sess.run(["latent_mean", "latent_std"], {"audio": audio.numpy()})
    assert mean.shape == std.shape == (batch, 64, frames)
    assert np.abs(mean - ref_mean).max() <= TOL
    assert np.abs(std - ref_std).max() <= TOL
    assert (std > 0).all()


def test_weight_norm_folding_matches_spec_formula(tiny_checkpoints):
    """w = g · v / ‖v‖ with the norm over every dim except 0 (ConvTranspose: dim 0 = in_channels)."""
    from safetensors.torch import load_file

    raw = {k: v.float().numpy() for k, v in load_file(str(tiny_checkpoints / "vae" / vae_mod.WEIGHTS_FILE)).items()}
    model = vae_mod.fold_weight_norm(vae_mod.load_vae(tiny_checkpoints / "vae"))
    folded = dict(model.named_parameters())
    prefixes = sorted(k[: -len(".weight_g")] for k in raw if k.endswith(".weight_g"))
    assert len(prefixes) > 20
    transposed_changing_width = 0
    for prefix in prefixes:
        g, v = raw[prefix + ".weight_g"], raw[prefix + ".weight_v"]
        assert g.shape == (v.shape[0], 1, 1)
        norm = np.sqrt((v.astype(np.float64) ** 2).sum(axis=(1, 2), keepdims=True))
        expected = g * v / norm
        got = folded[prefix + ".weight"].detach().numpy()
        assert got.shape == v.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7, err_msg=prefix)
        # g really differs from ‖v‖, so a loader that ignored weight_g would fail this test
        assert np.abs(expected - v).max() > 1e-3, prefix
        if ".conv_t1" in prefix:
            in_ch, out_ch = v.shape[0], v.shape[1]  # ConvTranspose1d weight is [in, out, k]
            transposed_changing_width += in_ch != out_ch
    assert transposed_changing_width >= 1, "tiny VAE must have a ConvTranspose with in != out"
    assert not [k for k in folded if k.endswith(("weight_g", "weight_v"))]


def test_official_layout_keys_and_shapes():
    """The model built from the official config has the 365 tensors and shapes of spec §1.8 / §2.2."""
    with torch.device("meta"):
        model = vae_mod.build_vae(vae_mod.OFFICIAL_CONFIG)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 365
    assert sum(k.startswith("encoder.") for k in shapes) == 183
    assert sum(k.startswith("decoder.") for k in shapes) == 182
    assert shapes["decoder.conv1.weight_v"] == (2048, 64, 7)
    # first decoder block: stride 10, 2048 → 1024, ConvTranspose g over in_channels
    assert shapes["decoder.block.0.conv_t1.weight_v"] == (2048, 1024, 20)
    assert shapes["decoder.block.0.conv_t1.weight_g"] == (2048, 1, 1)
    assert shapes["decoder.block.3.conv_t1.weight_v"] == (256, 128, 8)
    assert shapes["decoder.block.4.conv_t1.weight_v"] == (128, 128, 4)
    assert "decoder.conv2.bias" not in shapes and shapes["decoder.conv2.weight_v"] == (2, 128, 7)
    assert shapes["encoder.conv2.weight_v"] == (128, 2048, 3)
    assert shapes["encoder.block.4.conv1.weight_v"] == (2048, 1024, 20)
    assert shapes["decoder.block.2.snake1.alpha"] == (1, 512, 1)
    assert vae_mod.hop_length(model) == 1920


def test_tiny_keeps_rates_and_latent_dim(torch_vae, manifest):
    cfg = manifest["config"]["vae"]
    assert cfg["hop_length"] == 1920 == int(np.prod([2, 4, 4, 6, 10]))
    assert cfg["sample_rate"] == 48000 and cfg["latent_rate_hz"] == 25
    assert cfg["latent_channels"] == 64 and cfg["audio_channels"] == 2
    assert list(torch_vae.config.downsampling_ratios) == [2, 4, 4, 6, 10]


def test_folded_snake_matches_diffusers_snake():
    """x + c − c·cos(a·x) (the exported form) against diffusers' Snake1d, over a wide input range and
    parameters down to small exp(β) (large 1/β, where cancellation would show)."""
    from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d

    gen = torch.Generator().manual_seed(0)
    snake = Snake1d(16)
    with torch.no_grad():
        snake.alpha.copy_(torch.linspace(-3, 2, 16).reshape(1, 16, 1))
        snake.beta.copy_(torch.linspace(-2, 3, 16).reshape(1, 16, 1))
    x = torch.cat([20 * torch.randn(2, 16, 500, generator=gen), 1e-3 * torch.randn(2, 16, 100, generator=gen)], -1)
    with torch.no_grad():
        ref = snake.double()(x.double())
        got = vae_mod.FoldedSnake(snake.float())(x).double()
    scale = 1 + (1 / torch.exp(snake.beta.double())).abs()  # |x| and 1/β bound the terms' size
    assert float(((got - ref).abs() / scale).max()) <= 1e-5
    # a Snake with α, β swapped (or without exp) is far off: the comparison can fail
    wrong = Snake1d(16)
    with torch.no_grad():
        wrong.alpha.copy_(snake.beta)
        wrong.beta.copy_(snake.alpha)
        assert float(((vae_mod.FoldedSnake(wrong)(x).double() - ref).abs() / scale).max()) > 1e-2


def test_exported_decoder_has_one_snake_node_with_one_trig_pass_each(manifest, tiny_package):
    import onnx

    model = onnx.load(str(_component(manifest, tiny_package, "vae_decoder")))
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    # tiny decoder: 5 blocks × (1 + 3 units × 2) Snakes + the final one = 36
    assert ops.count(("ai.acestep", "Snake")) == 36, sorted(set(ops))
    assert not {"Cos", "Sin", "Pow"} & {op for _, op in ops}, "a Snake was left unfused"
    (function,) = model.functions
    assert [n.op_type for n in function.node] == ["Add", "Mul", "Cos", "Mul", "Sub"]
