"""The model package: make_tiny → export → every graph in the manifest loads in onnxruntime, the
manifest's sha256/bytes/I-O match the files, nothing is unlisted, crash safety and CLI errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tools.onnx_export.package import ExportOptions, PackageError, export_package

from .conftest import ACESTEP_AVAILABLE, DIT, LM, LM_AVAILABLE, requires_acestep, requires_lm

OURS = {"text_encoder", "lyric_embedding", "vae_decoder", "vae_encoder"}
ACESTEP_GRAPHS = {"condition_encoder", "dit_cross_kv", "dit_decoder", "audio_detokenizer"}
LM_GRAPHS = {"lm_prefill", "lm_decode"}
ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(bool)": "bool",
              "tensor(int32)": "int32", "tensor(float16)": "float16"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listed(manifest):
    for comp in manifest["components"].values():
        yield comp
        yield from comp["external_data"]
    yield from manifest["files"].values()
    for tok in manifest["tokenizers"].values():
        yield from tok["files"]


def test_manifest_header(manifest):
    assert manifest["format_version"] == 1
    assert manifest["model_family"] == "ace-step-v1.5"
    assert manifest["precision"] == "fp32"
    assert manifest["opset"] == 18
    versions = manifest["exporter"]["versions"]
    import onnx
    import torch

    assert versions["torch"] == torch.__version__ and versions["onnx"] == onnx.__version__


def test_expected_components_present(manifest):
    expected = set(OURS)
    if ACESTEP_AVAILABLE:
        expected |= ACESTEP_GRAPHS
    if LM_AVAILABLE:
        expected |= LM_GRAPHS
    assert expected <= set(manifest["components"])


@requires_acestep
def test_acestep_components_present(manifest):
    assert ACESTEP_GRAPHS <= set(manifest["components"])
    assert manifest["checkpoints"]["dit"] == DIT


@requires_lm
def test_lm_components_present(manifest):
    assert LM_GRAPHS <= set(manifest["components"])
    assert manifest["tokenizers"]["lm"]["files"]


def test_sha256_and_bytes_match_files(manifest, tiny_package):
    entries = list(_listed(manifest))
    assert len(entries) >= 7
    for entry in entries:
        path = tiny_package / entry["file"]
        assert path.is_file(), entry["file"]
        assert path.stat().st_size == entry["bytes"], entry["file"]
        assert _sha(path) == entry["sha256"], entry["file"]


def test_every_file_is_listed(manifest, tiny_package):
    listed = {e["file"] for e in _listed(manifest)}
    on_disk = {p.relative_to(tiny_package).as_posix() for p in tiny_package.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == listed


def test_external_data_layout(manifest):
    comps = manifest["components"]
    assert comps["text_encoder"]["external_data"][0]["file"] == "text_encoder.onnx.data"
    assert comps["vae_decoder"]["external_data"] == []  # small graph stays self-contained


def test_every_graph_loads_and_io_matches_manifest(manifest, tiny_package, ort_session):
    for name, comp in manifest["components"].items():
        sess = ort_session(tiny_package / comp["file"])
        got_in = [(i.name, ORT_DTYPES.get(i.type, i.type), list(i.shape)) for i in sess.get_inputs()]
        got_out = [(o.name, ORT_DTYPES.get(o.type, o.type), list(o.shape)) for o in sess.get_outputs()]
        assert got_in == [(v["name"], v["dtype"], v["shape"]) for v in comp["inputs"]], name
        assert got_out == [(v["name"], v["dtype"], v["shape"]) for v in comp["outputs"]], name


def test_documented_io_names(manifest):
    comps = manifest["components"]

    def io(name, kind):
        return [(v["name"], v["dtype"], v["shape"]) for v in comps[name][kind]]

    assert io("vae_decoder", "inputs") == [("latents", "float32", ["batch", 64, "frames"])]
    assert io("vae_decoder", "outputs") == [("audio", "float32", ["batch", 2, "1920*frames"])]
    assert io("vae_encoder", "inputs") == [("audio", "float32", ["batch", 2, "1920*frames"])]
    assert [v[0] for v in io("vae_encoder", "outputs")] == ["latent_mean", "latent_std"]
    assert io("text_encoder", "inputs") == [("input_ids", "int64", ["batch", "text_length"]),
                                            ("attention_mask", "int64", ["batch", "text_length"])]
    hidden = manifest["config"]["text_encoder"]["hidden_size"]
    assert io("text_encoder", "outputs") == [("last_hidden_state", "float32", ["batch", "text_length", hidden])]
    assert io("lyric_embedding", "outputs") == [("token_embeddings", "float32", ["batch", "lyric_length", hidden])]


@requires_acestep
def test_silence_latent_matches_checkpoint(manifest, tiny_package, tiny_checkpoints):
    import torch

    entry = manifest["files"]["silence_latent"]
    arr = np.load(tiny_package / entry["file"])
    raw = torch.load(tiny_checkpoints / DIT / "silence_latent.pt", map_location="cpu", weights_only=True)
    raw = raw.float().numpy()
    assert raw.shape == (1, 64, 15000)  # official layout, spec §1.9
    assert arr.dtype == np.float32 and arr.shape == (1, 15000, 64) == tuple(entry["shape"])
    assert np.array_equal(arr, raw.transpose(0, 2, 1))


def test_refuses_non_empty_output_without_force(tiny_checkpoints, tiny_package):
    before = (tiny_package / "manifest.json").read_bytes()
    opts = ExportOptions(checkpoints=tiny_checkpoints, out=tiny_package, dit=None, lm=None, log=lambda _m: None)
    with pytest.raises(PackageError, match="not empty.*--force"):
        export_package(opts)
    assert (tiny_package / "manifest.json").read_bytes() == before


def test_interrupted_export_leaves_no_manifest(tiny_checkpoints, tmp_path):
    """A failure after the first component: no manifest anywhere, the old output untouched, no staging left."""
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("previous package", encoding="utf-8")
    seen = []

    def boom(name, staging):
        seen.append(name)
        assert (staging / "text_encoder.onnx").is_file()
        raise RuntimeError("simulated crash mid-export")

    opts = ExportOptions(checkpoints=tiny_checkpoints, out=out, dit=None, lm=None, force=True,
                         log=lambda _m: None)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_package(opts, _after_component=boom)
    assert seen == ["text_encoder"]
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["pkg"]  # staging dir removed
    assert not list(tmp_path.rglob("manifest.json"))


def test_cli_missing_checkpoints_dir(tmp_path, capsys):
    from tools.onnx_export.__main__ import main

    rc = main(["--checkpoints", str(tmp_path / "absent"), "--out", str(tmp_path / "pkg")])
    assert rc == 2
    assert str(tmp_path / "absent") in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


def test_cli_missing_component_dir(tiny_checkpoints, tmp_path, capsys):
    from tools.onnx_export.__main__ import main

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    os.symlink(tiny_checkpoints / "vae", ckpt / "vae")
    rc = main(["--checkpoints", str(ckpt), "--out", str(tmp_path / "pkg"), "--dit", "none", "--lm", "none"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(ckpt / "Qwen3-Embedding-0.6B") in err and "missing" in err
    assert not (tmp_path / "pkg").exists()


def test_manifest_config_is_plain_json(manifest, tiny_package):
    raw = json.loads((tiny_package / "manifest.json").read_text(encoding="utf-8"))
    assert raw["config"]["vae"]["hop_length"] == 1920
    assert raw["config"]["text_encoder"]["vocab_size"] == 151669


def test_verify_package_detects_tampering(tiny_package, tmp_path):
    import shutil

    from tools.onnx_export.package import verify_package

    assert verify_package(tiny_package)["format_version"] == 1
    copy = tmp_path / "pkg"
    shutil.copytree(tiny_package, copy)
    with open(copy / "vae_decoder.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PackageError, match="vae_decoder.onnx"):
        verify_package(copy)


@requires_acestep
def test_acestep_extras_listed(manifest, tiny_package):
    files = manifest["files"]
    assert "null_condition_emb" in files and files["null_condition_emb"]["dtype"] == "float32"
    assert manifest["config"]["acestep"]["text_hidden_dim"] == manifest["config"]["text_encoder"]["hidden_size"]
    assert manifest["config"]["acestep"]["latent_dim"] == manifest["config"]["vae"]["latent_channels"] == 64


@requires_lm
def test_lm_config_section(manifest):
    assert manifest["config"]["lm"]["vocab_size"] == 217204


def test_mismatched_checkpoints_are_rejected():
    from tools.onnx_export.package import host_config

    te = {"hidden_size": 64}
    vae = {"latent_channels": 64, "hop_length": 1920, "sample_rate": 48000}
    assert host_config({"text_encoder": te, "vae": vae, "acestep": {"text_hidden_dim": 64}})["acestep"]
    with pytest.raises(PackageError, match="acestep.text_hidden_dim = 1024 but text_encoder.hidden_size = 64"):
        host_config({"text_encoder": te, "vae": vae, "acestep": {"text_hidden_dim": 1024}})


@requires_acestep
def test_graphs_chain_like_a_host(manifest, tiny_package, tiny_checkpoints, ort_session):
    """Run the package the way a host does (tokenizer → text encoder / lyric embedding → condition encoder
    → one DiT step → VAE decoder), each ORT stage fed the previous ORT outputs, and compare every stage with
    the torch modules given the same inputs. Catches I/O that does not fit together across graphs."""
    import torch
    from tokenizers import Tokenizer

    from tools.onnx_export import text_encoder as te
    from tools.onnx_export import vae as vae_mod
    from tools.onnx_export.acestep import load_acestep_checkpoint
    from tools.onnx_export.acestep.export import _wrapper

    comps = manifest["components"]

    def run(name, feeds):
        sess = ort_session(tiny_package / comps[name]["file"])
        return sess.run(None, feeds)

    tok = Tokenizer.from_file(str(tiny_package / manifest["tokenizers"]["text"]["dir"] / "tokenizer.json"))
    caption = ("# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\nlofi beat"
               "\n\n# Metas\n- bpm: 90\n- timesignature: 4\n- keyscale: C major\n- duration: 6 seconds\n<|endoftext|>\n")
    lyric = "# Languages\nen\n\n# Lyric\n[Instrumental]<|endoftext|>"
    text_ids = np.array([tok.encode(caption).ids], dtype=np.int64)
    lyric_ids = np.array([tok.encode(lyric).ids], dtype=np.int64)
    text_mask = np.ones_like(text_ids)
    lyric_mask = np.ones_like(lyric_ids)

    qwen = te.load_text_encoder(tiny_checkpoints / te.TEXT_ENCODER_DIR)
    ace = load_acestep_checkpoint(tiny_checkpoints / DIT)
    vae = vae_mod.load_vae(tiny_checkpoints / "vae")

    def close(ort_out, torch_out, what):
        torch_out = torch_out.detach().numpy() if hasattr(torch_out, "detach") else torch_out
        assert ort_out.shape == torch_out.shape, what
        if np.issubdtype(torch_out.dtype, np.integer):
            assert np.array_equal(ort_out, torch_out), what
        else:
            assert np.abs(ort_out - torch_out).max() <= 1e-4, what

    with torch.no_grad():
        (text_h,) = run("text_encoder", {"input_ids": text_ids, "attention_mask": text_mask})
        close(text_h, qwen(input_ids=torch.from_numpy(text_ids)).last_hidden_state, "text_encoder")
        (lyric_h,) = run("lyric_embedding", {"input_ids": lyric_ids})
        close(lyric_h, qwen.embed_tokens(torch.from_numpy(lyric_ids)), "lyric_embedding")

        frames = 150  # 6 s at 25 Hz; patched length 75
        silence = np.load(tiny_package / manifest["files"]["silence_latent"]["file"])
        timbre_frames = manifest["config"]["acestep"]["timbre_fix_frame"]
        cond_feeds = {
            "text_hidden_states": text_h, "text_attention_mask": text_mask,
            "lyric_hidden_states": lyric_h, "lyric_attention_mask": lyric_mask,
            "refer_audio_packed": np.ascontiguousarray(silence[:, :timbre_frames]),
            "refer_audio_order_mask": np.zeros(1, np.int64),
            "src_latents": np.ascontiguousarray(silence[:, :frames]),
            "chunk_masks": np.ones((1, frames, 64), np.float32),
        }
        cond_names = [o["name"] for o in comps["condition_encoder"]["outputs"]]
        cond = dict(zip(cond_names, run("condition_encoder", cond_feeds)))
        ref = _wrapper("condition_encoder", ace)(*[torch.from_numpy(cond_feeds[i["name"]])
                                                   for i in comps["condition_encoder"]["inputs"]])
        for name, value in zip(cond_names, ref):
            close(cond[name], value, f"condition_encoder.{name}")

        noise = torch.randn(1, frames, 64, generator=torch.Generator().manual_seed(42)).numpy()
        t = np.ones(1, np.float32)
        (cross_kv,) = run("dit_cross_kv", {"encoder_hidden_states": cond["encoder_hidden_states"]})
        dit_feeds = {"hidden_states": noise, "timestep": t, "timestep_r": t,
                     "context_latents": cond["context_latents"], "cross_kv": cross_kv}
        (velocity,) = run("dit_decoder", dit_feeds)
        # the reference is the whole torch DiT, which projects the encoder states itself
        ref_v = ace.decoder(*[torch.from_numpy(a) for a in (noise, t, t, cond["context_latents"],
                                                             cond["encoder_hidden_states"])])
        close(velocity, ref_v, "dit_cross_kv + dit_decoder")

        x0 = noise - velocity * t[:, None, None]   # the turbo last step, x0 = x_t - v·t (spec §8 item 11)
        latents = np.ascontiguousarray(x0.transpose(0, 2, 1))  # DiT [B, T, 64] → VAE [B, 64, T]
        (audio,) = run("vae_decoder", {"latents": latents})
        assert audio.shape == (1, 2, 1920 * frames)
        close(audio, vae.decode(torch.from_numpy(latents)).sample, "vae_decoder")
        assert np.isfinite(audio).all()


@pytest.mark.parametrize("component,name", [("vae", "diffusion_pytorch_model.safetensors"),
                                            ("Qwen3-Embedding-0.6B", "tokenizer.json"),
                                            (DIT, "silence_latent.pt")])
def test_cli_missing_file_reported_before_export(tiny_checkpoints, tmp_path, capsys, component, name):
    """A missing checkpoint file is reported (with its path) before anything is exported or written."""
    import shutil

    from tools.onnx_export.__main__ import main

    ckpt = tmp_path / "ckpt"
    for sub in ("vae", "Qwen3-Embedding-0.6B", DIT):
        if (tiny_checkpoints / sub).is_dir():
            shutil.copytree(tiny_checkpoints / sub, ckpt / sub)
    if not (ckpt / component).is_dir():
        pytest.skip(f"{component} not in the tiny checkpoints")
    (ckpt / component / name).unlink()
    rc = main(["--checkpoints", str(ckpt), "--out", str(tmp_path / "pkg"), "--lm", "none"]
              + ([] if ACESTEP_AVAILABLE else ["--dit", "none"]))
    assert rc == 2
    assert str(ckpt / component / name) in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists() and sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_cli_rejects_other_opset(tiny_checkpoints, tmp_path, capsys):
    from tools.onnx_export.__main__ import main

    rc = main(["--checkpoints", str(tiny_checkpoints), "--out", str(tmp_path / "pkg"), "--opset", "17"])
    assert rc == 2 and "opset" in capsys.readouterr().err


@requires_lm
def test_shared_external_data_is_described_once_per_graph(tiny_checkpoints, tmp_path, ort_session):
    """Real LMs keep both graphs' weights in one shared `lm_weights.onnx.data`: each graph lists it, the
    hashes agree, and it is not listed again as an extra file."""
    from tools.onnx_export.lm_gqa import write_lm_graphs
    from tools.onnx_export.package import describe_extra_files, describe_onnx

    files = write_lm_graphs(tiny_checkpoints / LM, tmp_path)
    comps = {name: describe_onnx(tmp_path, rel) for name, rel in files.items()}
    shared = [c["external_data"] for c in comps.values()]
    assert len(shared[0]) == 1 and shared[0] == shared[1]
    data = tmp_path / shared[0][0]["file"]
    assert shared[0][0]["sha256"] == _sha(data) and shared[0][0]["bytes"] == data.stat().st_size
    taken = {c["file"] for c in comps.values()} | {e["file"] for c in comps.values() for e in c["external_data"]}
    assert describe_extra_files(tmp_path, taken, {}) == {}
    for comp in comps.values():
        ort_session(tmp_path / comp["file"])  # loads with the shared weights
