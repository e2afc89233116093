"""acestep-runtime: ACE-Step 1.5 music generation without PyTorch.

The core (noise, schedules, solvers, guidance, LM logic, the request schema and the generation
driver) lives in the Rust library ``acestep_runtime``; this package loads it with cffi and runs
the graphs it asks for on ONNX Runtime.
"""

from ._native import AceError, abi_version, library_path, version

__version__ = "0.1.0"
__all__ = ["AceError", "abi_version", "library_path", "version", "__version__"]
