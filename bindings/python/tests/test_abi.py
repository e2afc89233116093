"""ABI basics: versions, the last-error channel, exported symbols, header freshness of the copy."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from acestep_runtime import _native
from acestep_runtime._native import ffi, lib

REPO = Path(__file__).resolve().parents[3]


def test_versions_match_the_crate_and_header():
    cargo = (REPO / "runtime_rust_dll" / "Cargo.toml").read_text()
    crate_version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert _native.version() == crate_version
    header = (REPO / "include" / "acestep_runtime.h").read_text()
    assert _native.abi_version() == int(re.search(r"#define ACE_ABI_VERSION (\d+)", header).group(1))


def test_last_error_is_empty_after_success():
    _native.version()
    code, name, message = _native.last_error()
    assert (code, name, message) == (0, "ok", "")


def test_null_out_pointer_is_reported_not_crashing():
    status = lib.ace_version_string(ffi.NULL)
    assert status == lib.ACE_STATUS_NULL_POINTER
    code, name, message = _native.last_error()
    assert code == status and name == "null_pointer"
    assert "out is null" in message
    # the plain-text and JSON forms agree
    out = ffi.new("char **")
    assert lib.ace_last_error(out) == 0
    assert _native.take_string(out[0]) == message
    out = ffi.new("char **")
    assert lib.ace_last_error_json(out) == 0
    assert json.loads(_native.take_string(out[0]))["message"] == message


def test_error_getters_reject_null_without_crashing():
    assert lib.ace_last_error(ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    assert lib.ace_last_error_json(ffi.NULL) == lib.ACE_STATUS_NULL_POINTER
    lib.ace_string_free(ffi.NULL)  # documented no-op


def test_check_raises_with_the_library_message():
    with pytest.raises(_native.AceError) as info:
        _native.check(lib.ace_version_string(ffi.NULL))
    assert info.value.name == "null_pointer"
    assert "out is null" in str(info.value)


@pytest.mark.skipif(shutil.which("nm") is None, reason="binutils nm not installed")
def test_library_exports_only_ace_symbols():
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(_native.library_path())],
        check=True, capture_output=True, text=True,
    ).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    functions = [n for n in names if not n.startswith("_")]  # skip _init/_fini-style linker symbols
    assert functions, "no exported symbols found"
    # The one exception: ONNX Runtime's custom-op entry point, a name ORT looks up (docs/dll_api.md).
    foreign = [n for n in functions if not n.startswith("ace_") and n != "RegisterCustomOps"]
    assert not foreign, f"non-ace_ symbols exported: {foreign[:10]}"
    assert "RegisterCustomOps" in functions
    assert {"ace_abi_version", "ace_version_string", "ace_last_error", "ace_string_free"} <= set(functions)


def test_native_handles_free_once_and_refuse_use_after_close():
    from acestep_runtime.guidance import Apg

    apg = Apg()
    with apg as same:
        assert same is apg and apg.calls == 0
    apg.close()  # a second close is a no-op
    with pytest.raises(ValueError, match="Apg is closed"):
        apg.reset()


def test_every_exported_function_is_documented():
    header = (REPO / "include" / "acestep_runtime.h").read_text()
    docs = (REPO / "docs" / "dll_api.md").read_text()
    functions = sorted(set(re.findall(r"\b(ace_[a-z0-9_]+)\(", header)))
    assert len(functions) > 50
    missing = [f for f in functions if f not in docs]
    assert not missing, f"not in docs/dll_api.md: {missing}"
