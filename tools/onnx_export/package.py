"""Model package: export every component into a directory and describe it in `manifest.json`.

The manifest is the contract between export and hosts (DESIGN.md "Model package", docs/io_contract.md):
hosts find every file through it. It records, per graph, the file, its sha256 and size, its external-data
files (with sha256), and input/output names, dtypes and symbolic shapes read from the ONNX file itself.

Crash safety: everything is written into a staging directory next to the target; `manifest.json` is
written last (temp file + rename) and the staging directory is renamed into place only when complete,
so an interrupted export never leaves a manifest that points at missing or partial files.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .common import DEFAULT_EXTERNAL_DATA_MIN_BYTES, DEFAULT_OPSET, CheckpointError, require_dir

FORMAT_VERSION = 1
MODEL_FAMILY = "ace-step-v1.5"
MANIFEST_FILE = "manifest.json"
PRECISION = "fp32"
SILENCE_FILE = "silence_latent.npy"
TEXT_TOKENIZER_DIR = "tokenizer/text"
LM_TOKENIZER_DIR = "tokenizer/lm"

# Files each checkpoint folder must hold (any one of each tuple), checked before anything is exported.
REQUIRED_FILES = {
    "text_encoder": [("config.json",), ("model.safetensors",), ("tokenizer.json",)],
    "vae": [("config.json",), ("diffusion_pytorch_model.safetensors",)],
    "acestep": [("config.json",), ("model.safetensors",), ("silence_latent.pt",)],
    "lm": [("config.json",), ("model.safetensors", "model.safetensors.index.json"), ("tokenizer.json",)],
}

_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


class PackageError(RuntimeError):
    """The output location or the exported files are not usable as a model package."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def file_entry(pkg_dir: Path, rel: str) -> dict:
    path = Path(pkg_dir) / rel
    if not path.is_file():
        raise PackageError(f"package file {rel} is missing from {pkg_dir}")
    return {"file": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _value_info(value) -> dict:
    tensor = value.type.tensor_type
    shape = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            shape.append(dim.dim_param)
        else:
            shape.append(None)
    return {"name": value.name, "dtype": _ONNX_DTYPES.get(tensor.elem_type, f"onnx:{tensor.elem_type}"),
            "shape": shape}


def describe_onnx(pkg_dir: Path, rel: str) -> dict:
    """Manifest entry for one graph: file, sha256, bytes, external data files, inputs, outputs."""
    import onnx

    pkg_dir = Path(pkg_dir)
    path = pkg_dir / rel
    model = onnx.load(str(path), load_external_data=False)
    locations: list[str] = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in locations:
                    locations.append(entry.value)
    external = []
    for loc in locations:
        ext_rel = (Path(rel).parent / loc).as_posix()
        if not (pkg_dir / ext_rel).is_file():
            raise PackageError(f"graph {rel} refers to external data {loc!r}, which is missing")
        external.append(file_entry(pkg_dir, ext_rel))
    entry = file_entry(pkg_dir, rel)
    entry.update(
        external_data=external,
        opset=max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        inputs=[_value_info(v) for v in model.graph.input],
        outputs=[_value_info(v) for v in model.graph.output],
    )
    return entry


def describe_components(pkg_dir: Path, files: dict[str, str]) -> tuple[dict[str, dict], set[str]]:
    """Manifest entries of the graphs in `files` (component → relative path), and every file they take
    (the graphs and their external data)."""
    components = {name: describe_onnx(pkg_dir, rel) for name, rel in files.items()}
    taken = {c["file"] for c in components.values()}
    taken |= {e["file"] for c in components.values() for e in c["external_data"]}
    return components, taken


def describe_tokenizer_dir(pkg_dir: Path, rel: str) -> dict:
    """Manifest entry of a tokenizer directory: its relative path and every file in it."""
    return {"dir": rel,
            "files": [file_entry(pkg_dir, (Path(rel) / p).as_posix()) for p in sorted(os.listdir(Path(pkg_dir) / rel))]}


def host_config(sections: dict[str, dict]) -> dict:
    """The manifest's `config`: each component's `*_host_config` under its own key, plain JSON types only.

    Values that two components must agree on are checked here (a package mixing checkpoints of
    different models fails now rather than in a host).
    """
    config = json.loads(json.dumps(sections))
    te, vae, ace = config.get("text_encoder"), config.get("vae"), config.get("acestep")
    checks = []
    if ace is not None:
        checks += [("acestep.text_hidden_dim", ace.get("text_hidden_dim"), "text_encoder.hidden_size",
                    te["hidden_size"]),
                   ("acestep.latent_dim", ace.get("latent_dim"), "vae.latent_channels", vae["latent_channels"]),
                   ("acestep.hop_length", ace.get("hop_length"), "vae.hop_length", vae["hop_length"]),
                   ("acestep.sample_rate", ace.get("sample_rate"), "vae.sample_rate", vae["sample_rate"])]
    for name_a, a, name_b, b in checks:
        if a is not None and a != b:
            raise PackageError(f"checkpoints do not fit together: {name_a} = {a} but {name_b} = {b}")
    return config


@contextlib.contextmanager
def staged_package_dir(out: Path) -> Iterator[Path]:
    """A fresh staging directory beside `out`, renamed into place (replacing an older `out`) when the
    block completes, deleted when it raises: a package directory is either whole or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        backup = None
        if out.exists():
            backup = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, backup)
        os.replace(staging, out)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json_atomic(path: Path, value: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("torch", "onnx", "onnxscript", "transformers", "diffusers", "safetensors", "numpy"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - optional libraries
            versions[name] = None
    return versions


RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def describe_extra_files(pkg_dir: Path, taken: set[str], known: dict[str, dict]) -> dict:
    """Manifest entries for every package file that is neither a graph, its external data, a tokenizer
    file nor the manifest: `known` (name -> {"file": ..., extra fields}) plus any other file an exporter
    wrote (e.g. `null_condition_emb.npy`), named by its stem. `.npy` entries get dtype and shape."""
    pkg_dir = Path(pkg_dir)
    entries: dict[str, dict] = {}
    by_file = {meta["file"]: name for name, meta in known.items()}
    for path in sorted(p for p in pkg_dir.iterdir() if p.is_file()):
        rel = path.name
        if rel in taken or rel == MANIFEST_FILE or rel.endswith(".tmp"):
            continue
        name = by_file.get(rel, path.stem)
        if name in entries:
            raise PackageError(f"two package files map to the manifest name {name!r}")
        entry = file_entry(pkg_dir, rel)
        if rel.endswith(".npy"):
            arr = np.load(path, mmap_mode="r")
            entry.update(dtype=str(arr.dtype), shape=[int(d) for d in arr.shape])
        entry.update({k: v for k, v in known.get(name, {}).items() if k != "file"})
        entries[name] = entry
    return entries


@dataclass
class ExportOptions:
    checkpoints: Path
    out: Path
    dit: str | None = "acestep-v15-turbo"
    lm: str | None = "acestep-5Hz-lm-0.6B"
    text_encoder: str = "Qwen3-Embedding-0.6B"
    vae: str = "vae"
    opset: int = DEFAULT_OPSET
    force: bool = False
    external_data_min_bytes: int = DEFAULT_EXTERNAL_DATA_MIN_BYTES
    log: Callable[[str], None] = field(default=print)


def _component_module(name: str, flag: str):
    try:
        return importlib.import_module(f"tools.onnx_export.{name}")
    except ImportError as exc:
        raise PackageError(f"the {name} exporter (tools/onnx_export/{name}) is not available in this checkout "
                           f"({exc}); pass {flag} none to export a package without it") from exc


def check_output_dir(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PackageError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PackageError(f"output directory {out} is not empty; pass --force to replace it")


def export_package(opts: ExportOptions, *, _after_component: Callable[[str, Path], None] | None = None) -> Path:
    """Export the model package described by `opts`; return the package directory.

    `_after_component(name, staging_dir)` is a test hook called after each component is written.
    """
    ckpt = require_dir(Path(opts.checkpoints), "checkpoints directory")
    out = Path(opts.out).absolute()
    check_output_dir(out, opts.force)
    dirs = {"text_encoder": opts.text_encoder, "vae": opts.vae}
    if opts.dit:
        dirs["acestep"] = opts.dit
    if opts.lm:
        dirs["lm"] = opts.lm
    if opts.opset != DEFAULT_OPSET:
        raise PackageError(f"--opset {opts.opset}: the exporters are pinned to opset {DEFAULT_OPSET}")
    missing = [f"{ckpt / d}" for d in dirs.values() if not (ckpt / d).is_dir()]
    if missing:
        raise CheckpointError("missing checkpoint component directories: " + ", ".join(missing))
    missing = [str(ckpt / dirs[comp] / alternatives[0]) for comp, needed in REQUIRED_FILES.items() if comp in dirs
               for alternatives in needed if not any((ckpt / dirs[comp] / f).is_file() for f in alternatives)]
    if missing:
        raise CheckpointError("missing checkpoint files: " + ", ".join(missing))
    modules = {"text_encoder": _component_module("text_encoder", "--text-encoder"),
               "vae": _component_module("vae", "--vae")}
    if opts.dit:
        modules["acestep"] = _component_module("acestep", "--dit")
    if opts.lm:
        modules["lm"] = _component_module("lm", "--lm")

    with staged_package_dir(out) as staging:
        files: dict[str, str] = {}
        host_parts: dict[str, dict] = {}
        extra: dict = {}
        tokenizers: dict = {}

        def done(name: str) -> None:
            if _after_component is not None:
                _after_component(name, staging)

        te = modules["text_encoder"]
        opts.log(f"text encoder: {ckpt / opts.text_encoder}")
        model = te.load_text_encoder(ckpt / opts.text_encoder)
        files.update(te.export_text_encoder_graphs(model, staging, opset=opts.opset,
                                                   external_data_min_bytes=opts.external_data_min_bytes))
        host_parts["text_encoder"] = te.text_encoder_host_config(model)
        te.copy_tokenizer_files(ckpt / opts.text_encoder, staging / TEXT_TOKENIZER_DIR)
        appends = te.tokenizer_appends_eos(staging / TEXT_TOKENIZER_DIR)
        host_parts["text_encoder"]["tokenizer_appends_eos"] = appends
        if not appends:
            opts.log("WARNING: the text tokenizer does not append <|endoftext|>; the official pipeline's does "
                     "(spec §1.3). Hosts must append 151643 themselves (manifest: tokenizer_appends_eos=false).")
        del model
        gc.collect()
        done("text_encoder")

        vae = modules["vae"]
        opts.log(f"VAE: {ckpt / opts.vae}")
        model = vae.load_vae(ckpt / opts.vae)
        files.update(vae.export_vae_graphs(model, staging, opset=opts.opset,
                                           external_data_min_bytes=opts.external_data_min_bytes))
        host_parts["vae"] = vae.vae_host_config(model)
        del model
        gc.collect()
        done("vae")

        if opts.dit:
            ace = modules["acestep"]
            opts.log(f"ACE-Step DiT: {ckpt / opts.dit}")
            model = ace.load_acestep_checkpoint(ckpt / opts.dit)
            files.update(ace.export_acestep_graphs(model, staging, opset=opts.opset))
            host_parts["acestep"] = ace.acestep_host_config(model)
            silence = model.silence_latent.detach().float().cpu().numpy().astype(np.float32)
            if silence.ndim != 3 or silence.shape[0] != 1:
                raise PackageError(f"silence latent has shape {list(silence.shape)}, expected [1, frames, channels]")
            if not np.isfinite(silence).all():
                raise PackageError("silence latent contains NaN/Inf")
            np.save(staging / SILENCE_FILE, np.ascontiguousarray(silence))
            extra["silence_latent"] = {"file": SILENCE_FILE, "layout": "[1, frames, latent_channels]"}
            del model
            gc.collect()
            done("acestep")

        if opts.lm:
            lm = modules["lm"]
            opts.log(f"5 Hz LM: {ckpt / opts.lm}")
            # The fused-operator graphs (docs/lm_graphs.md), written straight from the safetensors: no
            # torch model in memory, so the 1.7B LM exports within a few GB.
            lm_gqa = _component_module("lm_gqa", "--lm")
            files.update(lm_gqa.write_lm_graphs(ckpt / opts.lm, staging))
            host_parts["lm"] = lm.lm_host_config(lm.read_lm_config(ckpt / opts.lm))
            te.copy_tokenizer_files(ckpt / opts.lm, staging / LM_TOKENIZER_DIR)
            done("lm")

        for key, rel in (("text", TEXT_TOKENIZER_DIR), ("lm", LM_TOKENIZER_DIR)):
            if (staging / rel).is_dir():
                tokenizers[key] = describe_tokenizer_dir(staging, rel)

        opts.log("writing manifest")
        components, taken = describe_components(staging, files)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_family": MODEL_FAMILY,
            "model_variant": opts.dit,
            "checkpoints": {"text_encoder": opts.text_encoder, "vae": opts.vae, "dit": opts.dit, "lm": opts.lm},
            "precision": PRECISION,
            # Test checkpoints (make_tiny, make_full_size) carry a marker; hosts say so to the user.
            "random_weights": (ckpt / RANDOM_WEIGHTS_MARKER).is_file(),
            "opset": opts.opset,
            "exporter": {
                "name": "tools.onnx_export",
                "onnx_exporter": "torch.onnx.export(dynamo=True)",
                "git_commit": _git_commit(),
                "versions": library_versions(),
            },
            "components": components,
            "files": describe_extra_files(staging, taken, extra),
            "tokenizers": tokenizers,
            "config": host_config(host_parts),
        }
        write_json_atomic(staging / MANIFEST_FILE, manifest)  # last file written
    return out


def verify_package(pkg_dir: Path) -> dict:
    """Load `manifest.json` and check every listed file's size and sha256; return the manifest."""
    pkg_dir = Path(pkg_dir)
    manifest_path = pkg_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise PackageError(f"{pkg_dir} has no {MANIFEST_FILE}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entries = []
    for comp in manifest["components"].values():
        entries.append(comp)
        entries.extend(comp["external_data"])
    entries.extend(manifest["files"].values())
    for tok in manifest["tokenizers"].values():
        entries.extend(tok["files"])
    for entry in entries:
        path = pkg_dir / entry["file"]
        if not path.is_file():
            raise PackageError(f"manifest lists {entry['file']}, which is missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise PackageError(f"{entry['file']} does not match its manifest size/sha256")
    return manifest
