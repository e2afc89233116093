"""The torch-free demo package (tools/demo_package.py) and the README main job in a clean venv."""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tools import demo_package

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_package.build_package(tmp_path_factory.mktemp("demo") / "pkg")


def _spec() -> dict:
    return json.loads((demo_package.SKELETON / "skeleton.json").read_text(encoding="utf-8"))


def test_manifest_lists_every_file_with_its_hash(demo):
    manifest = json.loads((demo / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["random_weights"] is True
    listed = []
    for comp in manifest["components"].values():
        listed += [comp, *comp["external_data"]]
    listed += list(manifest["files"].values()) + manifest["tokenizers"]["text"]["files"]
    on_disk = sorted(p.relative_to(demo).as_posix() for p in demo.rglob("*") if p.is_file())
    assert sorted(e["file"] for e in listed) == sorted(f for f in on_disk if f != "manifest.json")
    for e in listed:
        data = (demo / e["file"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (e["bytes"], e["sha256"]), e["file"]
    assert set(manifest["components"]) == set(demo_package.COMPONENTS)
    assert "lm" not in manifest["tokenizers"] and "lm" not in manifest["config"]


def test_weights_follow_the_recipe_at_the_recorded_offsets(demo):
    # Read back each tensor where the skeleton says it is: its statistics must be the recorded ones
    # (a shifted offset or a wrong dtype would give mean/std of a neighbour or of garbage).
    for name, ext in _spec()["weights"].items():
        raw = (demo / ext["file"]).read_bytes()
        assert len(raw) == ext["bytes"]
        for t in ext["tensors"]:
            values = np.frombuffer(raw, "<f4", count=t["length"] // 4, offset=t["offset"]).astype(np.float64)
            assert values.size == int(np.prod(t["shape"]))
            tol = 6 * max(t["std"], 1e-6) / np.sqrt(values.size)
            assert abs(values.mean() - t["mean"]) <= tol + 1e-6, (name, t["name"])
            assert values.std() == pytest.approx(t["std"], rel=0.2, abs=1e-6), (name, t["name"])


def test_rebuild_is_deterministic(demo, tmp_path):
    again = demo_package.build_package(tmp_path / "pkg")
    assert (again / "manifest.json").read_text() == (demo / "manifest.json").read_text()


def test_stamp_rebuilds_only_when_stale(tmp_path):
    pkg = demo_package.demo_package_dir(generated=tmp_path)
    first = (pkg / "manifest.json").stat().st_mtime_ns
    assert demo_package.demo_package_dir(generated=tmp_path) == pkg
    assert (pkg / "manifest.json").stat().st_mtime_ns == first  # current: reused
    (tmp_path / "demo-package.stamp").write_text("stale\n")
    demo_package.demo_package_dir(generated=tmp_path)
    assert (pkg / "manifest.json").stat().st_mtime_ns != first  # stale: rebuilt


def test_package_generates_finite_audio(demo):
    from acestep_runtime.pipeline import Pipeline

    with Pipeline.open(demo, device="cpu", verify=True) as pipe:
        result = pipe.generate({"caption": "lofi hip hop, mellow piano", "lyrics": "[verse]\nla la la",
                                "duration": 10, "seed": 7})
    audio = np.asarray(result.audio)
    assert result.sample_rate == 48000
    assert audio.shape == (1, 2, 10 * 48000)
    assert np.isfinite(audio).all() and audio.std() > 0


def test_info_reports_random_weights(demo):
    from acestep_runtime.package import ModelPackage

    assert ModelPackage.open(demo).summary()["random_weights"] is True


def test_skeleton_references_its_data_files():
    """Each external initializer of the committed .onnx files is at the offset/length skeleton.json gives."""
    onnx = pytest.importorskip("onnx")
    spec = _spec()
    for name in demo_package.COMPONENTS:
        model = onnx.load(str(demo_package.SKELETON / f"{name}.onnx"), load_external_data=False)
        external = {}
        for init in model.graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                kv = {e.key: e.value for e in init.external_data}
                external[init.name] = (kv["location"], int(kv["offset"]), int(kv["length"]), list(init.dims))
            else:
                assert np.prod(init.dims) < demo_package.EXTERNAL_MIN_ELEMENTS, (name, init.name)
        ext = spec["weights"][name]
        assert external == {t["name"]: (ext["file"], t["offset"], t["length"], t["shape"]) for t in ext["tensors"]}


def _structure(path: Path):
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    return ([n.op_type for n in g.node], [i.name for i in g.input], [o.name for o in g.output],
            [(t.name, list(t.dims), t.data_type) for t in g.initializer])


def test_skeleton_is_current(tmp_path):
    """Rebuilding the skeleton from the current exporter's tiny package gives the committed graphs
    (structure, not bytes: ONNX bytes vary between export directories). On failure: run
    `python -m tools.demo_package skeleton` and commit fixtures/demo_skeleton."""
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    from tools.parity.fixtures import tiny_package_dir

    fresh = tmp_path / "skeleton"
    demo_package.make_skeleton(tiny_package_dir(), fresh)
    hint = "fixtures/demo_skeleton is stale: run `python -m tools.demo_package skeleton` and commit it"
    for name in demo_package.COMPONENTS:
        assert _structure(fresh / f"{name}.onnx") == _structure(demo_package.SKELETON / f"{name}.onnx"), \
            f"{name}: {hint}"
    new, old = (json.loads((d / "skeleton.json").read_text()) for d in (fresh, demo_package.SKELETON))
    for spec in (new, old):
        spec["manifest"].pop("exporter")  # git commit and library versions of the export run
        for ext in spec["weights"].values():
            for t in ext["tensors"]:
                del t["mean"], t["std"]
        for a in spec["arrays"].values():
            del a["mean"], a["std"]
    assert new == old, hint
    tok = "tokenizer/text/tokenizer.json.xz"
    assert lzma.decompress((fresh / tok).read_bytes()) == lzma.decompress((demo_package.SKELETON / tok).read_bytes()), hint


# ---------------------------------------------------------------------------------------------------
# The README main job, `bash scripts/run_demo.sh`, in a fresh virtual environment without torch.


def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_main_job_in_a_clean_venv(tmp_path):
    """A venv with only requirements/runtime.txt (+ the binding, which run_demo.sh installs) runs the
    README main job: torch is not importable there and a 48 kHz stereo track with its sidecar is written.
    Needs PyPI (or pip's cache) and cargo, as scripts/run_demo.sh does on a new machine."""
    import soundfile as sf

    venv = tmp_path / "venv"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHON", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "run_demo.sh"), "--out", f"{out}/"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"run_demo.sh failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    no_torch = subprocess.run([str(py), "-c", "import torch"], env=env, capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr

    site = next((venv / "lib").glob("python3*/site-packages"))
    size_mb = _du(site) / 2**20
    print(f"[main job in a clean venv] {seconds:.1f} s; site-packages {size_mb:.0f} MB")
    assert size_mb <= 300, f"runtime install is {size_mb:.0f} MB (target <= 300 MB)"

    tracks = sorted(out.glob("*.flac"))
    assert len(tracks) == 1, sorted(p.name for p in out.iterdir())
    audio, sr = sf.read(tracks[0], dtype="float32", always_2d=True)
    assert sr == 48000 and audio.shape == (12 * 48000, 2)
    assert np.isfinite(audio).all() and audio.std() > 0
    sidecar = json.loads(tracks[0].with_name(tracks[0].name + ".json").read_text())
    assert sidecar["request"]["duration"] == 12 and sidecar["model"]["random_weights"] is True
    assert sidecar["host"]["audio_sha256"] == hashlib.sha256(tracks[0].read_bytes()).hexdigest()
    assert sidecar["track_id"].startswith(tracks[0].stem)


def test_default_model_falls_back_to_the_demo_package(tmp_path, monkeypatch):
    from acestep_runtime import api

    tiny, demo = tmp_path / "tiny-package", tmp_path / "demo-package"
    monkeypatch.setattr(api, "TINY_PACKAGE", tiny)
    monkeypatch.setattr(api, "DEMO_PACKAGE", demo)
    monkeypatch.delenv("ACESTEP_MODEL", raising=False)
    assert api.default_model() == tiny  # neither built: the error will name the tiny package
    demo.mkdir()
    assert api.default_model() == demo
    tiny.mkdir()
    assert api.default_model() == tiny  # the exporter's package wins when both exist
    monkeypatch.setenv("ACESTEP_MODEL", str(tmp_path / "mine"))
    assert api.default_model() == tmp_path / "mine"
