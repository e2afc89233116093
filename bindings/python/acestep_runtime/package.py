"""A model package, opened and checked by the core (``ace_package_open``; docs/io_contract.md).

The core reads ``manifest.json``, checks every listed file (inside the package, present, of the
listed size; sha256 with ``verify=True``), the component signatures, the package arrays and the
text tokenizer. This class is the host's view of it: where each graph file is, and the summary
``acestep-runtime info`` prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._native import AceError, NativeHandle, call_string, check, encode_str, ffi, lib, request_json


class PackageError(RuntimeError):
    """The model package is missing, incomplete, corrupted or of an unsupported version."""


class ModelPackage(NativeHandle):
    """An opened model package. Immutable; shared by every generation made from it."""

    _free_name = "ace_package_free"

    def __init__(self, path: str | Path, *, verify: bool = False):
        self.root = Path(path)
        out = ffi.new("AcePackage **")
        options = json.dumps({"verify_sha256": bool(verify)}).encode()
        try:
            check(lib.ace_package_open(encode_str(str(self.root), "path"), options, out))
        except AceError as exc:
            raise PackageError(exc.message) from None
        self._own(out[0])
        self.info = json.loads(call_string(lib.ace_package_info_json, self.ptr))

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = False) -> "ModelPackage":
        return cls(path, verify=verify)

    @property
    def kind(self) -> str:
        """"turbo", "base" or "sft"."""
        return self.info["model_kind"]

    @property
    def variant(self) -> str:
        return self.info.get("model_variant") or "unknown"

    @property
    def manifest_sha256(self) -> str:
        return self.info["manifest_sha256"]

    @property
    def sample_rate(self) -> int:
        return int(self.info["sample_rate"])

    def has(self, component: str) -> bool:
        return component in self.info["components"]

    def component_path(self, name: str) -> Path:
        try:
            return Path(self.info["components"][name]["path"])
        except KeyError:
            available = ", ".join(sorted(self.info["components"]))
            raise PackageError(f"model package {self.root} has no component {name!r} (it has: {available})") from None

    def component_files(self, name: str) -> list[Path]:
        """The graph file of ``name`` and its external data files, as the manifest lists them."""
        graph = self.component_path(name)
        if not hasattr(self, "_manifest"):
            self._manifest = json.loads((self.root / "manifest.json").read_text(encoding="utf-8"))
        entry = self._manifest.get("components", {}).get(name, {})
        return [graph] + [self.root / d["file"] for d in entry.get("external_data", [])]

    def summary(self) -> dict:
        """What `acestep-runtime info` prints."""
        return dict(self.info)

    def normalize(self, request: dict) -> tuple[dict, list[str]]:
        """The core's normalised form of ``request`` for this package, and its notes."""
        text = request_json(request)
        out = json.loads(call_string(lib.ace_request_normalize, self.ptr, encode_str(text, "request")))
        return out["request"], out["notes"]
