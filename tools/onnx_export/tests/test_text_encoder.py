"""Text encoder export: transformers Qwen3Model vs ONNX Runtime, the lyric embedding lookup vs the raw
checkpoint table, the EOS-appending tokenizer (spec §1.3 / §1.4), and the official key layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools.onnx_export import text_encoder as te

TOL = 1e-4
EOT = 151643
NEWLINE = 198


@pytest.fixture(scope="module")
def qwen(tiny_checkpoints):
    return te.load_text_encoder(tiny_checkpoints / te.TEXT_ENCODER_DIR)


def _path(manifest, pkg, name):
    return pkg / manifest["components"][name]["file"]


@pytest.mark.parametrize("length", [5, 16])
def test_text_encoder_matches_transformers_with_padding(qwen, manifest, tiny_package, ort_session, length):
    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(0, qwen.config.vocab_size, (2, length), generator=gen)
    mask = torch.ones(2, length, dtype=torch.int64)
    mask[1, length - 2:] = 0  # item 1 right-padded, as the official batch padding does
    with torch.no_grad():
        ref = qwen(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    sess = ort_session(_path(manifest, tiny_package, "text_encoder"))
    (out,) = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    assert out.shape == (2, length, qwen.config.hidden_size)
    assert np.abs(out - ref).max() <= TOL


@pytest.mark.parametrize("length", [1, 7])
def test_text_encoder_unmasked_single_item(qwen, manifest, tiny_package, ort_session, length):
    """The official call: B = 1, input_ids only (no mask) — an all-ones mask must give the same result."""
    ids = torch.randint(0, qwen.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        ref = qwen(input_ids=ids).last_hidden_state.numpy()
    sess = ort_session(_path(manifest, tiny_package, "text_encoder"))
    (out,) = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": np.ones((1, length), np.int64)})
    assert np.abs(out - ref).max() <= TOL


def test_text_encoder_is_causal(manifest, tiny_package, ort_session):
    sess = ort_session(_path(manifest, tiny_package, "text_encoder"))
    ids = np.array([[11, 22, 33, 44, 55, 66]], dtype=np.int64)
    changed = ids.copy()
    changed[0, 4] = 77
    mask = np.ones_like(ids)
    a = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    b = sess.run(None, {"input_ids": changed, "attention_mask": mask})[0]
    assert np.abs(a[:, :4] - b[:, :4]).max() == 0.0  # earlier positions cannot see position 4
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-4


@pytest.mark.parametrize("length", [3, 21])
def test_lyric_embedding_is_the_raw_table_lookup(tiny_checkpoints, manifest, tiny_package, ort_session, length):
    from safetensors.torch import load_file

    table = load_file(str(tiny_checkpoints / te.TEXT_ENCODER_DIR / te.WEIGHTS_FILE))["embed_tokens.weight"]
    table = table.float().numpy()
    rng = np.random.default_rng(length)
    ids = rng.integers(0, table.shape[0], size=(2, length), dtype=np.int64)
    ids[0, -1] = table.shape[0] - 1
    sess = ort_session(_path(manifest, tiny_package, "lyric_embedding"))
    (out,) = sess.run(None, {"input_ids": ids})
    assert out.shape == (2, length, table.shape[1])
    assert np.abs(out - table[ids]).max() <= TOL


def test_tokenizer_appends_eos(tiny_package, manifest, tiny_checkpoints):
    """Spec §1.3/§1.4: captions end `<eot> \\n <eot>`, lyrics end `<eot> <eot>` (post-processor EOS)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok_dir = tiny_package / manifest["tokenizers"]["text"]["dir"]
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    caption = ("# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\n"
               "calm piano\n\n# Metas\n- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 30 seconds\n"
               "<|endoftext|>\n")
    lyric = "# Languages\nen\n\n# Lyric\n[Instrumental]<|endoftext|>"
    assert tok.encode(caption).ids[-3:] == [EOT, NEWLINE, EOT]
    assert tok.encode(lyric).ids[-2:] == [EOT, EOT]
    hf = AutoTokenizer.from_pretrained(str(tiny_checkpoints / te.TEXT_ENCODER_DIR))
    assert hf(caption)["input_ids"] == tok.encode(caption).ids
    assert manifest["config"]["text_encoder"]["eos_token_id"] == EOT


def test_official_layout_keys_and_shapes():
    """Qwen3-Embedding-0.6B values of spec §1.3 give the key names and shapes of spec §2.3."""
    config = dict(te.TINY_CONFIG, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_window_layers=28)
    with torch.device("meta"):
        model = te.build_text_encoder(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["embed_tokens.weight"] == (151669, 1024)
    assert shapes["layers.27.self_attn.q_proj.weight"] == (2048, 1024)
    assert shapes["layers.0.self_attn.k_proj.weight"] == (1024, 1024)
    assert shapes["layers.0.self_attn.o_proj.weight"] == (1024, 2048)
    assert shapes["layers.3.self_attn.q_norm.weight"] == (128,)
    assert shapes["layers.3.mlp.down_proj.weight"] == (1024, 3072)
    assert shapes["norm.weight"] == (1024,)
    assert len(shapes) == 1 + 28 * 11 + 1


def test_manifest_records_measured_eos_behaviour(manifest, tmp_path):
    """`tokenizer_appends_eos` is measured from the file: true for the EOS tokenizer, false without it."""
    from tools.make_qwen_tokenizer import build_tokenizer

    assert manifest["config"]["text_encoder"]["tokenizer_appends_eos"] is True
    build_tokenizer(tmp_path / "plain", audio_codes=False, append_eos=False)
    assert te.tokenizer_appends_eos(tmp_path / "plain") is False
