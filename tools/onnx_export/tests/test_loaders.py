"""Checkpoint loaders: strict key/shape matching with errors that name the problem, missing files,
the optional `model.` prefix, and deterministic tiny writers."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tools.onnx_export import text_encoder as te
from tools.onnx_export import vae as vae_mod
from tools.onnx_export.common import CheckpointError, MissingCheckpointFileError, StateDictMismatchError


@pytest.fixture()
def vae_copy(tiny_checkpoints, tmp_path):
    dst = tmp_path / "vae"
    shutil.copytree(tiny_checkpoints / "vae", dst)
    return dst


@pytest.fixture()
def te_copy(tiny_checkpoints, tmp_path):
    dst = tmp_path / te.TEXT_ENCODER_DIR
    shutil.copytree(tiny_checkpoints / te.TEXT_ENCODER_DIR, dst)
    return dst


def _rewrite(path, edit):
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_renamed_key_is_named(vae_copy):
    key = "decoder.block.1.res_unit2.conv1.weight_v"

    def rename(state):
        state["decoder.block.1.res_unit2.conv1.weight_vv"] = state.pop(key)

    _rewrite(vae_copy / vae_mod.WEIGHTS_FILE, rename)
    with pytest.raises(StateDictMismatchError) as info:
        vae_mod.load_vae(vae_copy)
    msg = str(info.value)
    assert key in msg and "missing" in msg
    assert "decoder.block.1.res_unit2.conv1.weight_vv" in msg and "unexpected" in msg
    assert str(vae_copy / vae_mod.WEIGHTS_FILE) in msg
    assert info.value.missing == [key]


def test_wrong_shape_is_named(te_copy):
    key = "layers.1.mlp.up_proj.weight"

    def reshape(state):
        state[key] = state[key][:-1].clone()

    _rewrite(te_copy / te.WEIGHTS_FILE, reshape)
    with pytest.raises(StateDictMismatchError) as info:
        te.load_text_encoder(te_copy)
    msg = str(info.value)
    assert key in msg and "[127, 64]" in msg and "[128, 64]" in msg
    assert not info.value.missing and not info.value.unexpected


@pytest.mark.parametrize("name", [vae_mod.WEIGHTS_FILE, vae_mod.CONFIG_FILE])
def test_missing_vae_file_is_named(vae_copy, name):
    (vae_copy / name).unlink()
    with pytest.raises(MissingCheckpointFileError) as info:
        vae_mod.load_vae(vae_copy)
    assert str(vae_copy / name) in str(info.value)


def test_missing_text_encoder_weights_is_named(te_copy):
    (te_copy / te.WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=str(te_copy / te.WEIGHTS_FILE)):
        te.load_text_encoder(te_copy)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(MissingCheckpointFileError, match=str(tmp_path / "nope")):
        vae_mod.load_vae(tmp_path / "nope")


def test_bad_json_config_is_named(vae_copy):
    (vae_copy / vae_mod.CONFIG_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        vae_mod.load_vae(vae_copy)


def test_model_prefix_is_stripped(te_copy, tiny_checkpoints):
    _rewrite(te_copy / te.WEIGHTS_FILE, lambda s: s.update({f"model.{k}": s.pop(k) for k in list(s)}))
    assert all(k.startswith("model.") for k in load_file(str(te_copy / te.WEIGHTS_FILE)))
    prefixed = te.load_text_encoder(te_copy)
    plain = te.load_text_encoder(tiny_checkpoints / te.TEXT_ENCODER_DIR)
    a, b = prefixed.state_dict(), plain.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_partial_prefix_is_an_error(te_copy):
    _rewrite(te_copy / te.WEIGHTS_FILE, lambda s: s.update({"model.norm.weight": s.pop("norm.weight")}))
    with pytest.raises(StateDictMismatchError, match="model.norm.weight"):
        te.load_text_encoder(te_copy)


def test_bf16_weights_load_as_fp32(tiny_checkpoints):
    raw = load_file(str(tiny_checkpoints / "vae" / vae_mod.WEIGHTS_FILE))
    assert {v.dtype for v in raw.values()} == {torch.bfloat16}
    model = vae_mod.load_vae(tiny_checkpoints / "vae")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    key = "decoder.conv1.weight_v"
    assert torch.equal(model.state_dict()[key], raw[key].float())


def test_tiny_writers_are_deterministic(tmp_path):
    for seed_dir in ("a", "b"):
        vae_mod.write_tiny_vae(tmp_path / seed_dir, seed=3)
    vae_mod.write_tiny_vae(tmp_path / "c", seed=4)
    for name in (vae_mod.WEIGHTS_FILE, vae_mod.CONFIG_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / vae_mod.WEIGHTS_FILE).read_bytes() != (tmp_path / "c" / vae_mod.WEIGHTS_FILE).read_bytes()
    te.write_tiny_text_encoder(tmp_path / "t1", seed=3, tokenizer_dir=None)
    te.write_tiny_text_encoder(tmp_path / "t2", seed=3, tokenizer_dir=None)
    assert (tmp_path / "t1" / te.WEIGHTS_FILE).read_bytes() == (tmp_path / "t2" / te.WEIGHTS_FILE).read_bytes()


def test_corrupt_safetensors_is_named(vae_copy):
    path = vae_copy / vae_mod.WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read VAE weights") as info:
        vae_mod.load_vae(vae_copy)
    assert str(path) in str(info.value)
