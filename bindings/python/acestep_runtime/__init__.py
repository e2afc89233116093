"""acestep-runtime: ACE-Step 1.5 music generation without PyTorch.

    >>> import acestep_runtime
    >>> result = acestep_runtime.generate("lofi hip hop, mellow piano", duration=12, seed=42)  # doctest: +SKIP
    >>> result.save("out/")                                                                     # doctest: +SKIP

The core (noise, schedules, solvers, guidance, LM logic, the request schema and the generation
driver) lives in the Rust library ``acestep_runtime``; this package loads it with cffi and runs the
graphs it asks for on ONNX Runtime. See docs/python_api.md.
"""

from ._native import AceError, abi_version, library_path, version
from .api import default_model, generate

__version__ = "0.1.0"
__all__ = ["AceError", "abi_version", "default_model", "generate", "library_path", "version", "__version__"]
