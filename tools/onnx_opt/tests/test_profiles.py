"""Precision profiles on the tiny package: int8 and fp16 packages are made, load, generate through the
Python host, record their profile and their deviation from fp32, and that deviation is recomputed here
independently (torch.stft, float64 numpy) from fresh runs of both packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.onnx_opt import profiles
from tools.onnx_opt.deviation import REQUESTS
from tools.parity.fixtures import tiny_package_dir

REPO = Path(__file__).resolve().parents[3]
PYTHONPATH = os.pathsep.join([str(REPO / "bindings" / "python"), str(REPO)])


@pytest.fixture(scope="module")
def fp32_package() -> Path:
    return tiny_package_dir()


@pytest.fixture(scope="module")
def int8_package(fp32_package, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profiles") / "int8"
    return profiles.apply_profile(fp32_package, out, "int8", threads=2, log=lambda _m: None)


@pytest.fixture(scope="module")
def fp16_package(fp32_package, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profiles") / "fp16"
    return profiles.apply_profile(fp32_package, out, "fp16", threads=2, log=lambda _m: None)


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text(encoding="utf-8"))


def _generate(pkg: Path, request: dict):
    from acestep_runtime.pipeline import Pipeline

    with Pipeline.open(pkg, device="cpu", threads=2) as pipe:
        result = pipe.generate(dict(request))
    return result.latents, result.audio


def _independent_deviation(ref_latents, latents, ref_audio, audio) -> dict:
    """The metrics of tools/onnx_opt/deviation.py written again: torch's STFT, plain float64 numpy."""
    import torch

    a, b = ref_latents.astype(np.float64).ravel(), latents.astype(np.float64).ravel()
    window = torch.hann_window(2048, periodic=True, dtype=torch.float64)

    def mag(x):
        x = torch.from_numpy(x.astype(np.float64)).reshape(-1, x.shape[-1])
        return torch.stft(x, 2048, hop_length=512, window=window, center=False, return_complex=True).abs().numpy()

    ma, mb = mag(ref_audio).ravel(), mag(audio).ravel()
    err = ref_audio.astype(np.float64) - audio.astype(np.float64)
    return {
        "latent_cosine": a @ b / np.sqrt((a @ a) * (b @ b)),
        "latent_max_abs": np.abs(a - b).max(),
        "audio_snr_db": 10 * np.log10(np.sum(ref_audio.astype(np.float64) ** 2) / np.sum(err**2)),
        "stft_cosine": ma @ mb / np.sqrt((ma @ ma) * (mb @ mb)),
    }


def _graph(pkg: Path, name: str):
    import onnx

    return onnx.load(str(pkg / _manifest(pkg)["components"][name]["file"]), load_external_data=False)


# --- int8 ----------------------------------------------------------------------------------------------

def test_int8_manifest_records_the_profile_and_what_stayed_fp32(int8_package, fp32_package):
    from tools.onnx_export.package import verify_package

    manifest = verify_package(int8_package)  # every file present with its sha256
    assert manifest["precision"] == "int8"
    prof = manifest["profile"]
    assert prof["name"] == "int8" and prof["int8_method"] == profiles.DEFAULT_INT8_METHOD
    assert prof["source"]["manifest_sha256"] == _sha(fp32_package / "manifest.json")
    for name in profiles.INT8_COMPONENTS:
        entry = prof["components"][name]
        assert entry["precision"] == "int8"
        # the graph itself holds the int8 GEMMs the manifest claims, and no fp32 weight MatMul is left
        ops = [n.op_type for n in _graph(int8_package, name).graph.node]
        assert ops.count("MatMulInteger") == entry["converted_ops"]["MatMulInteger"] > 0
        assert not [i for i in entry["left_fp32"] if i["op"] == "MatMul" and "weights" in i]
        # every fp32 MatMul still in the graph is listed, with a reason
        listed = {i["node"] for i in entry["left_fp32"]}
        assert {n.name for n in _graph(int8_package, name).graph.node if n.op_type == "MatMul"} <= listed
        assert all(i["reason"] for i in entry["left_fp32"])
    assert prof["components"]["vae_decoder"]["precision"] == "fp32"
    assert "reason" in prof["components"]["vae_decoder"]
    # graph I/O the core feeds is unchanged
    for name in profiles.INT8_COMPONENTS:
        assert manifest["components"][name]["inputs"] == _manifest(fp32_package)["components"][name]["inputs"]
        assert manifest["components"][name]["outputs"] == _manifest(fp32_package)["components"][name]["outputs"]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("profile", ["int8", "fp16"])
def test_recorded_deviation_is_what_an_independent_measurement_finds(profile, fp32_package, int8_package,
                                                                      fp16_package):
    pkg = {"int8": int8_package, "fp16": fp16_package}[profile]
    deviation = _manifest(pkg)["profile"]["deviation"]
    assert deviation["passed"] is True
    assert len(deviation["per_request"]) == len(REQUESTS)
    request = REQUESTS[0]
    ref_latents, ref_audio = _generate(fp32_package, request)
    latents, audio = _generate(pkg, request)
    assert np.isfinite(latents).all() and np.isfinite(audio).all()
    assert not np.array_equal(latents, ref_latents), "the profile changed nothing"
    mine = _independent_deviation(ref_latents, latents, ref_audio, audio)
    recorded = deviation["per_request"][0]
    assert mine["latent_cosine"] == pytest.approx(recorded["latent_cosine"], abs=1e-6)
    assert mine["latent_max_abs"] == pytest.approx(recorded["latent_max_abs"], rel=1e-5)
    assert mine["audio_snr_db"] == pytest.approx(recorded["audio_snr_db"], abs=1e-3)
    assert mine["stft_cosine"] == pytest.approx(recorded["stft_cosine"], abs=1e-6)
    limits = profiles.THRESHOLDS[profile]
    assert mine["latent_cosine"] >= limits["latent_cosine_min"]
    assert mine["stft_cosine"] >= limits["stft_cosine_min"]
    # worst = min / max over the requests
    rows = deviation["per_request"]
    assert deviation["worst"]["latent_cosine"] == min(r["latent_cosine"] for r in rows)
    assert deviation["worst"]["latent_max_abs"] == max(r["latent_max_abs"] for r in rows)


def _rolling_output_channels(component: str, axis: int):
    """A _convert_hook that rolls the int8 weights of `component` by one output channel (`axis`: 1 for a
    MatMul's [K, N], 0 for a conv's [C_out, C_in, k]): quantized correctly, applied to the wrong channels."""
    import onnx
    from onnx import numpy_helper

    def scramble(name, path):
        if name != component:
            return
        model = onnx.load(str(path))
        for t in model.graph.initializer:
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2:
                t.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(t), 1, axis=axis), t.name))
        onnx.save(model, str(path))

    return scramble


def test_a_broken_quantization_fails_the_deviation_check(fp32_package, tmp_path):
    """Weights quantized correctly but applied to the wrong output channels (int8 rows rolled) must be
    caught by the thresholds, and no package is written."""
    out = tmp_path / "broken"
    with pytest.raises(profiles.ProfileError, match="latent_cosine"):
        profiles.apply_profile(fp32_package, out, "int8", threads=2, log=lambda _m: None,
                               _convert_hook=_rolling_output_channels("dit_decoder", axis=1))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".broken")], "staging left behind"


def test_python_host_cli_runs_the_int8_package_unchanged(int8_package, tmp_path):
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    run = lambda *args: subprocess.run([sys.executable, "-m", "acestep_runtime", *map(str, args)],  # noqa: E731
                                       env=env, capture_output=True, text=True, timeout=600)
    info = run("info", int8_package, "--verify")
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["precision"] == "int8"
    recorded = json.loads((int8_package / "manifest.json").read_text(encoding="utf-8"))["profile"]
    assert summary["profile"]["name"] == "int8" and summary["profile"]["deviation_passed"] is True
    assert summary["profile"]["deviation_from_fp32"] == recorded["deviation"]["worst"]
    gen = run("generate", "--model", int8_package, "--caption", "calm piano", "--duration", "10", "--seed", "3",
              "--no-think", "--out", f"{tmp_path}/", "--no-progress")
    assert gen.returncode == 0, gen.stderr
    (flac,) = tmp_path.glob("*.flac")
    import soundfile as sf

    audio, rate = sf.read(flac)
    assert rate == 48000 and audio.shape == (480000, 2) and np.abs(audio).max() > 0


def test_left_fp32_lists_weights_and_weightless_matmuls_but_not_quantization_scales(tmp_path):
    """On a hand-built graph: an fp32 weight MatMul and an attention MatMul are listed with their reasons;
    an int8 MatMulInteger, the 1-D fp32 per-channel scale of its dequantizing Mul (8192 channels, above
    the size limit) and a 2-D table added elementwise (no GEMM) are not."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])
    xq = helper.make_tensor_value_info("xq", TensorProto.UINT8, [4, 64])
    y = [helper.make_tensor_value_info(n, t, None) for n, t in
         (("y1", TensorProto.FLOAT), ("y2", TensorProto.FLOAT), ("y3", TensorProto.FLOAT))]
    inits = [numpy_helper.from_array(np.ones((64, 64), np.float32), "w_fp32"),
             numpy_helper.from_array(np.ones((64, 8192), np.int8), "w_int8"),
             numpy_helper.from_array(np.ones(8192, np.float32), "scale"),
             numpy_helper.from_array(np.ones((4, 8192), np.float32), "table")]
    nodes = [helper.make_node("MatMul", ["x", "w_fp32"], ["y1"], name="weight_mm"),
             helper.make_node("MatMul", ["x", "x_t"], ["y2"], name="attention_mm"),
             helper.make_node("Transpose", ["x"], ["x_t"], name="t"),
             helper.make_node("MatMulInteger", ["xq", "w_int8"], ["acc"], name="int8_mm"),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Mul", ["accf", "scale"], ["y3q"], name="dequant"),
             helper.make_node("Add", ["y3q", "table"], ["y3"], name="adaln_add")]
    graph = helper.make_graph(nodes, "g", [x, xq], y, inits)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    left = {i["node"]: i for i in profiles._left_fp32(path, "int8")}
    assert set(left) == {"weight_mm", "attention_mm"}
    assert left["weight_mm"]["weights"] == ["w_fp32"] and "left this constant-weight MatMul" in left["weight_mm"]["reason"]
    assert "activations" in left["attention_mm"]["reason"]


# --- fp16 ----------------------------------------------------------------------------------------------

def test_fp16_package_keeps_float32_io_and_float16_weights(fp16_package, fp32_package):
    import onnx

    manifest = _manifest(fp16_package)
    assert manifest["precision"] == "fp16"
    source = _manifest(fp32_package)
    for name, comp in manifest["components"].items():
        assert comp["inputs"] == source["components"][name]["inputs"], name
        assert comp["outputs"] == source["components"][name]["outputs"], name
    for name in ("dit_decoder", "vae_decoder", "condition_encoder", "text_encoder"):
        assert manifest["profile"]["components"][name]["precision"] == "fp16"
        graph = _graph(fp16_package, name).graph
        floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
        kinds = {t.data_type for t in graph.initializer if len(t.dims) >= 2} & floats
        assert kinds == {onnx.TensorProto.FLOAT16}, (name, kinds)
        assert not manifest["profile"]["components"][name]["left_fp32"]
    assert manifest["profile"]["components"]["lm_decode"]["precision"] == "fp32"


# --- errors and the exporter hook ------------------------------------------------------------------------

def test_profile_names_agree_between_exporter_and_profiles():
    from tools.onnx_export.__main__ import PROFILES

    assert PROFILES == profiles.PROFILES


def test_unknown_profile_is_a_clear_error(fp32_package, tmp_path, capsys):
    from tools.onnx_export.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["--checkpoints", str(tmp_path), "--out", str(tmp_path / "pkg"), "--profile", "int4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--profile" in err and "'int4'" in err and "fp32" in err and "int8" in err
    with pytest.raises(profiles.ProfileError, match="unknown precision profile 'bf8'.*fp16"):
        profiles.apply_profile(fp32_package, tmp_path / "x", "bf8")
    with pytest.raises(profiles.ProfileError, match="from an fp32 package"):
        bad = tmp_path / "not-fp32"
        bad.mkdir()
        (bad / "manifest.json").write_text(json.dumps({"precision": "int8"}))
        profiles.apply_profile(bad, tmp_path / "y", "fp16")


def test_exporter_profile_flag_converts_its_fp32_export_and_removes_it(fp32_package, tmp_path, monkeypatch):
    """`python -m tools.onnx_export --profile int8` = export fp32 beside the target, convert, delete the
    fp32 copy. The export itself is replaced by a copy of the tiny package (it has its own tests)."""
    import tools.onnx_export.__main__ as cli

    exported = []

    def fake_export(opts):
        shutil.copytree(fp32_package, opts.out, dirs_exist_ok=True)
        exported.append(opts.out)
        return opts.out

    monkeypatch.setattr(cli, "export_package", fake_export)
    out = tmp_path / "pkg"
    status = cli.main(["--checkpoints", str(tmp_path), "--out", str(out), "--profile", "int8"])
    assert status == 0
    assert _manifest(out)["precision"] == "int8"
    assert exported and exported[0] != out and not exported[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


@pytest.fixture(scope="module")
def int8_vae_package(fp32_package, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profiles") / "int8-vae"
    return profiles.apply_profile(fp32_package, out, "int8", int8_vae=True, threads=2, log=lambda _m: None)


def test_int8_vae_makes_every_decoder_conv_a_qlinearconv_and_keeps_the_audio(int8_vae_package, fp32_package):
    """--int8-vae: every Conv of the decoder becomes a QLinearConv (the manifest's count is the graph's),
    the ConvTransposes stay fp32 and are listed, the Snake nodes stay (run by the fused kernel or their
    function body), and the decoder's audio on the same latents stays close to the fp32 decoder's
    (measured here with numpy, independently of deviation.py)."""
    import onnxruntime as ort

    manifest = _manifest(int8_vae_package)
    prof = manifest["profile"]
    entry = prof["components"]["vae_decoder"]
    assert prof["int8_vae"] is True and entry["precision"] == "int8" and "calibration" in entry
    fp32_ops = [n.op_type for n in _graph(fp32_package, "vae_decoder").graph.node]
    ops = [n.op_type for n in _graph(int8_vae_package, "vae_decoder").graph.node]
    assert ops.count("QLinearConv") == entry["converted_ops"]["QLinearConv"] == fp32_ops.count("Conv") > 0
    assert "Conv" not in ops and ops.count("Snake") == fp32_ops.count("Snake") > 0
    assert ops.count("ConvTranspose") == fp32_ops.count("ConvTranspose")
    assert all(i["op"] == "ConvTranspose" and i["reason"] for i in entry["left_fp32"])
    assert prof["components"]["vae_encoder"]["precision"] == "fp32"
    assert prof["deviation"]["passed"] is True
    # the same latents through both decoders (latents of the fp32 package's own generation)
    latents, _ = _generate(fp32_package, REQUESTS[0])
    feed = {"latents": np.ascontiguousarray(latents.transpose(0, 2, 1))}

    def decode(pkg):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(pkg / "vae_decoder.onnx"), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, feed)[0].astype(np.float64)

    ref, got = decode(fp32_package), decode(int8_vae_package)
    snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))
    assert 20.0 < snr < 80.0, snr  # quantized (not bit-equal), and close


def test_a_broken_int8_vae_fails_the_deviation_check(fp32_package, tmp_path):
    """The int8 profile's thresholds judge the VAE by the STFT cosine (the latents do not see it): int8
    conv weights applied to the wrong output channels must fail it, and no package is written."""
    out = tmp_path / "broken"
    with pytest.raises(profiles.ProfileError, match="stft_cosine"):
        profiles.apply_profile(fp32_package, out, "int8", int8_vae=True, threads=2, log=lambda _m: None,
                               _convert_hook=_rolling_output_channels("vae_decoder", axis=0))
    assert not out.exists()


def test_int8_vae_is_refused_outside_the_int8_profile(fp32_package, tmp_path):
    with pytest.raises(profiles.ProfileError, match="int8_vae .*int8 profile"):
        profiles.apply_profile(fp32_package, tmp_path / "x", "fp16", int8_vae=True, log=lambda _m: None)
