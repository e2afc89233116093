"""The demo model package without torch: committed graph skeletons + seeded numpy weights.

The README's main job needs a model package. The tiny test package (`tools.parity.fixtures`) is exported
with torch (a 6.6 GB install) and weighs ~240 MB, mostly two 151669x64 embedding tables and the LM
graphs; its weights are random anyway. So the repository commits a *skeleton* of it, and this module
rebuilds a working package from the skeleton with numpy alone:

* `fixtures/demo_skeleton/<component>.onnx` — the tiny package's graphs with every initializer of at
  least `EXTERNAL_MIN_ELEMENTS` elements moved to external data (`<component>.onnx.data`, raw
  little-endian float32 at the offsets the .onnx already references), so the protobufs stay small.
  Smaller initializers (norm scales, biases, shape constants) stay in the .onnx, exact.
* `skeleton.json` — for each external tensor its name, shape, offset and the mean/std of the exported
  values; the manifest of the package minus sizes and hashes; the same recipe for `silence_latent`.
* the text tokenizer (xz-compressed `tokenizer.json`, the same bytes the exporter ships) and
  `null_condition_emb.npy` (640 bytes, exact).

Rebuilding draws each large tensor as `mean + std * N(0, 1)` from a numpy generator seeded by the
tensor's name, writes the data files, and writes a `manifest.json` (format_version 1) with the size and
sha256 of every file it wrote and `"random_weights": true`. The package holds the text encoder, lyric
embedding, condition encoder, DiT (cross K/V and step graphs), audio detokenizer and VAE decoder: everything text2music needs;
no LM, no VAE encoder or audio tokenizer (cover/repaint need real audio and real weights anyway).

    python -m tools.demo_package [--out DIR] [--force]   # numpy only; rebuilt when the skeleton changes
    python -m tools.demo_package skeleton [--package P]  # dev: rewrite the skeleton (needs onnx)

Python: `demo_package_dir() -> Path` (fixtures/generated/demo-package, rebuilt when stale).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import lzma
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: builds are not serialised between processes
    fcntl = None

ROOT = Path(__file__).resolve().parents[1]
SKELETON = ROOT / "fixtures" / "demo_skeleton"
GENERATED = ROOT / "fixtures" / "generated"
PACKAGE_NAME = "demo-package"
SKELETON_FORMAT = 1
# Initializers at or above this many elements go to external data and are regenerated; below it they
# stay in the graph, exact (4 KiB of float32: every norm scale, bias and index table of the tiny model).
EXTERNAL_MIN_ELEMENTS = 1024
ALIGN = 64  # byte alignment of each tensor in a .onnx.data file
# What text2music runs; the LM, VAE encoder and audio tokenizer are left out.
COMPONENTS = ("text_encoder", "lyric_embedding", "condition_encoder", "dit_cross_kv", "dit_decoder",
              "audio_detokenizer", "vae_decoder")
TEXT_TOKENIZER = "tokenizer/text"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _draw(key: str, shape: list[int], mean: float, std: float) -> np.ndarray:
    """float32 `mean + std * N(0, 1)`, seeded by `key` so tensors do not depend on each other's order."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    values = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    return (values * np.float32(std) + np.float32(mean)).astype("<f4", copy=False)


# ---------------------------------------------------------------------------------------------------
# skeleton -> package (numpy only)


def skeleton_hash(skeleton: Path = SKELETON) -> str:
    """sha256 over the skeleton files, this module and the numpy version (its generator draws the weights)."""
    h = hashlib.sha256()
    files = sorted(p for p in skeleton.rglob("*") if p.is_file())
    for rel, f in [*((p.relative_to(skeleton).as_posix(), p) for p in files), ("demo_package.py", Path(__file__))]:
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(f"numpy {np.__version__}".encode())
    return h.hexdigest()


def build_package(out: Path, skeleton: Path = SKELETON) -> Path:
    """Writes the demo package into `out` (created; must not exist) and returns it."""
    spec_path = skeleton / "skeleton.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} is missing: the demo skeleton is part of the repository "
                                f"(rebuild it with `python -m tools.demo_package skeleton`)")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if spec.get("skeleton_format") != SKELETON_FORMAT:
        raise ValueError(f"{spec_path}: skeleton_format {spec.get('skeleton_format')!r} is not {SKELETON_FORMAT}")
    manifest = json.loads(json.dumps(spec["manifest"]))  # a copy to fill in
    out.mkdir(parents=True)

    def entry(rel: str) -> dict:
        path = out / rel
        return {"file": rel, "sha256": _sha256(path), "bytes": path.stat().st_size}

    for name, comp in manifest["components"].items():
        graph = comp["file"]
        shutil.copyfile(skeleton / graph, out / graph)
        comp.update(entry(graph))
        external = spec["weights"].get(name)
        comp["external_data"] = []
        if external:
            with open(out / external["file"], "wb") as fh:
                for t in external["tensors"]:
                    fh.seek(t["offset"])
                    data = _draw(f"{name}/{t['name']}", t["shape"], t["mean"], t["std"]).tobytes()
                    if len(data) != t["length"]:
                        raise ValueError(f"{spec_path}: {name}/{t['name']} has length {t['length']}, "
                                         f"its shape {t['shape']} needs {len(data)} bytes")
                    fh.write(data)
                fh.truncate(external["bytes"])
            comp["external_data"] = [entry(external["file"])]

    for name, f in manifest["files"].items():
        rel = f["file"]
        recipe = spec["arrays"].get(name)
        if recipe is None:
            shutil.copyfile(skeleton / rel, out / rel)
        else:
            np.save(out / rel, _draw(f"files/{name}", recipe["shape"], recipe["mean"], recipe["std"]))
        f.update(entry(rel))

    tok = manifest["tokenizers"]["text"]
    (out / tok["dir"]).mkdir(parents=True)
    for i, f in enumerate(tok["files"]):
        rel = f["file"]
        src = skeleton / rel
        if src.is_file():
            shutil.copyfile(src, out / rel)
        else:  # the large tokenizer.json is committed xz-compressed
            with lzma.open(src.with_name(src.name + ".xz")) as fin, open(out / rel, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        tok["files"][i] = entry(rel)

    manifest["random_weights"] = True
    manifest["demo_package"] = {"built_by": "tools.demo_package", "numpy": np.__version__,
                                "note": "graphs of the tiny test package; weights redrawn from their mean/std"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


@contextlib.contextmanager
def _lock(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def demo_package_dir(*, generated: Path = GENERATED, skeleton: Path = SKELETON, force: bool = False) -> Path:
    """fixtures/generated/demo-package, rebuilt when missing or older than the skeleton.

    Built in a temporary directory and renamed into place; the stamp beside it (`demo-package.stamp`,
    the `skeleton_hash`) is written last, so an interrupted build never looks current.
    """
    target = generated / PACKAGE_NAME
    stamp = target.with_name(PACKAGE_NAME + ".stamp")
    digest = skeleton_hash(skeleton)
    with _lock(generated):
        if not force and target.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
            return target
        stamp.unlink(missing_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{PACKAGE_NAME}-", dir=generated))
        try:
            build_package(tmp / PACKAGE_NAME, skeleton)
            if target.exists():
                old = generated / f".{PACKAGE_NAME}-old-{os.getpid()}"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp / PACKAGE_NAME, target)
            stamp.write_text(digest + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------------
# exported tiny package -> skeleton (dev: needs onnx)


def make_skeleton(package: Path, out: Path) -> dict:
    """Writes the skeleton of the exported `package` into `out` (replaced) and returns its skeleton.json."""
    import onnx
    from onnx import numpy_helper

    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    weights = {}
    for name in COMPONENTS:
        comp = manifest["components"][name]
        if comp.get("external_data"):
            raise ValueError(f"{package}: {name} already has external data; export the tiny package inline")
        model = onnx.load(str(package / comp["file"]))
        data_file = comp["file"] + ".data"
        tensors, offset = [], 0
        for init in model.graph.initializer:
            values = numpy_helper.to_array(init)
            if values.size < EXTERNAL_MIN_ELEMENTS:
                continue
            if values.dtype != np.float32 or not np.isfinite(values).all():
                # not a weight: an index table or a mask must stay exact
                raise ValueError(f"{name}/{init.name}: large initializer of dtype {values.dtype} (or non-finite); "
                                 "the skeleton only regenerates finite float32 weights")
            offset = -(-offset // ALIGN) * ALIGN
            length = values.size * 4
            tensors.append({"name": init.name, "shape": list(values.shape), "offset": offset, "length": length,
                            "mean": float(values.astype(np.float64).mean()),
                            "std": float(values.astype(np.float64).std())})
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.data_location = onnx.TensorProto.EXTERNAL
            del init.external_data[:]
            for key, value in (("location", data_file), ("offset", str(offset)), ("length", str(length))):
                kv = init.external_data.add()
                kv.key, kv.value = key, value
            offset += length
        # serialised as-is: onnx.save would try to (re)write the external data
        (out / comp["file"]).write_bytes(model.SerializeToString())
        if tensors:
            weights[name] = {"file": data_file, "bytes": offset, "tensors": tensors}

    arrays = {}
    for name, f in manifest["files"].items():
        values = np.load(package / f["file"])
        if values.size < EXTERNAL_MIN_ELEMENTS:
            shutil.copyfile(package / f["file"], out / f["file"])
        else:
            arrays[name] = {"shape": list(values.shape), "mean": float(values.astype(np.float64).mean()),
                            "std": float(values.astype(np.float64).std())}

    text = manifest["tokenizers"]["text"]
    (out / text["dir"]).mkdir(parents=True)
    for f in text["files"]:
        src, dst = package / f["file"], out / f["file"]
        if f["bytes"] < 64 * 1024:
            shutil.copyfile(src, dst)
        else:
            with open(src, "rb") as fin, lzma.open(dst.with_name(dst.name + ".xz"), "wb", preset=9) as fout:
                shutil.copyfileobj(fin, fout)

    template = json.loads(json.dumps(manifest))
    template["components"] = {n: {k: v for k, v in template["components"][n].items()
                                  if k not in ("sha256", "bytes", "external_data")} for n in COMPONENTS}
    for f in template["files"].values():
        for key in ("sha256", "bytes"):
            f.pop(key, None)
    template["tokenizers"] = {"text": {"dir": text["dir"], "files": [{"file": f["file"]} for f in text["files"]]}}
    template["checkpoints"]["lm"] = None
    template["config"].pop("lm", None)
    spec = {"skeleton_format": SKELETON_FORMAT,
            "source": "tools.parity.fixtures tiny-package (turbo), via `python -m tools.demo_package skeleton`",
            "external_min_elements": EXTERNAL_MIN_ELEMENTS,
            "manifest": template, "weights": weights, "arrays": arrays}
    (out / "skeleton.json").write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    return spec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.demo_package", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    sk = sub.add_parser("skeleton", help="rewrite fixtures/demo_skeleton from the exported tiny package (needs onnx)")
    sk.add_argument("--package", type=Path, help="exported tiny package (default: build/reuse tools.parity.fixtures')")
    sk.add_argument("--out", type=Path, default=SKELETON)
    ap.add_argument("--generated", type=Path, default=GENERATED, help="output root (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the stamp is current")
    args = ap.parse_args(argv)
    if args.cmd == "skeleton":
        package = args.package
        if package is None:
            from tools.parity.fixtures import tiny_package_dir

            package = tiny_package_dir()
        make_skeleton(package, args.out)
        print(f"demo skeleton: {args.out} (from {package})")
        return 0
    print(f"demo package: {demo_package_dir(generated=args.generated, force=args.force)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
