"""The core library's ONNX Runtime custom ops: the domain ``ai.acestep`` (today one op, ``Snake``, the
VAE activation fused into one pass; runtime_rust_dll/src/ffi/ort_ops.rs).

The core library exports ``RegisterCustomOps``, so the library the binding already loaded is also the
ops library ONNX Runtime is pointed at. Packages declare ``ai.acestep.Snake`` as a model-local function
whose body is the plain five-op form: a session without the registration (the CUDA provider, another
runtime) runs that body and computes what graphs without the op did.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ._native import library_path

log = logging.getLogger(__name__)

DOMAIN = "ai.acestep"


def ops_library_path() -> Path:
    """The library to register: the loaded core library."""
    return library_path()


def register(opts) -> bool:
    """Registers the ops on ``opts`` (an ``onnxruntime.SessionOptions``); False, with a warning, when
    this onnxruntime refuses them (older than 1.17), in which case the graphs run their function bodies."""
    try:
        opts.register_custom_ops_library(str(ops_library_path()))
    except Exception as exc:  # onnxruntime raises its own exception types
        log.warning("the core's fused ONNX Runtime kernels (%s) are not available: %s; the graphs run unfused",
                    DOMAIN, exc)
        return False
    return True
