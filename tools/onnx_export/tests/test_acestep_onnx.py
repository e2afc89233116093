"""ONNX export of the ACE-Step graphs: torch module vs ONNX Runtime on the tiny model (max_abs <= 1e-4),
at an odd T (251) and a T whose patched length exceeds the 128 window (301), plus I/O names and dtypes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from tools.onnx_export.acestep import (acestep_host_config, export_acestep_graphs, load_acestep_checkpoint,
                                       write_tiny_acestep)
from tools.onnx_export.acestep.export import IO_NAMES, _wrapper, example_inputs

ort = pytest.importorskip("onnxruntime")

CASES = [
    dict(b=2, t=251, lt=7, ll=9, t5=13),                  # odd T, padded text/lyrics in item 1
    dict(b=1, t=301, lt=20, ll=150, t5=60, n_ref=1),      # S = 151 > 128: band active in the DiT
    dict(b=3, t=300, lt=5, ll=140, t5=7, n_ref=5, seed=3),  # 5 timbre clips over 3 items (2, 2, 1)
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("acestep_onnx")
    write_tiny_acestep(root / "ckpt", seed=11, text_hidden_dim=64)
    model = load_acestep_checkpoint(root / "ckpt")
    files = export_acestep_graphs(model, root / "out", opset=18)
    return model, root / "out", files


@pytest.fixture(scope="module")
def sessions(exported):
    _, out, files = exported
    return {g: ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"]) for g, f in files.items()}


def test_export_files_and_io(exported):
    model, out, files = exported
    assert files == {"condition_encoder": "condition_encoder.onnx", "dit_cross_kv": "dit_cross_kv.onnx",
                     "dit_decoder": "dit_decoder.onnx",
                     "audio_detokenizer": "audio_detokenizer.onnx", "audio_tokenizer": "audio_tokenizer.onnx"}
    np.testing.assert_array_equal(np.load(out / "null_condition_emb.npy"), model.null_condition_emb.detach().numpy())
    int64 = onnx.TensorProto.INT64
    want_int = {"text_attention_mask", "lyric_attention_mask", "refer_audio_order_mask", "encoder_attention_mask",
                "audio_codes"}
    for name, fname in files.items():
        m = onnx.load(str(out / fname))
        assert {o.domain: o.version for o in m.opset_import}.get("", None) == 18
        ins, outs = IO_NAMES[name]
        assert [i.name for i in m.graph.input] == ins
        assert [o.name for o in m.graph.output] == outs
        for v in list(m.graph.input) + list(m.graph.output):
            elem = v.type.tensor_type.elem_type
            assert elem == (int64 if v.name in want_int else onnx.TensorProto.FLOAT), (name, v.name)
            # batch is symbolic everywhere except the per-clip tensors
            if v.name not in ("refer_audio_packed", "refer_audio_order_mask"):
                assert v.type.tensor_type.shape.dim[0].dim_param, (name, v.name)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("graph", ["condition_encoder", "dit_cross_kv", "dit_decoder", "audio_detokenizer",
                                   "audio_tokenizer"])
def test_torch_vs_ort(exported, sessions, graph, case):
    model, out, files = exported
    sess = sessions[graph]
    args = example_inputs(model, **CASES[case])[graph]
    with torch.no_grad():
        ref = _wrapper(graph, model)(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = sess.run(None, {n: a.numpy() for n, a in zip(IO_NAMES[graph][0], args)})
    for name, g, r in zip(IO_NAMES[graph][1], got, ref):
        r = r.numpy()
        assert g.shape == r.shape and g.dtype == r.dtype, name
        if r.dtype == np.int64:
            np.testing.assert_array_equal(g, r, err_msg=name)
        else:
            assert float(np.abs(g - r).max()) <= 1e-4, (name, float(np.abs(g - r).max()))
    if graph == "condition_encoder":
        c = CASES[case]
        n_ref = c.get("n_ref", c["b"])
        m = max(sum(1 for n in range(n_ref) if n % c["b"] == b) for b in range(c["b"]))
        assert got[0].shape[1] == c["ll"] + m + c["lt"]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_cached_cross_kv_path_matches_full_dit(exported, sessions, case):
    """dit_cross_kv once, then dit_decoder (the driver's path) against the torch DiT that projects the
    encoder states itself at every call (the official forward): the cache changes no result."""
    model, _, _ = exported
    x, t, r, ctx, _ = example_inputs(model, **CASES[case])["dit_decoder"]
    (enc,) = example_inputs(model, **CASES[case])["dit_cross_kv"]
    with torch.no_grad():
        ref = model.decoder(x, t, r, ctx, enc).numpy()
    (kv,) = sessions["dit_cross_kv"].run(None, {"encoder_hidden_states": enc.numpy()})
    cfg = model.config
    assert kv.shape == (x.shape[0], 2 * cfg.num_hidden_layers, cfg.num_key_value_heads, enc.shape[1], cfg.head_dim)
    for step_t in (t, 0.5 * t):  # the same cache serves every step
        with torch.no_grad():
            ref = model.decoder(x, step_t, step_t, ctx, enc).numpy()
        (v,) = sessions["dit_decoder"].run(None, {"hidden_states": x.numpy(), "timestep": step_t.numpy(),
                                                   "timestep_r": step_t.numpy(), "context_latents": ctx.numpy(),
                                                   "cross_kv": kv})
        assert np.abs(ref).max() > 1e-2
        assert float(np.abs(v - ref).max()) <= 1e-4, float(np.abs(v - ref).max())
    # the cache really carries the encoder side: another encoder state gives another velocity
    (kv2,) = sessions["dit_cross_kv"].run(None, {"encoder_hidden_states": (enc + 1.0).numpy()})
    (v2,) = sessions["dit_decoder"].run(None, {"hidden_states": x.numpy(), "timestep": (0.5 * t).numpy(),
                                                "timestep_r": (0.5 * t).numpy(), "context_latents": ctx.numpy(),
                                                "cross_kv": kv2})
    assert float(np.abs(v2 - v).max()) > 1e-3


def test_dit_attention_is_fused_or_banded(exported):
    """dit_decoder: unmasked attention (full self-attention layers, cross-attention) is one
    com.microsoft.MultiHeadAttention each; the sliding layers' band is the blockwise Softmax over 3·window
    keys — no Softmax over [S, S] scores is left in the step graph."""
    model, out, _ = exported
    cfg = model.config
    ops = [n.op_type for n in onnx.load(str(out / "dit_decoder.onnx")).graph.node]
    sliding = sum(t == "sliding_attention" for t in cfg.layer_types[:cfg.num_hidden_layers])
    assert ops.count("MultiHeadAttention") == (cfg.num_hidden_layers - sliding) + cfg.num_hidden_layers
    assert ops.count("Softmax") == sliding


def test_host_config(exported):
    model, _, _ = exported
    hc = acestep_host_config(model)
    assert hc["latent_dim"] == 64 and hc["patch_size"] == 2 and hc["sliding_window"] == 128
    assert hc["hop_length"] == 1920 and hc["sample_rate"] == 48000 and hc["latent_rate_hz"] == 25
    assert hc["fsq_levels"] == [8, 8, 8, 5, 5, 5] and hc["fsq_codebook_size"] == 64000
    assert hc["timbre_fix_frame"] == 750 and hc["is_turbo"] is True and hc["pool_window_size"] == 5
    assert hc["silence_latent_frames"] == 15000


def test_opset_is_pinned(exported, tmp_path):
    model, _, _ = exported
    with pytest.raises(ValueError, match="opset"):
        export_acestep_graphs(model, tmp_path, opset=17)
