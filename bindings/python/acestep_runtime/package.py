"""A model package on disk, read through its ``manifest.json`` (see docs/io_contract.md).

Hosts find every file through the manifest; nothing is found by guessing names. Opening a package
checks that every listed file exists; ``verify=True`` also checks every file's sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

MANIFEST_FILE = "manifest.json"
SUPPORTED_FORMAT_VERSION = 1


class PackageError(RuntimeError):
    """The model package is missing, incomplete, corrupted or of an unsupported version."""


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ModelPackage:
    """Read-only view of an exported model package directory."""

    def __init__(self, root: Path, manifest: dict, manifest_sha256: str):
        self.root = root
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = False) -> "ModelPackage":
        root = Path(path)
        manifest_path = root / MANIFEST_FILE
        if not root.is_dir():
            raise PackageError(f"model package not found: {root} is not a directory")
        if not manifest_path.is_file():
            raise PackageError(
                f"{root} is not a model package: {MANIFEST_FILE} is missing "
                "(export one with `python -m tools.onnx_export --checkpoints DIR --out PKG`)"
            )
        raw = manifest_path.read_bytes()
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PackageError(f"{manifest_path} is not valid JSON: {exc}") from None
        version = manifest.get("format_version")
        if version != SUPPORTED_FORMAT_VERSION:
            raise PackageError(
                f"{manifest_path}: format_version {version!r} is not supported "
                f"(this host reads version {SUPPORTED_FORMAT_VERSION})"
            )
        package = cls(root, manifest, hashlib.sha256(raw).hexdigest())
        package._check_files(verify)
        return package

    # -- what the manifest lists ------------------------------------------------------------

    def _file_entries(self):
        """Every (relative path, sha256, bytes) the manifest promises."""
        for name, comp in self.manifest.get("components", {}).items():
            yield comp["file"], comp.get("sha256"), comp.get("bytes")
            for extra in comp.get("external_data", []):
                yield extra["file"], extra.get("sha256"), extra.get("bytes")
        for entry in self.manifest.get("files", {}).values():
            yield entry["file"], entry.get("sha256"), entry.get("bytes")
        for tok in self.manifest.get("tokenizers", {}).values():
            for entry in tok.get("files", []):
                yield entry["file"], entry.get("sha256"), entry.get("bytes")

    def _check_files(self, verify: bool) -> None:
        seen = set()
        for rel, sha, size in self._file_entries():
            if rel in seen:
                continue
            seen.add(rel)
            path = self.root / rel
            if not path.is_file():
                raise PackageError(f"model package {self.root} is incomplete: {rel} is missing")
            if size is not None and path.stat().st_size != size:
                raise PackageError(
                    f"{path}: size {path.stat().st_size} differs from the manifest's {size} bytes "
                    "(corrupted or partially copied package)"
                )
            if verify and sha is not None:
                actual = _sha256(path)
                if actual != sha:
                    raise PackageError(
                        f"{path}: sha256 {actual} does not match the manifest's {sha} (corrupted file)"
                    )

    @property
    def variant(self) -> str:
        return self.manifest.get("model_variant", "unknown")

    @property
    def config(self) -> dict:
        return self.manifest.get("config", {})

    def has(self, component: str) -> bool:
        return component in self.manifest.get("components", {})

    def component(self, name: str) -> dict:
        try:
            return self.manifest["components"][name]
        except KeyError:
            available = ", ".join(sorted(self.manifest.get("components", {})))
            raise PackageError(f"model package {self.root} has no component {name!r} (it has: {available})") from None

    def component_path(self, name: str) -> Path:
        return self.root / self.component(name)["file"]

    def array(self, name: str) -> np.ndarray:
        """A float array listed under ``files`` (e.g. ``silence_latent``), memory-mapped."""
        try:
            entry = self.manifest["files"][name]
        except KeyError:
            raise PackageError(f"model package {self.root} lists no file {name!r}") from None
        array = np.load(self.root / entry["file"], mmap_mode="r")
        expected = entry.get("shape")
        if expected is not None and list(array.shape) != list(expected):
            raise PackageError(f"{entry['file']}: shape {list(array.shape)} differs from the manifest's {expected}")
        return array

    def tokenizer_path(self, which: str) -> Path:
        """Path of the ``tokenizer.json`` of tokenizer ``which`` ("text" or "lm")."""
        try:
            directory = self.manifest["tokenizers"][which]["dir"]
        except KeyError:
            raise PackageError(f"model package {self.root} has no {which!r} tokenizer") from None
        return self.root / directory / "tokenizer.json"

    def model_kind(self) -> str:
        """"turbo", "base" or "sft", from the DiT config in the manifest."""
        acestep = self.config.get("acestep", {})
        if acestep.get("is_turbo"):
            return "turbo"
        variant = self.variant.lower()
        return "sft" if "sft" in variant else ("turbo" if "turbo" in variant else "base")

    def summary(self) -> dict:
        """What `acestep-runtime info` prints."""
        comps = self.manifest.get("components", {})
        total = sum(c.get("bytes", 0) + sum(e.get("bytes", 0) for e in c.get("external_data", [])) for c in comps.values())
        return {
            "path": str(self.root),
            "model_family": self.manifest.get("model_family"),
            "model_variant": self.variant,
            "model_kind": self.model_kind(),
            "precision": self.manifest.get("precision"),
            "opset": self.manifest.get("opset"),
            "components": {
                name: {
                    "file": c["file"],
                    "bytes": c.get("bytes"),
                    "inputs": [f"{i['name']}:{i['dtype']}{i['shape']}" for i in c.get("inputs", [])],
                    "outputs": [f"{o['name']}:{o['dtype']}{o['shape']}" for o in c.get("outputs", [])],
                }
                for name, c in comps.items()
            },
            "total_bytes": total,
            "exporter": self.manifest.get("exporter", {}),
            "manifest_sha256": self.manifest_sha256,
        }
