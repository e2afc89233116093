"""5 Hz LM exporter: tiny checkpoint → strict loader → lm_prefill / lm_decode ONNX, checked against
`transformers` Qwen3ForCausalLM (loaded by HF's own `from_pretrained` from the same directory).

Run: python3 -m pytest -q tools/onnx_export/tests/test_lm.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.onnx_export import lm, lm_gqa

TOL = 1e-4
SEED = 1234


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from tools import make_qwen_tokenizer as mk

    out = tmp_path_factory.mktemp("lm_tokenizer")
    mk.build_tokenizer(out, audio_codes=True, append_eos=False)
    return out


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory, tokenizer_dir) -> Path:
    d = tmp_path_factory.mktemp("acestep-5Hz-lm-tiny")
    lm.write_tiny_lm(d, SEED, tokenizer_dir)
    return d


@pytest.fixture(scope="module")
def hf_tokenizer(ckpt_dir):
    """The checkpoint's tokenizer as `transformers` loads it (slow with 65k added tokens: load once)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ckpt_dir)


@pytest.fixture(scope="module")
def hf_model(ckpt_dir):
    """The reference: HF's own loader on the same directory."""
    from transformers import Qwen3ForCausalLM

    return Qwen3ForCausalLM.from_pretrained(ckpt_dir, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def model(ckpt_dir):
    return lm.load_lm_checkpoint(ckpt_dir)


def _sessions(out: Path, files: dict) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return {
        name: ort.InferenceSession(str(out / f), opts, providers=["CPUExecutionProvider"]) for name, f in files.items()
    } | {"files": files, "dir": out}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, ckpt_dir):
    """What the package ships: lm_gqa.write_lm_graphs (ORT fused operators)."""
    out = tmp_path_factory.mktemp("lm_onnx_gqa")
    return _sessions(out, lm_gqa.write_lm_graphs(ckpt_dir, out))


@pytest.fixture(scope="module")
def torch_graphs(tmp_path_factory, model):
    """The plain-operator baseline (lm.export_lm_graphs, torch dynamo export), same contract."""
    out = tmp_path_factory.mktemp("lm_onnx_torch")
    # External data (what the real, multi-GB LMs use): both graphs share one weights file.
    return _sessions(out, lm.export_lm_graphs(model, out, opset=18, external_data=True))


# The contract tests run on both graph makers; the rest on the shipped graphs only.
@pytest.fixture(params=["gqa", "torch"])
def any_graphs(request):
    return request.getfixturevalue("graphs" if request.param == "gqa" else "torch_graphs")


def _hf_logits(hf_model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return hf_model(torch.from_numpy(ids)).logits.numpy()


def _tokens(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, lm.VOCAB_SIZE, size=(1, n), dtype=np.int64)


def _prefill(sess, ids, mask, pos):
    return sess.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos})


def _decode(sess, n_layers, tok, mask, pos, kv):
    feeds = {"input_ids": tok, "attention_mask": mask, "position_ids": pos}
    feeds |= dict(zip(lm.kv_names("past", n_layers), kv))
    return sess.run(None, feeds)


def _left_pad(seqs: list[np.ndarray]):
    """The host's batching rule (docs/io_contract_lm.md): left padding, per-sequence positions from 0."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), lm.PAD_TOKEN_ID, np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = s
        mask[r, width - len(s) :] = 1
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return ids, mask, pos


# ------------------------------------------------------------------------------------------------
# Tiny checkpoint and loader
# ------------------------------------------------------------------------------------------------


def test_tiny_checkpoint_has_official_layout(ckpt_dir, tokenizer_dir):
    from safetensors import safe_open

    cfg = json.loads((ckpt_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
    # Spec §5.1 shared values.
    assert cfg["vocab_size"] == 217204 and cfg["rope_theta"] == 1e6 and cfg["rms_norm_eps"] == 1e-6
    assert cfg["tie_word_embeddings"] is True
    with safe_open(str(ckpt_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        dtypes = {f.get_tensor(k).dtype for k in keys}
        emb_shape = tuple(f.get_tensor("model.embed_tokens.weight").shape)
    assert dtypes == {torch.bfloat16}
    assert "lm_head.weight" not in keys  # tied head
    assert emb_shape == (217204, 64)
    assert "model.norm.weight" in keys
    for i in range(cfg["num_hidden_layers"]):  # spec §2.3: 11 keys per layer
        assert len([k for k in keys if k.startswith(f"model.layers.{i}.")]) == 11
    assert len(keys) == 2 + 11 * cfg["num_hidden_layers"]
    assert (ckpt_dir / "tokenizer.json").read_bytes() == (tokenizer_dir / "tokenizer.json").read_bytes()
    # Same seed → same bytes; another seed → other weights.
    other = ckpt_dir.parent / "again"
    lm.write_tiny_lm(other, SEED, None)
    assert (other / "model.safetensors").read_bytes() == (ckpt_dir / "model.safetensors").read_bytes()
    lm.write_tiny_lm(other, SEED + 1, None)
    assert (other / "model.safetensors").read_bytes() != (ckpt_dir / "model.safetensors").read_bytes()


def test_tiny_tokenizer_loads_with_lm_ids(hf_tokenizer):
    tok = hf_tokenizer
    ids = tok.encode("<|im_start|>assistant\n<|audio_code_5|><|audio_code_63999|><|im_end|>", add_special_tokens=False)
    assert ids[0] == 151644 and ids[-1] == 151645
    assert ids[-3:-1] == [151669 + 5, 151669 + 63999]


def test_strict_load_equals_hf_from_pretrained(model, hf_model):
    ours = model.state_dict()
    ref = hf_model.state_dict()
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k].dtype == torch.float32
        assert torch.equal(ours[k], ref[k]), k
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    ids = _tokens(13, 0)
    with torch.no_grad():
        a = model(torch.from_numpy(ids)).logits.numpy()
    b = _hf_logits(hf_model, ids)
    assert np.abs(a - b).max() <= TOL


def test_host_config(model, ckpt_dir):
    hc = lm.lm_host_config(model)
    assert lm.lm_host_config(lm.read_lm_config(ckpt_dir)) == hc  # what the package writes, without torch
    assert hc["num_layers"] == 2 and hc["num_kv_heads"] == 2 and hc["head_dim"] == 16
    assert hc["vocab_size"] == 217204 and hc["eos_token_id"] == 151645 and hc["pad_token_id"] == 151643
    assert hc["audio_code_base"] == 151669 and hc["num_audio_codes"] == 64000
    assert hc["max_position_embeddings"] == 4096 and hc["padding_side"] == "left"


def _copy_ckpt(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(src / name, dst / name)
    return dst


def _rewrite_weights(d: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / "model.safetensors"))
    save_file(edit(tensors), str(d / "model.safetensors"))


def test_loader_renamed_key(ckpt_dir, tmp_path):
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")

    def rename(t):
        t["model.layers.1.mlp.gate_proj.weightx"] = t.pop("model.layers.1.mlp.gate_proj.weight")
        return t

    _rewrite_weights(d, rename)
    with pytest.raises(lm.LmCheckpointError, match=r"missing key 'model\.layers\.1\.mlp\.gate_proj\.weight'"):
        lm.load_lm_checkpoint(d)


def test_loader_unexpected_key(ckpt_dir, tmp_path):
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    _rewrite_weights(d, lambda t: t | {"model.layers.0.extra.weight": torch.zeros(3, dtype=torch.bfloat16)})
    with pytest.raises(lm.LmCheckpointError, match=r"unexpected key 'model\.layers\.0\.extra\.weight'"):
        lm.load_lm_checkpoint(d)


def test_loader_wrong_shape(ckpt_dir, tmp_path):
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    _rewrite_weights(
        d, lambda t: t | {"model.layers.0.self_attn.k_proj.weight": torch.zeros(16, 64, dtype=torch.bfloat16)}
    )
    with pytest.raises(lm.LmCheckpointError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \[16, 64\], expected \[32, 64\]"):
        lm.load_lm_checkpoint(d)


def test_loader_shapes_come_from_config(ckpt_dir, tmp_path):
    """A config that disagrees with the weights is caught by shape, naming the first mismatching key."""
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(lm.LmCheckpointError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \[128, 64\], expected \[96, 64\]"):
        lm.load_lm_checkpoint(d)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"model_type": "llama"}, r"model_type 'llama', expected 'qwen3'"),
        ({"head_dim": None}, r"config key 'head_dim' is missing"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, r"rope_scaling .* is not supported"),
        ({"use_sliding_window": True}, r"use_sliding_window=true is not supported"),
        ({"layer_types": ["full_attention", "sliding_attention"]}, r"layer_types\[1\] is 'sliding_attention'"),
        ({"layer_types": ["full_attention"]}, r"layer_types has 1 entries, num_hidden_layers is 2"),
    ],
)
def test_loader_rejects_unsupported_config(ckpt_dir, tmp_path, edit, message):
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    for k, v in edit.items():
        if v is None:
            del cfg[k]
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(lm.LmCheckpointError, match=message):
        lm.load_lm_checkpoint(d)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_loader_missing_file(ckpt_dir, tmp_path, name):
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    (d / name).unlink()
    with pytest.raises(FileNotFoundError, match=str(d / name).replace(".", r"\.")):
        lm.load_lm_checkpoint(d)


def test_loader_accepts_missing_model_prefix(ckpt_dir, tmp_path, hf_model):
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    _rewrite_weights(d, lambda t: {k.removeprefix("model."): v for k, v in t.items()})
    m = lm.load_lm_checkpoint(d)
    ref = hf_model.state_dict()
    for k, v in m.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_loader_untied_head(ckpt_dir, tmp_path):
    from transformers import Qwen3ForCausalLM

    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    gen = torch.Generator().manual_seed(7)
    head = (0.5 * torch.randn(217204, 64, generator=gen)).to(torch.bfloat16)
    _rewrite_weights(d, lambda t: t | {"lm_head.weight": head})
    m = lm.load_lm_checkpoint(d)
    assert torch.equal(m.lm_head.weight, head.float())
    assert not torch.equal(m.lm_head.weight, m.model.embed_tokens.weight)
    ref = Qwen3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    ids = _tokens(9, 3)
    with torch.no_grad():
        assert np.abs(m(torch.from_numpy(ids)).logits.numpy() - _hf_logits(ref, ids)).max() <= TOL
    # An untied config whose checkpoint has no head names the missing key.
    _rewrite_weights(d, lambda t: {k: v for k, v in t.items() if k != "lm_head.weight"})
    with pytest.raises(lm.LmCheckpointError, match=r"missing key 'lm_head\.weight'"):
        lm.load_lm_checkpoint(d)


# ------------------------------------------------------------------------------------------------
# ONNX graphs vs the HF model
# ------------------------------------------------------------------------------------------------


def test_graph_io_names_and_dims(any_graphs):
    n = 2
    pre, dec = any_graphs["lm_prefill"], any_graphs["lm_decode"]
    assert [i.name for i in pre.get_inputs()] == ["input_ids", "attention_mask", "position_ids"]
    assert [o.name for o in pre.get_outputs()] == ["logits", *lm.kv_names("present", n)]
    assert [i.name for i in dec.get_inputs()] == ["input_ids", "attention_mask", "position_ids", *lm.kv_names("past", n)]
    assert [o.name for o in dec.get_outputs()] == ["logits", *lm.kv_names("present", n)]
    assert pre.get_inputs()[0].shape == ["batch", "seq"] and pre.get_inputs()[0].type == "tensor(int64)"
    assert pre.get_outputs()[0].shape == ["batch", 217204]
    assert pre.get_outputs()[1].shape == ["batch", 2, "seq", 16]
    assert dec.get_inputs()[0].shape == ["batch", 1]
    assert dec.get_inputs()[1].shape == ["batch", "total"]
    assert dec.get_inputs()[3].shape == ["batch", 2, "past", 16] and dec.get_inputs()[3].type == "tensor(float)"
    assert dec.get_outputs()[1].shape == ["batch", 2, "total", 16]


def test_graphs_share_one_weights_file(any_graphs, model):
    import onnx

    graphs = any_graphs
    out = graphs["dir"]
    assert sorted(p.name for p in out.iterdir()) == ["lm_decode.onnx", "lm_prefill.onnx", "lm_weights.onnx.data"]
    for f in graphs["files"].values():
        m = onnx.load(str(out / f), load_external_data=False)
        locations = {
            e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"
        }
        assert locations == {"lm_weights.onnx.data"}
    # One copy of the weights (the tied embedding/head once), not one per graph.
    n_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert n_bytes <= (out / "lm_weights.onnx.data").stat().st_size <= 1.1 * n_bytes


@pytest.mark.parametrize("length", [6, 37])
def test_prefill_matches_hf(graphs, hf_model, length):
    ids = _tokens(length, length)
    out = _prefill(graphs["lm_prefill"], ids, np.ones_like(ids), np.arange(length, dtype=np.int64)[None])
    assert out[0].shape == (1, 217204)
    assert np.abs(out[0] - _hf_logits(hf_model, ids)[:, -1]).max() <= TOL
    # The presents are HF's cache: K after k_norm + RoPE, V as projected, [B, kv_heads, L, head_dim].
    with torch.no_grad():
        cache = hf_model(torch.from_numpy(ids), use_cache=True).past_key_values
    for i in range(2):
        assert np.abs(out[1 + 2 * i] - cache.layers[i].keys.numpy()).max() <= TOL
        assert np.abs(out[2 + 2 * i] - cache.layers[i].values.numpy()).max() <= TOL


@pytest.mark.parametrize("prompt_len", [1, 5, 2000])
def test_prefill_then_decode_reproduces_full_sequence(graphs, hf_model, prompt_len):
    """Teacher-forced: prefill `prompt_len` tokens, then decode the rest one by one; the logits at every
    position equal HF's full-sequence forward (2000: RoPE and masking far into the 4096 context)."""
    total = prompt_len + (23 if prompt_len < 100 else 6)
    ids = _tokens(total, 100 + prompt_len)
    ref = _hf_logits(hf_model, ids)[0]
    out = _prefill(
        graphs["lm_prefill"], ids[:, :prompt_len], np.ones((1, prompt_len), np.int64), np.arange(prompt_len)[None]
    )
    got = [out[0][0]]
    kv = out[1:]
    for t in range(prompt_len, total):
        out = _decode(
            graphs["lm_decode"], 2, ids[:, t : t + 1], np.ones((1, t + 1), np.int64), np.array([[t]], np.int64), kv
        )
        got.append(out[0][0])
        kv = out[1:]
        assert kv[0].shape == (1, 2, t + 1, 16)
    err = np.abs(np.stack(got) - ref[prompt_len - 1 :]).max()
    assert err <= TOL, err


def test_greedy_generation_matches_hf_generate(graphs, hf_model):
    n_new = 20
    prompt = _tokens(7, 42)
    with torch.no_grad():
        ref = hf_model.generate(
            torch.from_numpy(prompt),
            attention_mask=torch.ones(1, 7, dtype=torch.long),
            do_sample=False,
            max_new_tokens=n_new,
            min_new_tokens=0,
            eos_token_id=lm.EOS_TOKEN_ID,
            pad_token_id=lm.PAD_TOKEN_ID,
        )[0, 7:].tolist()
    out = _prefill(graphs["lm_prefill"], prompt, np.ones_like(prompt), np.arange(7)[None])
    got: list[int] = []
    length = 7
    while True:
        tok = int(np.argmax(out[0][0]))
        got.append(tok)
        if tok == lm.EOS_TOKEN_ID or len(got) == n_new:
            break
        out = _decode(
            graphs["lm_decode"],
            2,
            np.array([[tok]], np.int64),
            np.ones((1, length + 1), np.int64),
            np.array([[length]], np.int64),
            out[1:],
        )
        length += 1
    assert got == ref
    assert len(set(got)) > 1  # the tiny model does not just repeat one token


def _left_padded_cfg_run(graphs, n_layers, cond, uncond, appended):
    """Cond and uncond prompts as one left-padded batch of 2 (per-row positions from 0), prefill, then one
    decode step per appended token, carrying the presents as the next pasts. Returns each row's logits
    (one per step, prefill first), the final cache and the padding width of each row."""
    ids, mask, pos = _left_pad([cond, uncond])
    out = _prefill(graphs["lm_prefill"], ids, mask, pos)
    rows = [[out[0][0]], [out[0][1]]]
    kv = out[1:]
    assert all(np.isfinite(t).all() for t in kv)  # padded rows stay finite
    next_pos = pos[:, -1:] + 1
    for tok in appended:
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
        out = _decode(graphs["lm_decode"], n_layers, np.full((2, 1), tok, np.int64), mask, next_pos, kv)
        assert out[0].shape == (2, lm.VOCAB_SIZE)
        assert out[1].shape == (2, 2, mask.shape[1], 16)
        kv = out[1:]
        rows[0].append(out[0][0])
        rows[1].append(out[0][1])
        next_pos = next_pos + 1
    pads = [ids.shape[1] - len(cond), ids.shape[1] - len(uncond)]
    return rows, kv, pads


@pytest.mark.parametrize("cond_len, uncond_len", [(11, 4), (3, 17)])
def test_cfg_batch_left_padded_matches_each_alone(any_graphs, hf_model, cond_len, uncond_len):
    """The LM graph parity test (issue 15): a CFG pair of prompts of different lengths as batch 2 (left
    padding, per-sequence positions from 0), prefill + 12 decode steps carrying the KV cache, the same
    token appended to both rows. Each row's logits at every step equal `transformers` Qwen3ForCausalLM
    run on that sequence alone, unpadded; the carried cache equals HF's cache of that sequence."""
    cond, uncond = _tokens(cond_len, 7)[0], _tokens(uncond_len, 8)[0]
    appended = _tokens(12, 9)[0]
    rows, kv, pads = _left_padded_cfg_run(any_graphs, 2, cond, uncond, appended)
    for r, prompt in enumerate((cond, uncond)):
        full = torch.from_numpy(np.concatenate([prompt, appended])[None])
        with torch.no_grad():
            ref = hf_model(full, use_cache=True)
        err = np.abs(np.stack(rows[r]) - ref.logits.numpy()[0, len(prompt) - 1 :]).max()
        assert err <= TOL, (r, err)
        # After the last step the cache holds the whole sequence (behind the row's padding).
        for i in range(2):
            for got, want in ((kv[2 * i], ref.past_key_values.layers[i].keys), (kv[2 * i + 1], ref.past_key_values.layers[i].values)):
                cache_err = np.abs(got[r, :, pads[r] :] - want.numpy()[0]).max()
                assert cache_err <= TOL, (r, i, cache_err)


def test_chat_prompt_through_graphs(graphs, hf_model, hf_tokenizer):
    """The spec §5.2 phase-1 prompt, tokenized by the checkpoint's tokenizer without special tokens."""
    tok = hf_tokenizer
    text = (
        "<|im_start|>system\n# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
        "<|im_end|>\n<|im_start|>user\n# Caption\nlofi piano\n\n# Lyric\n[Instrumental]\n<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = np.array([tok.encode(text, add_special_tokens=False)], np.int64)
    assert ids[0, 0] == 151644 and ids[0, -1] == 198  # "\n" after "assistant"
    out = _prefill(graphs["lm_prefill"], ids, np.ones_like(ids), np.arange(ids.shape[1])[None])
    assert np.abs(out[0] - _hf_logits(hf_model, ids)[:, -1]).max() <= TOL


# ------------------------------------------------------------------------------------------------
# The fused-operator graphs (lm_gqa): streamed weights, strict loading, weight-only int8/int4
# ------------------------------------------------------------------------------------------------


def test_gqa_graphs_use_the_fused_operators(tmp_path, ckpt_dir):
    import onnx

    lm_gqa.write_lm_graphs(ckpt_dir, tmp_path)
    ops = {(n.domain or "", n.op_type) for n in onnx.load(str(tmp_path / "lm_decode.onnx"), load_external_data=False).graph.node}
    assert ("com.microsoft", "GroupQueryAttention") in ops and ("com.microsoft", "RotaryEmbedding") in ops
    assert ("com.microsoft", "SkipSimplifiedLayerNormalization") in ops
    assert ("", "Gemm") in ops  # the tied head reads the embedding table: no second copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm_decode.onnx", "lm_prefill.onnx", "lm_weights.onnx.data"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t | {"model.layers.0.extra.weight": torch.zeros(3, dtype=torch.bfloat16)}, r"unexpected key 'model\.layers\.0\.extra\.weight'"),
        (lambda t: {k: v for k, v in t.items() if k != "model.norm.weight"}, r"missing key 'model\.norm\.weight'"),
        (
            lambda t: t | {"model.layers.1.self_attn.v_proj.weight": torch.zeros(16, 64, dtype=torch.bfloat16)},
            r"'model\.layers\.1\.self_attn\.v_proj\.weight' has shape \[16, 64\], expected \[32, 64\]",
        ),
    ],
)
def test_gqa_writer_loads_strictly(ckpt_dir, tmp_path, edit, message):
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    _rewrite_weights(d, edit)
    with pytest.raises(lm.LmCheckpointError, match=message):
        lm_gqa.write_lm_graphs(d, tmp_path / "out")


def test_gqa_writer_accepts_missing_model_prefix(ckpt_dir, tmp_path, hf_model):
    d = _copy_ckpt(ckpt_dir, tmp_path / "c")
    _rewrite_weights(d, lambda t: {k.removeprefix("model."): v for k, v in t.items()})
    g = _sessions(tmp_path / "out", lm_gqa.write_lm_graphs(d, tmp_path / "out"))
    ids = _tokens(9, 5)
    out = _prefill(g["lm_prefill"], ids, np.ones_like(ids), np.arange(9)[None])
    assert np.abs(out[0] - _hf_logits(hf_model, ids)[:, -1]).max() <= TOL


@pytest.mark.parametrize("bits", [4, 8])
def test_nbits_quantization_round_trip(bits):
    """Blockwise symmetric RTN: every weight is within half a step of its block's scale, and K that is not
    a multiple of the block is padded, not wrapped."""
    w = np.random.default_rng(bits).standard_normal((100, 24)).astype(np.float32)
    b, scales = lm_gqa.quantize_nbits(w, bits, 32)
    assert b.dtype == np.uint8 and b.shape == (24, 4, 32 * bits // 8) and scales.shape == (24 * 4,)
    back = lm_gqa.dequantize_nbits(b, scales, bits, 100, 32)
    step = np.repeat(scales.reshape(24, 4), 32, axis=1)[:, :100].T
    assert np.all(np.abs(back - w) <= step / 2 + 1e-7)
    # The scale is the block's max |w| over the largest positive level.
    blocks = np.zeros((24, 128), np.float32)
    blocks[:, :100] = w.T
    np.testing.assert_allclose(scales, np.abs(blocks.reshape(24, 4, 32)).max(axis=2).reshape(-1) / (2 ** (bits - 1) - 1), rtol=1e-6)


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_weight_only_profiles_match_dequantized_reference(ckpt_dir, tmp_path, weights):
    """MatMulNBits graphs equal an fp32 HF model whose projection and head weights are replaced by their
    dequantized values (numpy): the layout (block order, nibble order, default zero point) is right. The
    cache and left-padded CFG batching stay as in the fp32 graphs."""
    bits = 8 if weights == "int8" else 4
    # accuracy_level 0: fp32 activations, so the only difference from fp32 is the weights' rounding.
    g = _sessions(tmp_path, lm_gqa.write_lm_graphs(ckpt_dir, tmp_path, weights=weights, accuracy_level=0))
    ref_model = lm.load_lm_checkpoint(ckpt_dir)
    with torch.no_grad():
        for name, p in ref_model.named_parameters():
            if p.ndim == 2 and "embed_tokens" not in name:
                w = p.numpy().T
                q, s = lm_gqa.quantize_nbits(w, bits, lm_gqa.DEFAULT_BLOCK_SIZE)
                p.copy_(torch.from_numpy(lm_gqa.dequantize_nbits(q, s, bits, w.shape[0], lm_gqa.DEFAULT_BLOCK_SIZE).T.copy()))
        emb = ref_model.model.embed_tokens.weight.numpy()
        q, s = lm_gqa.quantize_nbits(emb.T, bits, lm_gqa.DEFAULT_BLOCK_SIZE)
        head = torch.from_numpy(lm_gqa.dequantize_nbits(q, s, bits, emb.shape[1], lm_gqa.DEFAULT_BLOCK_SIZE).T.copy())
    cond, uncond, appended = _tokens(9, 11)[0], _tokens(5, 12)[0], _tokens(8, 13)[0]
    rows, _, _ = _left_padded_cfg_run(g, 2, cond, uncond, appended)
    for r, prompt in enumerate((cond, uncond)):
        full = torch.from_numpy(np.concatenate([prompt, appended])[None])
        with torch.no_grad():
            ref = (ref_model.model(full).last_hidden_state[0] @ head.T).numpy()[len(prompt) - 1 :]
        assert np.abs(np.stack(rows[r]) - ref).max() <= TOL


def test_gqa_writer_rejects_bad_options(ckpt_dir, tmp_path):
    with pytest.raises(ValueError, match=r"LM weights 'int3'"):
        lm_gqa.write_lm_graphs(ckpt_dir, tmp_path, weights="int3")
    with pytest.raises(ValueError, match=r"block_size 48"):
        lm_gqa.write_lm_graphs(ckpt_dir, tmp_path, block_size=48)


@pytest.mark.parametrize(
    "size, widths",
    # Spec §5.1: layers, hidden, intermediate, heads q/kv, head_dim.
    [("0.6B", (28, 1024, 3072, 16, 8, 128)), ("1.7B", (28, 2048, 6144, 16, 8, 128))],
)
def test_full_size_lm_configs_follow_the_spec(size, widths):
    cfg = lm.lm_config(size)
    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    assert tuple(cfg[k] for k in keys) == widths
    assert cfg["vocab_size"] == 217204 and cfg["rope_theta"] == 1e6 and cfg["tie_word_embeddings"] is True
    assert cfg["layer_types"] == ["full_attention"] * 28
    with pytest.raises(ValueError, match=r"LM size '4B'"):
        lm.lm_config("4B")
