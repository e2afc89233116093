"""acestep-runtime: ACE-Step 1.5 music generation without PyTorch.

The numeric core (noise, schedules, solvers, guidance, LM logic) lives in the Rust library
``acestep_runtime``; this package loads it with cffi and wraps it for numpy.
"""

from ._native import AceError, abi_version, library_path, version

__all__ = ["AceError", "abi_version", "library_path", "version"]
