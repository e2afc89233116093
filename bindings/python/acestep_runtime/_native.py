"""Loads the core library with cffi (ABI mode) and turns its status codes into exceptions.

The C declarations come from the generated header itself, so the binding cannot drift from the
library. Search order for the library (and the header beside it):

1. ``ACESTEP_RUNTIME_LIB`` (path to the shared library); the header is taken from
   ``ACESTEP_RUNTIME_HEADER`` or from the library's directory;
2. this package's ``_native/`` directory: the library a wheel (or ``pip install -e``) compiled into
   the package, ``acestep_runtime.abi3.so`` (``.pyd`` on Windows), else the one
   ``scripts/build_core.sh`` copied there under its cargo name. ``build_core.sh`` removes the
   former so that the latest build is the one loaded.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cffi

# Cargo's names, as scripts/build_core.sh copies them.
_LIB_NAMES = {
    "linux": "libacestep_runtime.so",
    "darwin": "libacestep_runtime.dylib",
    "win32": "acestep_runtime.dll",
}
# The names setuptools-rust gives the library inside a wheel (bindings/python/setup.py).
_WHEEL_LIB_NAMES = {"win32": "acestep_runtime.pyd"}
_HEADER_NAME = "acestep_runtime.h"
_PACKAGE_DIR = Path(__file__).resolve().parent


class AceError(Exception):
    """A call into the core failed. ``status`` is the AceStatus code, ``name`` its short name."""

    def __init__(self, status: int, name: str, message: str):
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} [{self.name}]"


def _lib_name() -> str:
    return _LIB_NAMES.get(sys.platform, _LIB_NAMES["linux"])


def _candidates() -> list[tuple[Path, Path]]:
    """(library, header) pairs in search order."""
    env_lib = os.environ.get("ACESTEP_RUNTIME_LIB")
    if env_lib:
        lib = Path(env_lib)
        header = Path(os.environ.get("ACESTEP_RUNTIME_HEADER", lib.parent / _HEADER_NAME))
        return [(lib, header)]
    native = _PACKAGE_DIR / "_native"
    wheel_name = _WHEEL_LIB_NAMES.get(sys.platform, "acestep_runtime.abi3.so")
    return [(native / wheel_name, native / _HEADER_NAME), (native / _lib_name(), native / _HEADER_NAME)]


def _cdef_from_header(text: str) -> str:
    """Turns the header into cffi declarations: keeps what a C11 compiler would see.

    The header's conditionals are only its include guard (``#ifndef``, taken), C++ guards
    (``#ifdef __cplusplus``, not taken) and C23 enum-base guards (``#if ... 202311L``, not taken).
    """
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    taken = [True]
    kept = []
    for line in text.splitlines():
        directive = line.strip()
        if directive.startswith("#ifndef"):
            taken.append(taken[-1])
        elif directive.startswith(("#ifdef", "#if")):
            taken.append(False)
        elif directive.startswith("#else"):
            taken[-1] = (not taken[-1]) and taken[-2]
        elif directive.startswith("#endif"):
            taken.pop()
        elif directive.startswith("#define ACE_") and taken[-1]:
            kept.append(line)
        elif not directive.startswith("#") and taken[-1]:
            kept.append(line)
    return "\n".join(kept)


def _load():
    tried = []
    for lib_path, header_path in _candidates():
        if lib_path.is_file() and header_path.is_file():
            ffi = cffi.FFI()
            header = header_path.read_text(encoding="utf-8")
            ffi.cdef(_cdef_from_header(header))
            lib = ffi.dlopen(str(lib_path))
            return ffi, lib, lib_path, header
        tried.append(f"{lib_path} (+ {header_path.name})")
    raise OSError(
        "acestep_runtime core library not found. Install the package from a wheel, or in a source "
        "checkout build it with scripts/build_core.sh (or pip install -e bindings/python), or set "
        "ACESTEP_RUNTIME_LIB to the library's path. Looked in:\n  " + "\n  ".join(tried)
    )


ffi, lib, _lib_path, _header_text = _load()

_expected_abi = int(re.search(r"#define\s+ACE_ABI_VERSION\s+(\d+)", _header_text).group(1))
if lib.ace_abi_version() != _expected_abi:
    raise OSError(
        f"{_lib_path} implements ABI v{lib.ace_abi_version()}, but its header says v{_expected_abi}"
    )


def library_path() -> Path:
    return _lib_path


def abi_version() -> int:
    return int(lib.ace_abi_version())


def cstr(text: str, name: str) -> bytes:
    """The UTF-8 bytes of a ``str`` argument passed as a NUL-terminated C string. C would end the
    string at an embedded NUL and silently ignore the rest, so a NUL is an error here."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    at = text.find("\0")
    if at >= 0:
        raise ValueError(f"{name} contains a NUL character at index {at}; the core takes NUL-terminated strings")
    return text.encode("utf-8")


def take_string(ptr) -> str:
    """Copies a library-owned string and frees it."""
    try:
        return ffi.string(ptr).decode("utf-8")
    finally:
        lib.ace_string_free(ptr)


def last_error() -> tuple[int, str, str]:
    """(code, name, message) of this thread's last error."""
    import json

    out = ffi.new("char **")
    if lib.ace_last_error_json(out) != 0:
        return (-1, "unknown", "could not read the last error")
    data = json.loads(take_string(out[0]))
    return data["code"], data["name"], data["message"]


def check(status: int) -> None:
    """Raises AceError if a call returned a non-zero status."""
    if status != 0:
        code, name, message = last_error()
        if code != status:  # should not happen; keep the status the call returned
            code, name = status, f"status_{status}"
        raise AceError(code, name, message)


def call_string(fn, *args) -> str:
    """Calls ``fn(*args, char **out)`` and returns the string it produced."""
    out = ffi.new("char **")
    check(fn(*args, out))
    return take_string(out[0])


class NativeHandle:
    """Owns one core object. It is freed by ``close()``, by leaving a ``with`` block, or, as a safety
    net, when garbage-collected; whichever comes first frees it exactly once.

    Subclasses name their destructor in ``_free_name`` and call ``_own(ptr)`` after creating the object.
    """

    _free_name: str = ""
    _ptr = None

    def _own(self, ptr) -> None:
        self._ptr = ffi.gc(ptr, getattr(lib, self._free_name))

    @property
    def ptr(self):
        """The live handle; ValueError once closed."""
        if self._ptr is None:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            ffi.release(ptr)  # runs the destructor now and detaches the GC one

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def version() -> str:
    return call_string(lib.ace_version_string)


def encode_str(text: str, name: str) -> bytes:
    """UTF-8 bytes for a C string argument; an embedded NUL would silently cut it, so it is refused."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if "\x00" in text:
        raise ValueError(f"{name} contains a NUL character")
    return text.encode("utf-8")


def request_json(request: dict) -> str:
    """A request dict as JSON for the core. NaN and infinities are not JSON: refused here, by key."""
    import json
    import math

    if not isinstance(request, dict):
        raise TypeError(f"a request is a dict, got {type(request).__name__}")
    for key, value in request.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"request.{key}: must be a finite number, got {value!r}")
    return json.dumps(request, ensure_ascii=False)
