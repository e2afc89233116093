"""Strict loading from the official layout, the tiny checkpoint's determinism and its lyric tokenizer."""
from __future__ import annotations

import filecmp
import shutil

import pytest
import torch

from tools.onnx_export.common import CheckpointError, StateDictMismatchError
from tools.onnx_export.v1.config import DCAE_DIR, TEXT_ENCODER_DIR, TRANSFORMER_DIR, VOCODER_DIR


def _loader(component):
    from tools.onnx_export.v1.dcae import load_dcae
    from tools.onnx_export.v1.text_encoder import load_umt5
    from tools.onnx_export.v1.transformer import load_transformer
    from tools.onnx_export.v1.vocoder import load_vocoder

    return {TRANSFORMER_DIR: load_transformer, DCAE_DIR: load_dcae, VOCODER_DIR: load_vocoder,
            TEXT_ENCODER_DIR: load_umt5}[component]


WEIGHTS = {TRANSFORMER_DIR: "diffusion_pytorch_model.safetensors", DCAE_DIR: "diffusion_pytorch_model.safetensors",
           VOCODER_DIR: "diffusion_pytorch_model.safetensors", TEXT_ENCODER_DIR: "model.safetensors"}
VICTIM = {TRANSFORMER_DIR: "lyric_encoder.encoders.1.self_attn.pos_bias_v",
          DCAE_DIR: "decoder.conv_in.weight", VOCODER_DIR: "head.ups.3.weight_g",
          TEXT_ENCODER_DIR: "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"}


@pytest.mark.parametrize("component", list(WEIGHTS))
def test_strict_loader_names_missing_unexpected_and_misshaped_keys(v1_checkpoints, tmp_path, component):
    from safetensors.torch import load_file, save_file

    src = v1_checkpoints / component
    dst = tmp_path / component
    shutil.copytree(src, dst)
    state = load_file(str(src / WEIGHTS[component]))
    victim = VICTIM[component]
    assert victim in state
    broken = dict(state)
    broken.pop(victim)
    broken["surplus.weight"] = torch.zeros(3)
    key = sorted(k for k in state if k != victim and state[k].dim() == 2)[0]
    broken[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1, dtype=state[key].dtype)
    save_file(broken, str(dst / WEIGHTS[component]))
    with pytest.raises(StateDictMismatchError) as err:
        _loader(component)(dst)
    msg = str(err.value)
    assert victim in msg and "surplus.weight" in msg and key in msg
    assert set(err.value.missing) == {victim} and err.value.unexpected == ["surplus.weight"]


def test_missing_folder_or_file_is_named(v1_checkpoints, tmp_path):
    from tools.onnx_export.v1.package import V1ExportOptions, export_v1_package

    ckpt = tmp_path / "ckpt"
    shutil.copytree(v1_checkpoints, ckpt)
    (ckpt / VOCODER_DIR / "config.json").unlink()
    with pytest.raises(CheckpointError, match="music_vocoder/config.json"):
        export_v1_package(V1ExportOptions(checkpoints=ckpt, out=tmp_path / "pkg", log=lambda _m: None))
    shutil.rmtree(ckpt / DCAE_DIR)
    with pytest.raises(CheckpointError, match="music_dcae_f8c8"):
        export_v1_package(V1ExportOptions(checkpoints=ckpt, out=tmp_path / "pkg", log=lambda _m: None))
    assert not (tmp_path / "pkg").exists()


def test_tiny_checkpoint_is_deterministic(v1_checkpoints, tmp_path):
    from tools.onnx_export.v1.tiny import write_tiny_v1

    write_tiny_v1(tmp_path / "again", 0)
    cmp = filecmp.dircmp(v1_checkpoints, tmp_path / "again")
    files = [p.relative_to(v1_checkpoints) for p in v1_checkpoints.rglob("*") if p.is_file()]
    assert files and all(filecmp.cmp(v1_checkpoints / f, tmp_path / "again" / f, shallow=False) for f in files)
    assert not cmp.left_only and not cmp.right_only
    write_tiny_v1(tmp_path / "other", 1)
    weights = TRANSFORMER_DIR + "/diffusion_pytorch_model.safetensors"
    assert not filecmp.cmp(v1_checkpoints / weights, tmp_path / "other" / weights, shallow=False)


def test_tiny_lyric_tokenizer_official_ids(v1_checkpoints):
    """Spec §4: 6693 ids, [START] 261, [SPACE] 2, language tags and structure tags at their official ids;
    the official tokenize_lyrics sequence shape ([START], then per line [lang] ... [SPACE])."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(v1_checkpoints / "lyric_tokenizer" / "vocab.json"))
    assert tok.get_vocab_size() == 6693
    for token, want in {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[en]": 259, "[START]": 261, "[zh-cn]": 5023,
                        "[ko]": 6152, "[hi]": 6680, "[start]": 6681, "[verse]": 6683, "[pre-chorus]": 6691,
                        "[break]": 6692}.items():
        assert tok.token_to_id(token) == want, token
    ids = tok.encode("[en]la[SPACE]la[SPACE]love").ids
    assert ids[0] == 259 and ids.count(2) == 2 and 1 not in ids
    assert tok.encode("[verse]").ids == [6683]


def test_main_cli_delegates_on_the_v1_layout(tmp_path, capsys):
    from tools.onnx_export.__main__ import main

    (tmp_path / "ckpt" / TRANSFORMER_DIR).mkdir(parents=True)
    assert main(["--checkpoints", str(tmp_path / "ckpt"), "--out", str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err
    assert "missing v1 checkpoint component directories" in err and "umt5-base" in err
