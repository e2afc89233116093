"""Session fixtures for the exporter tests: tiny checkpoints in the official layout and ONE exported
model package, built once per pytest session in a temp dir (export takes tens of seconds on 2 cores).

Components whose exporter is not in this checkout (the ACE-Step DiT side, tools/onnx_export/acestep,
and the LM, tools/onnx_export/lm.py) are left out of the package; tests that need them are skipped
with a reason that says so (`requires_acestep` / `requires_lm`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

SEED = 0
DIT = "acestep-v15-turbo"
LM = "acestep-5Hz-lm-0.6B"
# Low threshold so that the tiny package exercises both layouts: graphs with weights ≥ 8 MiB (text
# encoder, lyric embedding, VAE encoder) use external data, the small VAE decoder stays inline.
EXTERNAL_DATA_MIN_BYTES = 8 * 2**20


def _available(module: str, *attrs: str) -> bool:
    try:
        mod = importlib.import_module(module)
        for attr in attrs:
            getattr(mod, attr)
    except (ImportError, AttributeError):
        return False
    return True


ACESTEP_AVAILABLE = _available("tools.onnx_export.acestep", "write_tiny_acestep", "load_acestep_checkpoint",
                               "export_acestep_graphs", "acestep_host_config")
LM_AVAILABLE = _available("tools.onnx_export.lm", "write_tiny_lm", "load_lm_checkpoint", "export_lm_graphs",
                          "lm_host_config")

requires_acestep = pytest.mark.skipif(
    not ACESTEP_AVAILABLE, reason="ACE-Step DiT exporter (tools/onnx_export/acestep, branch h-exmod) not in this checkout")
requires_lm = pytest.mark.skipif(
    not LM_AVAILABLE, reason="LM exporter (tools/onnx_export/lm.py, branch h-exlm) not in this checkout")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Path:
    """Tiny random-weight checkpoints (seed 0) in the official layout: DIR/{vae,Qwen3-Embedding-0.6B,...}."""
    from tools.onnx_export.make_tiny import write_tiny_checkpoints

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    write_tiny_checkpoints(root, SEED, dit=DIT if ACESTEP_AVAILABLE else None, lm=LM if LM_AVAILABLE else None)
    return root


@pytest.fixture(scope="session")
def tiny_package(tiny_checkpoints, tmp_path_factory) -> Path:
    """The model package exported from `tiny_checkpoints` with the real CLI code path."""
    from tools.onnx_export.package import ExportOptions, export_package

    out = tmp_path_factory.mktemp("tiny_package") / "pkg"
    opts = ExportOptions(checkpoints=tiny_checkpoints, out=out, dit=DIT if ACESTEP_AVAILABLE else None,
                         lm=LM if LM_AVAILABLE else None, external_data_min_bytes=EXTERNAL_DATA_MIN_BYTES,
                         log=lambda _msg: None)
    return export_package(opts)


@pytest.fixture(scope="session")
def manifest(tiny_package) -> dict:
    import json

    return json.loads((tiny_package / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def ort_session():
    """ort_session(path, fused_ops=False) -> cached onnxruntime CPU InferenceSession; ``fused_ops``
    registers the core library's custom ops, as the hosts do (else ai.acestep functions run inlined)."""
    import onnxruntime as ort

    cache: dict[tuple, object] = {}

    def get(path: Path, fused_ops: bool = False):
        key = (str(path), fused_ops)
        if key not in cache:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            if fused_ops:
                from acestep_runtime.ort_ops import ops_library_path

                opts.register_custom_ops_library(str(ops_library_path()))
            cache[key] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return cache[key]

    return get
