"""The core library's ONNX Runtime custom ops: the domain ``ai.acestep`` (today one op, ``Snake``, the
VAE activation fused into one pass; runtime_rust_dll/src/ffi/ort_ops.rs).

The core library exports ``RegisterCustomOps``, so the library the binding already loaded is also the
ops library ONNX Runtime is pointed at. Packages declare ``ai.acestep.Snake`` as a model-local function
whose body is the plain five-op form: a session without the registration (the CUDA provider, another
runtime) runs that body and computes what graphs without the op did.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

from ._native import library_path

log = logging.getLogger(__name__)

DOMAIN = "ai.acestep"

_first_session = threading.Lock()
_domain_known = False


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


@contextlib.contextmanager
def first_session_alone():
    """Wrap the creation of a session whose options have the ops registered. ONNX Runtime adds a custom
    domain to a process-wide table when the first such session is created, with a check-then-add that
    two sessions created at once can race ("the domain is already exist"; seen with the hosts' parallel
    session loading). So that first session is created alone; once it exists, sessions load in parallel."""
    global _domain_known
    if _domain_known:
        yield
        return
    with _first_session:
        yield
        _domain_known = True
