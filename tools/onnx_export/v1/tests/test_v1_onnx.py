"""Module parity: every graph of the tiny v1 package (ONNX Runtime) vs the spec-faithful torch modules
loaded from the tiny checkpoint, at odd lengths, batch 1, padded masks and with the ERG scales."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tools.onnx_export.v1.export import GRAPH_FILES, IO_NAMES, example_inputs

ort = pytest.importorskip("onnxruntime")

CASES = {
    "b2_t13_padded": dict(b=2, t=13, lt=6, ll=9),
    "b1_t8_short": dict(b=1, t=8, lt=2, ll=2),
    "b3_t31_erg": dict(b=3, t=31, lt=11, ll=20, erg=True, seed=3),
}
# dcae_decoder's graph maps the decoder output y to mel = 7·y + const (spec §9): compare in decoder units
UNIT = {"dcae_decoder": 7.0}
TOL = 1e-5
MAX_ABS: dict[str, float] = {}


@pytest.fixture(scope="module")
def sessions(v1_package):
    def make(name):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        return ort.InferenceSession(str(v1_package / GRAPH_FILES[name]), opts, providers=["CPUExecutionProvider"])

    return {name: make(name) for name in GRAPH_FILES}


def _run(sessions, v1_models, graph, args):
    _, mods = v1_models
    with torch.no_grad():
        ref = mods[graph](*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = sessions[graph].run(None, {n: a.numpy() for n, a in zip(IO_NAMES[graph][0], args)})
    return got, [r.numpy() for r in ref]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("graph", list(GRAPH_FILES))
def test_graph_matches_torch_module(sessions, v1_models, graph, case):
    models, _ = v1_models
    args = example_inputs(models, **CASES[case])[graph]
    got, ref = _run(sessions, v1_models, graph, args)
    for name, g, r in zip(IO_NAMES[graph][1], got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype, (graph, name, g.shape, r.shape)
        assert np.isfinite(g).all(), (graph, name)
        if r.dtype == np.int64:
            np.testing.assert_array_equal(g, r, err_msg=f"{graph}.{name}")
            continue
        err = float(np.abs(g - r).max()) / UNIT.get(graph, 1.0)
        MAX_ABS[graph] = max(MAX_ABS.get(graph, 0.0), err)
        assert err <= TOL, f"{graph}.{name} [{case}]: max_abs {err:.3g} > {TOL}"


def test_erg_branch_changes_the_conditioned_graphs(sessions, v1_models):
    """The ERG scales reach the graphs: ERG output differs from the all-ones output (and matches torch,
    checked above), for the text encoder, the lyric conformer and the DiT."""
    models, _ = v1_models
    plain = example_inputs(models, b=2, t=13, seed=5)
    erg = example_inputs(models, b=2, t=13, seed=5, erg=True)
    for graph in ("text_encoder", "condition_encoder", "dit_decoder"):
        a = sessions[graph].run(None, {n: x.numpy() for n, x in zip(IO_NAMES[graph][0], plain[graph])})[0]
        b = sessions[graph].run(None, {n: x.numpy() for n, x in zip(IO_NAMES[graph][0], erg[graph])})[0]
        assert np.abs(a - b).max() > 1e-3, graph


def test_text_encoder_erg_equals_official_forward_hooks(sessions, v1_checkpoints):
    """Spec §5: ERG tag = forward hooks multiplying block[i].layer[0].SelfAttention.q's output by 0.01 on a
    stock transformers UMT5EncoderModel; the graph's erg_q_scale input must give the same result."""
    from tools.onnx_export.v1.config import TEXT_ENCODER_DIR
    from tools.onnx_export.v1.text_encoder import load_umt5

    model = load_umt5(v1_checkpoints / TEXT_ENCODER_DIR)
    layers = [2, 3]  # the tiny 4-layer UMT5's mapping of the official [8, 9]
    hooks = [model.encoder.block[i].layer[0].SelfAttention.q.register_forward_hook(lambda m, i, o: o * 0.01)
             for i in layers]
    ids = torch.tensor([[5, 9, 33, 17, 1], [8, 12, 1, 0, 0]])
    mask = (torch.arange(5)[None] < torch.tensor([[5], [3]])).long()
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    for h in hooks:
        h.remove()
    scale = np.ones(model.config.num_layers, dtype=np.float32)
    scale[layers] = 0.01
    got = sessions["text_encoder"].run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                              "erg_q_scale": scale})[0]
    assert np.abs(got - want).max() <= TOL


def test_linear_attention_eps_survives_export(v1_package):
    """onnxscript's optimizer drops a literal `+ 1e-15` (0/0 = NaN on masked frames); the graphs must
    keep it as a tensor."""
    import onnx
    from onnx import numpy_helper

    for graph in ("dit_decoder", "dcae_decoder", "dcae_encoder"):
        m = onnx.load(str(v1_package / GRAPH_FILES[graph]))
        values = [numpy_helper.to_array(t) for t in m.graph.initializer]
        values += [numpy_helper.to_array(a.t) for n in m.graph.node if n.op_type == "Constant" for a in n.attribute
                   if a.name == "value"]
        assert any(v.dtype == np.float32 and v.size == 1 and float(v.reshape(-1)[0]) == np.float32(1e-15)
                   for v in values), graph


def test_manifest(v1_package):
    from tools.onnx_export.package import verify_package

    m = verify_package(v1_package)
    assert m["model_family"] == "ace-step-v1" and m["random_weights"] is True and m["opset"] == 18
    assert set(m["components"]) == set(GRAPH_FILES)
    for name, comp in m["components"].items():
        assert [i["name"] for i in comp["inputs"]] == IO_NAMES[name][0]
        assert [o["name"] for o in comp["outputs"]] == IO_NAMES[name][1]
    dit = {i["name"]: i for i in m["components"]["dit_decoder"]["inputs"]}
    assert dit["hidden_states"]["shape"] == ["batch", 8, 16, "frames"] and dit["timestep"]["dtype"] == "float32"
    assert dit["erg_q_scale"]["shape"] == [m["config"]["transformer"]["num_layers"]]
    cfg = m["config"]
    assert cfg["scheduler"]["sigma_min"] == pytest.approx(0.0029940119, abs=1e-9)
    # the grid shifts sigma_min once more (spec §6.2): terminal non-zero sigma 0.0089286
    s, smin = cfg["scheduler"]["shift"], np.float32(cfg["scheduler"]["sigma_min"])
    assert np.float32(s * smin / (1 + (s - 1) * smin)) == pytest.approx(0.0089286, abs=1e-7)
    assert cfg["scheduler"]["shift"] == 3.0 and cfg["defaults"]["infer_steps"] == 60
    assert cfg["defaults"]["guidance_scale"] == 15.0 and cfg["defaults"]["omega_scale"] == 10.0
    assert cfg["audio"]["samples_per_latent"] == 4096 and cfg["audio"]["output_sample_rate"] == 48000
    assert cfg["erg"]["dit_layers"] == [2, 3] and cfg["erg"]["text_encoder_layers"] == [2, 3]
    lyr = cfg["lyric_tokenizer"]
    assert (lyr["vocab_size"], lyr["start_id"], lyr["space_id"], lyr["stop_id"]) == (6693, 261, 2, 0)
    assert lyr["language_ids"]["en"] == 259 and lyr["language_ids"]["zh-cn"] == 5023
    assert lyr["structure_ids"]["[verse]"] == 6683 and lyr["structure_ids"]["[break]"] == 6692
    assert cfg["text_encoder"]["tokenizer_appends_eos"] is True
    assert set(m["tokenizers"]) == {"text", "lyric"}


def test_frame_math_through_the_graphs(sessions):
    """T latent frames -> 8T mel frames -> 4096·T samples at 44.1 kHz (spec §2)."""
    t = 9
    mel = sessions["dcae_decoder"].run(None, {"latents": np.zeros((1, 8, 16, t), np.float32)})[0]
    assert mel.shape == (1, 2, 128, 8 * t)
    audio = sessions["vocoder"].run(None, {"mel": mel.reshape(2, 128, 8 * t)})[0]
    assert audio.shape == (2, 4096 * t) and np.abs(audio).max() <= 1.0


def test_report_max_abs():
    """Prints the per-graph max_abs of the parity tests above (run with -s to see it)."""
    if MAX_ABS:
        print("\nv1 parity max_abs:", json.dumps({k: float(f"{v:.3g}") for k, v in sorted(MAX_ABS.items())}))


def test_no_lyrics_request_shapes(sessions, v1_models):
    """No lyrics: lyric ids [[0]] with mask [[0]] (spec §4), a one-token prompt; the exporter's dims start at
    2, the graphs must still run at length 1 (and frames = 2) and match torch."""
    models, mods = v1_models
    cond = (torch.randn(1, 1, models["transformer"].config.text_embedding_dim), torch.ones(1, 1, dtype=torch.int64),
            torch.zeros(1, models["transformer"].config.speaker_embedding_dim), torch.zeros(1, 1, dtype=torch.int64),
            torch.zeros(1, 1, dtype=torch.int64), torch.ones(models["transformer"].config.lyric_encoder["num_blocks"]))
    got, ref = _run(sessions, v1_models, "condition_encoder", cond)
    assert got[0].shape == (1, 3, models["transformer"].config.inner_dim) and got[1].tolist() == [[1, 1, 0]]
    assert np.abs(got[0] - ref[0]).max() <= TOL
    text = (torch.tensor([[1]]), torch.ones(1, 1, dtype=torch.int64), torch.ones(models["text_encoder"].config.num_layers))
    got, ref = _run(sessions, v1_models, "text_encoder", text)
    assert np.abs(got[0] - ref[0]).max() <= TOL
    dit = (torch.randn(1, 8, 16, 2), torch.ones(1, 2, dtype=torch.int64),
           torch.randn(1, 3, models["transformer"].config.inner_dim), torch.tensor([[1, 1, 0]]),
           torch.tensor([1000.0]), torch.ones(models["transformer"].config.num_layers))
    got, ref = _run(sessions, v1_models, "dit_decoder", dit)
    assert np.isfinite(got[0]).all() and np.abs(got[0] - ref[0]).max() <= TOL
